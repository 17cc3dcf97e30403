"""Drive the pass-through service through the real worker loop: shared by tests and benchmarks.

Produces Items to a topic, runs worker subprocesses (killing them as told), and reads back
what arrived downstream and in the DLQ.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import bus
from pipeline.messages import DlqRecord, decode, encode
from pipeline.settings import KafkaSettings
from tests.support.passthrough import Item

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Values that must end in the DLQ, with the reason the worker must give.
BAD_VALUES: dict[str, tuple[bytes, str]] = {
    "bad-not-json": (b"\x00\xffnot json at all", "not_json"),
    "bad-truncated": (b'{"schema": "item/1", "id": "x', "not_json"),
    "bad-schema": (b'{"schema": "item/9", "id": "x"}', "wrong_schema"),
    "bad-no-schema": (b'{"id": "x"}', "wrong_schema"),
    "bad-field": (b'{"schema": "item/1", "id": 5}', "invalid"),
    "bad-array": (b"[1, 2, 3]", "invalid"),
    "bad-poison": (encode(Item(id="p", payload="poison")), "poison"),
}


def produce(
    settings: KafkaSettings, topic: str, n: int, payload_bytes: int = 1024, bad_every: int = 0
) -> dict[str, tuple[int, int]]:
    """Produce items "0".."n-1", and the BAD_VALUES spread every `bad_every`.

    Returns key -> (partition, offset) of everything sent.
    """
    producer = bus.producer(settings)
    payload = "x" * max(0, payload_bytes - 60)  # ~payload_bytes of JSON per value
    futures = {}
    bad = iter(BAD_VALUES.items())
    for i in range(n):
        futures[str(i)] = producer.send(
            topic, key=str(i).encode(), value=encode(Item(id=str(i), payload=payload))
        )
        if bad_every and i % bad_every == bad_every // 2:
            entry = next(bad, None)
            if entry:
                key, (value, _reason) = entry
                futures[key] = producer.send(topic, key=key.encode(), value=value)
    producer.flush()
    producer.close()
    return {k: (f.get().partition, f.get().offset) for k, f in futures.items()}


def start_worker(
    settings: KafkaSettings,
    in_topic: str,
    out_topic: str,
    group: str,
    delay_s: float = 0.0,
    mode: str = "sync",
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PASSTHROUGH_INPUT_TOPIC": in_topic,
        "PASSTHROUGH_OUTPUT_TOPIC": out_topic,
        "PASSTHROUGH_GROUP_ID": group,
        "PASSTHROUGH_DELAY_S": str(delay_s),
        "PASSTHROUGH_MODE": mode,
        "PASSTHROUGH_LOG_LEVEL": "WARNING",
    }
    out = open(log, "ab") if log else subprocess.DEVNULL  # handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.passthrough"],
        env=env,
        cwd=REPO_ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


class TopicReader:
    """Reads a whole topic from the beginning, incrementally, with no consumer group."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.settings = settings
        self.consumer = bus.consumer(settings, group_id=None)
        self.consumer.assign(bus.partitions_of(self.consumer, topic))
        self.consumer.seek_to_beginning()
        self.records: list = []

    def read(self, timeout_ms: int = 200) -> int:
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            self.records.extend(records)
        return len(self.records)

    def read_until(self, predicate, timeout_s: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.read()
            if predicate(self):
                return True
        return False

    def read_to_end(self, timeout_s: float = 30.0) -> bool:
        """Read everything the topic holds now."""
        probe = bus.consumer(self.settings, group_id=None)
        try:
            ends = bus.end_offsets(probe, self.consumer.assignment())
        finally:
            probe.close()
        return self.read_until(
            lambda r: all(r.consumer.position(tp) >= end for tp, end in ends.items()), timeout_s
        )

    def keys(self) -> Counter[str]:
        return Counter(r.key.decode() for r in self.records)

    def close(self) -> None:
        self.consumer.close()


@dataclass
class KillRun:
    sent: int
    lost: list[str]
    duplicates: int
    kills: int
    dlq_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def dup_ratio(self) -> float:
        return self.duplicates / self.sent


def kill_run(
    settings: KafkaSettings,
    in_topic: str,
    out_topic: str,
    n: int = 10_000,
    kills: int = 3,
    delay_s: float = 0.001,
    timeout_s: float = 240.0,
) -> KillRun:
    """Pass n items through a worker SIGKILLed `kills` times mid-stream (restarted each time)."""
    group = f"{in_topic}-workers"
    produce(settings, in_topic, n, bad_every=n // len(BAD_VALUES))
    out, dead = TopicReader(settings, out_topic), TopicReader(settings, in_topic + ".dlq")
    worker = start_worker(settings, in_topic, out_topic, group, delay_s=delay_s)
    done = 0
    try:
        for k in range(kills):
            # Kill at evenly spaced points of progress, so each lands mid-stream.
            threshold = n * (k + 1) // (kills + 1)
            if not out.read_until(lambda r, t=threshold: len(r.records) >= t, timeout_s):
                raise TimeoutError(f"no progress past {threshold} outputs")
            worker.kill()
            worker.wait()
            done += 1
            worker = start_worker(settings, in_topic, out_topic, group, delay_s=delay_s)
        good = {str(i) for i in range(n)}
        out.read_until(lambda r: good <= set(r.keys()), timeout_s)
        dead.read_until(lambda r: set(BAD_VALUES) <= set(r.keys()), 30)
    finally:
        worker.terminate()
        worker.wait(30)
        out.close()
        dead.close()
    keys = out.keys()
    reasons = {r.key.decode(): decode(DlqRecord, r.value).reason for r in dead.records}
    return KillRun(
        sent=n,
        lost=sorted(good - set(keys)),
        duplicates=sum(keys.values()) - len(keys),
        kills=done,
        dlq_reasons=reasons,
    )
