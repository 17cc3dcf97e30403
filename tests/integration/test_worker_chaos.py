"""The worker loop under fire: SIGKILL mid-stream loses nothing, SIGTERM leaves nothing behind."""

from __future__ import annotations

import signal

import pytest

from pipeline import bus
from tests.support.bus_harness import (
    BAD_VALUES,
    TopicReader,
    kill_run,
    produce,
    start_worker,
)

pytestmark = pytest.mark.integration


def test_sigkill_three_times_loses_nothing(kafka, make_topic):
    a, b = make_topic("a", partitions=6), make_topic("b", partitions=6)
    run = kill_run(kafka, a, b, n=10_000, kills=3)
    print(
        f"\n10,000 messages, {run.kills} SIGKILLs: lost {len(run.lost)}, "
        f"duplicates on the wire {run.duplicates} ({run.dup_ratio:.2%})"
    )
    assert run.kills == 3
    assert run.lost == []
    # Every bad value is in the DLQ with the reason the loop gave, and the good ones still flowed.
    assert run.dlq_reasons == {key: reason for key, (_value, reason) in BAD_VALUES.items()}


def test_sigterm_commits_everything_it_produced(kafka, make_topic):
    a, b = make_topic("a", partitions=4), make_topic("b", partitions=4)
    group = f"{a}-workers"
    n = 3_000
    positions = produce(kafka, a, n)
    out = TopicReader(kafka, b)
    worker = start_worker(kafka, a, b, group, delay_s=0.002)
    try:
        assert out.read_until(lambda r: len(r.records) >= n // 3, 60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    out.read_until(lambda r: False, 1.0)  # whatever was still in flight
    offsets = {tp.partition: o for tp, o in bus.committed(kafka, group).items()}
    produced = set(out.keys())
    assert n // 3 <= len(produced) < n, "SIGTERM should land mid-stream"
    # Everything that reached B is committed, and nothing committed is missing from B.
    for key, (partition, offset) in positions.items():
        assert (key in produced) == (offset < offsets.get(partition, 0)), key

    # A restart carries on from the commit: every item exactly once in all.
    worker = start_worker(kafka, a, b, group)
    try:
        assert out.read_until(lambda r: len(r.keys()) >= n, 60)
        out.read_until(lambda r: False, 1.0)
    finally:
        worker.terminate()
        worker.wait(20)
        out.close()
    keys = out.keys()
    assert set(keys) == {str(i) for i in range(n)}
    assert max(keys.values()) == 1, "a clean stop must not cause duplicates"
