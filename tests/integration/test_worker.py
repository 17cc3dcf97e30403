"""The worker loop in-process on the real broker: retries, DLQ reasons, concurrency, commits."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import bus
from pipeline.blobstore import open_store
from pipeline.errors import Retryable
from pipeline.messages import DlqRecord, decode
from pipeline.settings import BlobSettings, KafkaSettings
from pipeline.worker import Worker
from tests.support.bus_harness import TopicReader, produce
from tests.support.passthrough import Item, PassthroughSettings

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3
TIMEOUT_S = 60


class Running:
    """`worker.run()` on a background thread; on exit, stop and join it and re-raise its crash."""

    def __init__(self, worker: Worker[Item]) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread in __exit__
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop within 30 s"
        if self.error is not None:
            raise self.error

    def wait_for(self, reader: TopicReader, predicate: Callable[[TopicReader], bool]) -> bool:
        """Read `reader` until `predicate` holds; gives up early if the worker thread died."""
        reader.read_until(lambda r: predicate(r) or not self.thread.is_alive(), TIMEOUT_S)
        return predicate(reader)


class Rig:
    """An input topic (with its DLQ), an output topic, and readers on both."""

    def __init__(
        self, kafka: KafkaSettings, make_topic: Callable[..., str], partitions: int, blobs: Path
    ):
        self.kafka = kafka
        self.blobs = BlobSettings(store_uri=blobs.as_uri())
        self.source = make_topic("in", partitions)
        self.sink = make_topic("out", 1)
        self.group = f"{self.source}-{uuid.uuid4().hex[:6]}"
        self.out = TopicReader(kafka, self.sink)
        self.dlq = TopicReader(kafka, self.source + ".dlq")

    def worker(self, handle: Callable, **overrides: object) -> Worker[Item]:
        config: dict[str, object] = {
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            "max_attempts": MAX_ATTEMPTS,
            "commit_interval_s": 0.2,
            **overrides,
        }
        settings = PassthroughSettings(
            input_topic=self.source,
            output_topic=self.sink,
            kafka=self.kafka,
            blobs=self.blobs,
            group_id=self.group,
            **config,
        )
        return Worker(settings, Item, handle, routes={Item: self.sink})

    def produce(self, n: int) -> dict[str, tuple[int, int]]:
        return produce(self.kafka, self.source, n, payload_bytes=100)

    def dead(self) -> list[DlqRecord]:
        return [decode(DlqRecord, r.value) for r in self.dlq.records]

    def close(self) -> None:
        self.out.close()
        self.dlq.close()


@pytest.fixture
def rig(kafka, make_topic, tmp_path) -> Iterator[Rig]:
    r = Rig(kafka, make_topic, partitions=1, blobs=tmp_path)
    yield r
    r.close()


def retries(worker: Worker[Item]) -> float | None:
    return worker.metrics.registry.get_sample_value(
        "distillery_retries_total", {"service": worker.settings.service_name}
    )


def lag_reported(worker: Worker[Item]) -> bool:
    samples = [s for family in worker.metrics.registry.collect() for s in family.samples]
    return any(sample.name == "distillery_consumer_lag" for sample in samples)


def wait_committed(rig: Rig, n: int, check: Callable[[], None] = lambda: None) -> int:
    """Poll until the group has committed `n` offsets in all (or TIMEOUT_S), calling `check`
    between polls; the total committed."""
    deadline = time.monotonic() + TIMEOUT_S
    while (total := sum(bus.committed(rig.kafka, rig.group).values())) < n:
        if time.monotonic() > deadline:
            break
        check()
        time.sleep(0.1)
    return total


def test_retryable_twice_then_success_produces_the_output(rig):
    calls: Counter[str] = Counter()

    def flaky(item: Item) -> list[Item]:
        calls[item.id] += 1
        if calls[item.id] <= 2:
            raise Retryable("broker hiccup")
        return [item]

    rig.produce(1)
    worker = rig.worker(flaky)
    with Running(worker) as run:
        assert run.wait_for(rig.out, lambda r: len(r.records) == 1)
    assert rig.out.keys() == {"0": 1}
    assert calls == {"0": 3}
    assert retries(worker) == 2


def test_always_retryable_ends_in_dlq_after_max_attempts(rig):
    def down(item: Item) -> list[Item]:
        raise Retryable("upstream is down")

    positions = rig.produce(1)
    worker = rig.worker(down)
    with Running(worker) as run:
        assert run.wait_for(rig.dlq, lambda r: len(r.records) == 1)
    [dead] = rig.dead()
    assert (dead.reason, dead.attempts, dead.error_type) == (
        "retries_exhausted",
        MAX_ATTEMPTS,
        "Retryable",
    )
    assert (dead.topic, dead.partition, dead.offset) == (rig.source, *positions["0"])
    assert retries(worker) == MAX_ATTEMPTS - 1
    assert rig.out.records == []


def test_unexpected_exception_goes_to_dlq_and_the_rest_flows(rig):
    def buggy(item: Item) -> list[Item]:
        if item.id == "1":
            raise ValueError("a bug in the handler")
        return [item]

    positions = rig.produce(5)
    with Running(rig.worker(buggy)) as run:
        assert run.wait_for(rig.out, lambda r: len(r.records) == 4)
        assert run.wait_for(rig.dlq, lambda r: len(r.records) == 1)
    assert set(rig.out.keys()) == {"0", "2", "3", "4"}
    [dead] = rig.dead()
    assert (dead.reason, dead.attempts, dead.error_type) == ("internal_error", 1, "ValueError")
    assert "a bug in the handler" in dead.error
    assert (dead.topic, dead.partition, dead.offset) == (rig.source, *positions["1"])
    assert decode(Item, dead.original_value()).id == "1"


def test_async_handler_runs_exactly_concurrency_messages_at_once(rig):
    in_flight = {"now": 0, "max": 0}

    async def slow(item: Item) -> list[Item]:
        in_flight["now"] += 1  # one event loop thread: no lock needed
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await asyncio.sleep(0.05)
        finally:
            in_flight["now"] -= 1
        return [item]

    rig.produce(40)
    with Running(rig.worker(slow, concurrency=8)) as run:
        assert run.wait_for(rig.out, lambda r: len(r.keys()) == 40)
    assert set(rig.out.keys()) == {str(i) for i in range(40)}
    assert in_flight["max"] == 8


def test_several_outputs_for_one_input_all_arrive(rig):
    def fan_out(item: Item) -> list[Item]:
        return [Item(id=f"{item.id}.{k}") for k in range(3)]

    rig.produce(5)
    with Running(rig.worker(fan_out)) as run:
        assert run.wait_for(rig.out, lambda r: len(r.records) == 15)
    assert rig.out.keys() == {f"{i}.{k}": 1 for i in range(5) for k in range(3)}


def test_output_over_size_limit_sends_input_to_dlq_without_partial_outputs(rig):
    def inflate(item: Item) -> list[Item]:
        if item.id == "0":
            return [Item(id="0.small"), Item(id="0.huge", payload="x" * 300_000)]
        return [item]

    positions = rig.produce(2)
    with Running(rig.worker(inflate)) as run:
        assert run.wait_for(rig.dlq, lambda r: len(r.records) == 1)
        # "1" comes after "0" on the same partitions in and out: once it is there, any
        # output of "0" would be there too.
        assert run.wait_for(rig.out, lambda r: "1" in r.keys())
    assert rig.out.keys() == {"1": 1}
    [dead] = rig.dead()
    assert dead.reason == "message_too_large"
    assert (dead.topic, dead.partition, dead.offset) == (rig.source, *positions["0"])


def test_oversized_bad_input_goes_to_dlq_and_the_worker_survives(rig):
    producer = bus.producer(rig.kafka)
    big = producer.send(rig.source, key=b"big", value=b"not json " * 30_000)  # ~270 KB
    producer.flush()
    producer.close()
    rig.produce(1)
    with Running(rig.worker(lambda item: [item])) as run:
        assert run.wait_for(rig.dlq, lambda r: len(r.records) == 1)
        assert run.wait_for(rig.out, lambda r: "0" in r.keys())
    [dead] = rig.dead()
    assert (dead.reason, dead.offset) == ("not_json", big.get().offset)
    # Too big to ride inline in its DLQ record: parked in the blob store, bytes intact.
    assert dead.value_b64 is None and dead.size == len(b"not json " * 30_000)
    assert dead.original_value(fetch=open_store(rig.blobs).get) == b"not json " * 30_000


def test_stop_commits_every_offset_it_consumed(kafka, make_topic, tmp_path):
    rig = Rig(kafka, make_topic, partitions=3, blobs=tmp_path)
    try:
        rig.produce(30)
        # No periodic commit during the test: only the final commit in stop() can do it.
        worker = rig.worker(lambda item: [item], commit_interval_s=600)
        with Running(worker) as run:
            assert run.wait_for(rig.out, lambda r: len(r.records) == 30)
            assert bus.committed(kafka, rig.group) == {}
    finally:
        rig.close()
    reader = bus.consumer(kafka, group_id=None)
    try:
        ends = bus.end_offsets(reader, bus.partitions_of(reader, rig.source))
    finally:
        reader.close()
    assert sum(ends.values()) == 30
    assert bus.committed(kafka, rig.group) == {tp: end for tp, end in ends.items() if end}


def test_metrics_endpoint_reports_the_loop(rig):
    rig.produce(3)
    worker = rig.worker(lambda item: [item], metrics_port=0)
    with Running(worker) as run:
        assert run.wait_for(rig.out, lambda r: len(r.records) == 3)
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics") as resp:
            text = resp.read().decode()
    assert 'distillery_consumed_total{service="passthrough",topic="' in text
    assert "distillery_handle_seconds_bucket" in text
    assert (
        worker.metrics.registry.get_sample_value(
            "distillery_consumed_total", {"service": "passthrough", "topic": rig.source}
        )
        == 3
    )


def test_async_generator_handler_streams_outputs_before_it_finishes(rig):
    release = threading.Event()

    async def stream(item: Item):  # noqa: ANN202 - an async generator handler
        yield Item(id=f"{item.id}.first")
        while not release.is_set():  # the second output waits for the test to see the first
            await asyncio.sleep(0.01)
        yield Item(id=f"{item.id}.second")

    rig.produce(1)
    worker = rig.worker(stream)
    with Running(worker) as run:
        assert run.wait_for(rig.out, lambda r: "0.first" in r.keys())
        assert bus.committed(rig.kafka, rig.group) == {}  # not done yet, so not committed
        release.set()
        assert run.wait_for(rig.out, lambda r: "0.second" in r.keys())
        wait_committed(rig, 1)
    assert rig.out.keys() == {"0.first": 1, "0.second": 1}
    assert sum(bus.committed(rig.kafka, rig.group).values()) == 1


def test_handler_longer_than_max_poll_interval_keeps_its_partitions(rig):
    # A handler that runs past max.poll.interval.ms: the loop keeps polling with partitions
    # paused, so the group does not evict it and the commit of its work succeeds.
    async def slow(item: Item) -> list[Item]:
        await asyncio.sleep(3.0)
        return [item]

    rig.kafka = rig.kafka.model_copy(update={"max_poll_interval_ms": 1500})
    rig.produce(2)
    worker = rig.worker(slow, commit_interval_s=0.2)
    with Running(worker) as run:
        assert run.wait_for(rig.out, lambda r: len(r.records) == 2)
        wait_committed(rig, 2)
    assert rig.out.keys() == {"0": 1, "1": 1}  # each handled once: no eviction, no redelivery
    assert sum(bus.committed(rig.kafka, rig.group).values()) == 2


def test_stop_abandons_a_handler_that_outlives_the_grace_uncommitted(rig):
    started = threading.Event()

    async def endless(item: Item) -> list[Item]:
        started.set()
        await asyncio.sleep(600)
        return [item]

    rig.produce(1)
    worker = rig.worker(endless, stop_grace_s=0.5)
    with Running(worker):
        assert started.wait(TIMEOUT_S)
        stop_at = time.monotonic()
    assert time.monotonic() - stop_at < 10  # not the handler's ten minutes
    assert bus.committed(rig.kafka, rig.group) == {}  # redelivered to the next owner
    rig.out.read()
    assert rig.out.records == []


def test_a_member_joining_mid_handler_crashes_nothing_and_loses_nothing(rig):
    started = threading.Event()

    async def slow(item: Item) -> list[Item]:
        started.set()
        await asyncio.sleep(2.0)
        return [item]

    rig.produce(3)
    first, second = rig.worker(slow), rig.worker(slow)
    with Running(first) as one:
        assert started.wait(TIMEOUT_S)
        with Running(second) as two:  # joins the group: the partition is revoked mid-handler

            def both_alive() -> None:
                assert one.thread.is_alive() and two.thread.is_alive(), "a worker died"

            committed = wait_committed(rig, 3, check=both_alive)
            assert committed >= 3, "the records were never all committed"
    # Running re-raises a worker's crash on exit; every record was handled (at least once).
    rig.out.read_until(lambda r: set(r.keys()) >= {"0", "1", "2"}, TIMEOUT_S)
    assert set(rig.out.keys()) == {"0", "1", "2"}


def test_a_partition_that_moves_away_takes_its_lag_with_it(rig):
    """A group's summed lag must count each partition once: the member it was revoked from
    stops reporting it (its new owner reports it after its first commit)."""
    rig.produce(3)
    first = rig.worker(lambda item: [item])
    with Running(first):
        assert wait_committed(rig, 3) >= 3
        deadline = time.monotonic() + TIMEOUT_S
        while not lag_reported(first):
            assert time.monotonic() < deadline, "no lag was ever reported"
            time.sleep(0.1)
        with Running(rig.worker(lambda item: [item])):  # joins: the group rebalances
            while lag_reported(first):
                assert time.monotonic() < deadline + TIMEOUT_S, "the revoked lag stayed"
                time.sleep(0.1)
