"""The supervisor: restarts crashed replicas with backoff, stops everything, owns a broker."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import bus, topics
from pipeline.embedded import ServiceSpec, StackState, Supervisor, pid_alive
from pipeline.settings import KafkaSettings

pytestmark = pytest.mark.integration

SLEEPER = ServiceSpec("sleeper", (sys.executable, "-c", "import time; time.sleep(600)"))
CRASHER = ServiceSpec("crasher", (sys.executable, "-c", "raise SystemExit(3)"))


def state(home: Path) -> dict:
    return json.loads(StackState.path(home).read_text())


def pids(sup: Supervisor) -> dict[str, int | None]:
    return {r.name: r.process.pid if r.process else None for r in sup.replicas}


@pytest.fixture
def supervised(tmp_path, broker) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path, [SLEEPER, CRASHER], broker.bootstrap)
    sup.start()
    try:
        yield sup
    finally:
        sup.stop()


def test_crashing_replica_restarts_with_growing_backoff(supervised):
    sleeper_pid = pids(supervised)["sleeper-0"]
    spawned = [time.monotonic()]  # when each crasher process was seen starting
    seen = {pids(supervised)["crasher-0"]}
    deadline = time.monotonic() + 20
    while len(spawned) < 4 and time.monotonic() < deadline:
        supervised.tick()
        pid = pids(supervised)["crasher-0"]
        if pid is not None and pid not in seen:
            seen.add(pid)
            spawned.append(time.monotonic())
        time.sleep(0.01)
    assert len(spawned) == 4, f"crasher started {len(spawned)} times in 20 s"
    gaps = [b - a for a, b in zip(spawned, spawned[1:], strict=False)]
    # Backoff 0.5 s, 1 s, 2 s (plus the time the process took to die): each gap at least its
    # delay, and every gap longer than the one before.
    assert all(gap >= 0.5 * 2**i for i, gap in enumerate(gaps)), gaps
    assert gaps == sorted(gaps), gaps

    services = state(supervised.home)["services"]
    assert 3 <= services["crasher-0"]["restarts"] <= 4
    sleeper = services["sleeper-0"]
    assert sleeper["metrics"].startswith("http://127.0.0.1:")
    assert {k: v for k, v in sleeper.items() if k != "metrics"} == {
        "pid": sleeper_pid,
        "restarts": 0,
        "log": str(supervised.logs / "sleeper-0.log"),
    }
    assert pids(supervised)["sleeper-0"] == sleeper_pid and pid_alive(sleeper_pid)


def test_state_file_names_each_replicas_pid(supervised):
    saved = state(supervised.home)
    assert saved["ready"] is True
    assert saved["bootstrap"] == supervised.bootstrap
    assert saved["embedded_broker"] is False
    assert {name: info["pid"] for name, info in saved["services"].items()} == pids(supervised)


def test_stop_terminates_every_replica_and_removes_the_state_file(tmp_path, broker):
    sup = Supervisor(tmp_path, [ServiceSpec("sleeper", SLEEPER.argv, replicas=2)], broker.bootstrap)
    sup.start()
    try:
        children = list(pids(sup).values())
        assert len(children) == 2 and all(pid and pid_alive(pid) for pid in children)
        assert StackState.path(tmp_path).exists()
    finally:
        sup.stop()
    assert not any(pid_alive(pid) for pid in children)
    assert not StackState.path(tmp_path).exists()
    # The broker was not ours to stop.
    bus.wait_until_reachable(KafkaSettings(bootstrap_servers=broker.bootstrap), timeout_s=5)


def test_without_bootstrap_it_runs_its_own_broker_with_every_topic(tmp_path):
    sup = Supervisor(tmp_path, [], bootstrap=None)
    assert sup.broker is not None
    sup.start()
    try:
        assert sup.bootstrap == sup.broker.bootstrap
        assert state(tmp_path)["embedded_broker"] is True
        reader = bus.consumer(KafkaSettings(bootstrap_servers=sup.bootstrap), group_id=None)
        try:
            counts = {name: len(bus.partitions_of(reader, name)) for name in topics.all_topics()}
        finally:
            reader.close()
        assert counts == topics.all_topics()
    finally:
        sup.stop()
    assert sup.broker.process is not None and sup.broker.process.poll() is not None
    assert not StackState.path(tmp_path).exists()
