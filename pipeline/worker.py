"""The one consume → validate → handle → produce → commit loop, written once for every service.

A service supplies `handle(message) -> outputs`, plain or `async def`. The loop decodes each
record (bad → DLQ), calls the handler (transient errors retried with backoff, permanent ones →
DLQ), produces the outputs with acks=all and commits an offset only once everything before it
has been acknowledged: delivery is at-least-once and nothing is lost. Async handlers run
`concurrency` messages at once on an event loop thread; an async *generator* handler streams
its outputs as it yields them (a long job such as a scrape publishes as it goes). The loop
itself stays the same.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from itertools import count
from types import FrameType
from typing import Any, Generic, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from pipeline import bus, logs, topics
from pipeline.blobstore import BlobStore, open_store
from pipeline.delivery import OffsetTracker, Outcome, RetryPolicy
from pipeline.errors import BadInput, Retryable
from pipeline.messages import DlqRecord, Message, decode, encode
from pipeline.metrics import WorkerMetrics
from pipeline.settings import ServiceSettings

log = logging.getLogger("pipeline.worker")

In = TypeVar("In", bound=Message)
Outputs = Iterable[Message]
Handler = (
    Callable[[In], Outputs]
    | Callable[[In], Awaitable[Outputs]]
    | Callable[[In], AsyncIterator[Message]]
)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge an output: nothing is committed, the process must restart."""


class _Inline:
    """Runs each message in the loop's own thread: sync handlers, one at a time."""

    def __init__(self, run: Callable[[Any], Outcome], capacity: int) -> None:
        self._run = run
        # Nothing stays in flight (each message is done when submit returns), so a whole poll
        # batch fits: polling one record at a time would cost far more than the handling.
        self.capacity = capacity

    def submit(self, message: Message) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        future.set_result(self._run(message))
        return future

    def close(self) -> None:
        pass


class _EventLoop:
    """Runs async handlers on an event loop thread, `capacity` messages at a time."""

    def __init__(self, run: Callable[[Any], Awaitable[Outcome]], capacity: int) -> None:
        self._run = run
        self.capacity = capacity
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="handlers", daemon=True)
        self._thread.start()

    def submit(self, message: Message) -> Future[Outcome]:
        return asyncio.run_coroutine_threadsafe(self._run(message), self._loop)  # type: ignore[arg-type]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Worker(Generic[In]):
    """Consumes `settings.input_topic` as `model`, hands each message to `handle`, produces its
    outputs to `routes[type(output)]` (default: the output class's TOPIC)."""

    def __init__(
        self,
        settings: ServiceSettings,
        model: type[In],
        handle: Handler[In],
        *,
        routes: Mapping[type[Message], str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        # Typed loosely here: which of the two Handler shapes it is, is decided once below.
        self.handle: Callable[[In], Any] = handle
        self.routes = dict(routes or {})
        self.topic = settings.input_topic
        self.dlq_topic = topics.dlq(self.topic)
        self.metrics = WorkerMetrics(settings.service_name, self.topic, registry)
        self._stopping = threading.Event()
        self._offsets = OffsetTracker()
        #: The bound Prometheus port once `run()` serves metrics (settings may ask for 0: any).
        self.metrics_port: int | None = None
        self._blob_store: BlobStore | None = None
        self._retry = RetryPolicy(
            settings.max_attempts, settings.backoff_initial_s, settings.backoff_max_s
        )
        self._inflight: dict[Future[Outcome], ConsumerRecord] = {}
        self._unacked: list[tuple[str, Any]] = []  # (topic, kafka FutureRecordMetadata)
        # Streamed outputs are sent from the handlers' thread, the rest from the loop's.
        self._unacked_lock = threading.Lock()
        self._last_commit = time.monotonic()
        call = getattr(handle, "__call__", None)  # noqa: B004 - an object with `async def __call__`
        is_async = any(
            inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (handle, call)
        )
        self._dispatch: _Inline | _EventLoop = (
            _EventLoop(self._call_async, settings.concurrency)
            if is_async
            else _Inline(self._call_sync, settings.max_poll_records)
        )
        self._producer: KafkaProducer = bus.producer(settings.kafka)
        self._consumer: KafkaConsumer = bus.consumer(
            settings.kafka, settings.group, max_poll_records=settings.max_poll_records
        )

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until SIGTERM/SIGINT (or `stop()`), then finish, commit and close."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if self.settings.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.settings.metrics_port)
            log.info("metrics on :%d/metrics", self.metrics_port)
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))
        log.info("consuming", extra={"topic": self.topic, "group": self.settings.group})
        try:
            while not self._stopping.is_set():
                self._poll()
                self._harvest(block=False)
                if time.monotonic() - self._last_commit >= self.settings.commit_interval_s:
                    self._commit()
            self._drain()
            self._commit()
        finally:
            self._dispatch.close()
            self._consumer.close(autocommit=False)
            self._producer.close()
            log.info("stopped", extra={"topic": self.topic})

    def stop(self) -> None:
        self._stopping.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the message in hand", signal.Signals(signum).name)
        self._stopping.set()

    def _poll(self) -> None:
        room = self._dispatch.capacity - len(self._inflight)
        # At capacity, keep polling with every partition paused rather than not polling: a
        # handler that runs for minutes (a scrape, a training run) must not look like a dead
        # consumer to the group (max.poll.interval.ms) and have its partitions taken away.
        if room <= 0:
            self._consumer.pause(*self._consumer.assignment())
        elif self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())
        # With handlers in flight, wait briefly (not 0: that would spin a core) so that
        # finished ones are harvested promptly. A partition assigned during this poll is not
        # paused yet and may add one batch beyond capacity; the next round pauses it.
        batch = self._consumer.poll(
            timeout_ms=20 if self._inflight else 100,
            max_records=max(1, min(room, self.settings.max_poll_records)),
        )
        for tp, records in batch.items():
            for record in records:
                if self._stopping.is_set():
                    return  # untracked, so never committed: the next owner handles it
                self._accept(tp, record)
                self._harvest(block=False)
        if room <= 0:
            self._harvest(block=True)

    def _accept(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self._offsets.track(tp, record.offset)
        self.metrics.consumed.inc()
        try:
            message = decode(self.model, record.value)
        except BadInput as exc:
            self._finish(record, Outcome(error=exc, reason=exc.reason))
            return
        self._inflight[self._dispatch.submit(message)] = record

    def _harvest(self, *, block: bool) -> None:
        if block and self._inflight:
            wait(self._inflight, timeout=0.1, return_when=FIRST_COMPLETED)
        for future in [f for f in self._inflight if f.done()]:
            self._finish(self._inflight.pop(future), future.result())

    def _drain(self) -> None:
        """Finish what is in hand. Handlers still running after `stop_grace_s` are cancelled
        and their records left uncommitted: the next owner handles them again (a scrape of
        hundreds of pages must not hold up a shutdown for minutes)."""
        deadline = time.monotonic() + self.settings.stop_grace_s
        while self._inflight and time.monotonic() < deadline:
            self._harvest(block=True)
        self._harvest(block=False)  # what finished at the last moment still counts
        if self._inflight:
            log.warning(
                "abandoning %d messages still in hand after %.0fs; they will be redelivered",
                len(self._inflight),
                self.settings.stop_grace_s,
            )
            for future in self._inflight:
                future.cancel()
            wait(self._inflight, timeout=self.settings.stop_grace_s)
            self._inflight.clear()

    def _finish(self, record: ConsumerRecord, outcome: Outcome) -> None:
        if outcome.abandoned:
            return
        error, reason = outcome.error, outcome.reason
        if error is None:
            try:
                # Encode every output before sending any: all of a record's outputs or none.
                encoded = [(self._route(m), m.key(), encode(m)) for m in outcome.outputs]
            except BadInput as exc:
                error, reason = exc, exc.reason
            else:
                for topic, key, value in encoded:
                    self._send(topic, key, value)
        if error is not None:
            self._dead_letter(record, error, reason, outcome.attempts)
        self._offsets.done(TopicPartition(record.topic, record.partition), record.offset)

    def _route(self, message: Message) -> str:
        return self.routes.get(type(message), message.TOPIC)

    def _dead_letter(
        self, record: ConsumerRecord, error: BaseException, reason: str, attempts: int
    ) -> None:
        dead = DlqRecord.of(
            key=record.key,
            value=record.value or b"",
            error=error,
            reason=reason,
            service=self.settings.service_name,
            attempts=attempts,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            spill=lambda value: self._blobs().put(value, suffix=".dlq"),
        )
        self._send(self.dlq_topic, record.key, encode(dead))
        self.metrics.dead_lettered(self.topic, reason)
        log.warning(
            "to %s: %s",
            self.dlq_topic,
            dead.error,
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": reason,
            },
        )

    def _blobs(self) -> BlobStore:
        if self._blob_store is None:  # opened on first need: most services never dead-letter
            self._blob_store = open_store(self.settings.blobs)
        return self._blob_store

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        future = self._producer.send(topic, key=key, value=value)
        with self._unacked_lock:
            self._unacked.append((topic, future))

    def _stream(self, message: Message) -> None:
        """Send one output of an async generator handler now, from the handlers' thread."""
        try:
            self._send(self._route(message), message.key(), encode(message))
        except KafkaError as exc:  # no metadata or buffer space in time: the broker, not the input
            raise Retryable(f"could not send an output: {exc}", reason="send_failed") from exc

    def _commit(self) -> None:
        """Wait for every output to be acknowledged, then commit what is entirely done."""
        self._last_commit = time.monotonic()
        offsets = self._acknowledged()
        if not offsets:
            return
        try:
            self._consumer.commit(_to_commit(offsets))
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The partitions moved; their new owner re-reads from the last commit (duplicates
            # downstream are allowed, deterministic ids make them harmless).
            log.warning("commit skipped during rebalance: %s", exc)
            return
        self._offsets.committed(offsets)
        self._report_lag(offsets)

    def _acknowledged(self) -> dict[TopicPartition, int]:
        """Flush the outputs sent so far and check every ack; returns what may be committed."""
        # Offsets first: a streamed output is sent before its record can finish, so every
        # output of a committable record is already in `_unacked` when it is swapped out.
        offsets = self._offsets.committable()
        with self._unacked_lock:
            unacked, self._unacked = self._unacked, []
        if unacked:
            self._producer.flush()
            failed = [(t, f.exception) for t, f in unacked if f.failed()]
            if failed:
                raise DeliveryError(f"{len(failed)} outputs not acknowledged, first: {failed[0]}")
            for topic in {t for t, _ in unacked}:
                self.metrics.produced(topic, sum(1 for t, _ in unacked if t == topic))
        return offsets

    def _report_lag(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            end = self._consumer.highwater(tp)
            if end is not None:
                self.metrics.lag(tp.topic, tp.partition, max(0, end - offset))

    def _revoked(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """What may be committed before `tps` move away: what has finished, acknowledged.
        Runs on the client's network thread while the loop's thread waits in poll()."""
        self._harvest(block=False)
        offsets = self._acknowledged()
        self._offsets.forget(tps)
        return offsets

    # --- one message: call the handler, retry what is transient ------------------------------

    def _call_sync(self, message: In) -> Outcome:
        for attempt in count(1):
            start = time.perf_counter()
            try:
                outputs = list(self.handle(message))
                return Outcome(outputs=outputs, attempts=attempt)
            except Exception as exc:  # noqa: BLE001 - classified just below
                verdict = self._after_failure(exc, attempt)
            finally:
                self.metrics.handle_seconds.observe(time.perf_counter() - start)
            if isinstance(verdict, Outcome):
                return verdict
            self._stopping.wait(verdict)
        raise AssertionError("unreachable")

    async def _call_async(self, message: In) -> Outcome:
        for attempt in count(1):
            start = time.perf_counter()
            try:
                result = self.handle(message)
                if isinstance(result, AsyncIterator):
                    # Streamed: each output is on its way when yielded. A retry after a
                    # partial run sends some again, which deterministic ids make harmless.
                    async for output in result:
                        self._stream(output)
                    return Outcome(attempts=attempt)
                outputs = list(await result)
                return Outcome(outputs=outputs, attempts=attempt)
            except Exception as exc:  # noqa: BLE001 - classified just below
                verdict = self._after_failure(exc, attempt)
            finally:
                self.metrics.handle_seconds.observe(time.perf_counter() - start)
            if isinstance(verdict, Outcome):
                return verdict
            deadline = time.monotonic() + verdict
            while time.monotonic() < deadline and not self._stopping.is_set():
                await asyncio.sleep(min(0.1, deadline - time.monotonic()))
        raise AssertionError("unreachable")

    def _after_failure(self, exc: Exception, attempt: int) -> Outcome | float:
        verdict = self._retry.decide(exc, attempt, stopping=self._stopping.is_set())
        if isinstance(verdict, Outcome):
            if verdict.reason == "internal_error":
                log.error("handler failed", exc_info=exc)
            return verdict
        self.metrics.retries.inc()
        log.info("retrying in %.2fs after: %s", verdict, exc, extra={"attempt": attempt})
        return verdict


def _to_commit(offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}


class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]  # untyped library
    """Before partitions move away, commit what is finished.

    kafka-python calls this on its network thread, which must keep heartbeating and cannot
    serve a blocking commit from itself: so nothing here waits for a handler (records still
    in hand go to the next owner) and the commit is awaited, not blocked on.
    """

    def __init__(self, worker: Worker[Any]) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        for tp in revoked:
            self.worker.metrics.forget_lag(tp.topic, tp.partition)
        offsets = self.worker._revoked(list(revoked))
        if offsets:
            try:
                await self.worker._consumer.commit_async(_to_commit(offsets))
            except KafkaError as exc:
                log.warning("commit on revocation failed, the next owner redoes: %s", exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


def run_service(
    settings: ServiceSettings,
    model: type[In],
    handle: Handler[In],
    *,
    routes: Mapping[type[Message], str] | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """Configure logging and run the worker loop until stopped: a service's whole `main`.

    `registry` holds the service's own metrics, served beside the loop's on one endpoint.
    """
    logs.configure(settings.service_name, settings.log_level)
    Worker(settings, model, handle, routes=routes, registry=registry).run()
