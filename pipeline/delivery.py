"""The worker loop's pure decisions: what a failed attempt leads to, and what may be committed.

No Kafka I/O here, so both are tested without a broker.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kafka import TopicPartition

from pipeline.errors import BadInput, Retryable
from pipeline.messages import Message


@dataclass
class Outcome:
    """What became of one record's handling."""

    outputs: list[Message] = field(default_factory=list)
    error: BaseException | None = None
    reason: str = ""
    attempts: int = 0
    #: Given up because the worker is stopping: neither done nor dead, redelivered next time.
    abandoned: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """What a failed attempt leads to: a final outcome, or the seconds to wait before the next."""

    max_attempts: int
    initial_s: float
    max_s: float

    def decide(self, exc: Exception, attempt: int, *, stopping: bool) -> Outcome | float:
        if isinstance(exc, BadInput):
            return Outcome(error=exc, reason=exc.reason, attempts=attempt)
        if not isinstance(exc, Retryable):
            # A bug or an unforeseen library error: do not retry blindly and do not stall the
            # partition behind it; the DLQ keeps the message and the log keeps the traceback.
            return Outcome(error=exc, reason="internal_error", attempts=attempt)
        if stopping:
            return Outcome(abandoned=True, attempts=attempt)
        if attempt >= self.max_attempts:
            return Outcome(error=exc, reason=exc.reason, attempts=attempt)
        if exc.retry_after is not None:
            return min(exc.retry_after, self.max_s)
        ceiling = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


class OffsetTracker:
    """Per partition, the offsets in hand and which are done.

    Commits stop at the first unfinished offset, whatever finished after it.
    """

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, dict[int, bool]] = {}
        self._committed: dict[TopicPartition, int] = {}

    def track(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, {})[offset] = False

    def done(self, tp: TopicPartition, offset: int) -> None:
        if offset in self._pending.get(tp, {}):
            self._pending[tp][offset] = True

    def committable(self) -> dict[TopicPartition, int]:
        """Next offset to commit per partition, where it moved since the last commit."""
        out = {}
        for tp, offsets in self._pending.items():
            nxt = None
            for offset, finished in list(offsets.items()):  # insertion order is offset order
                if not finished:
                    break
                nxt = offset + 1
                del offsets[offset]
            if nxt is not None and nxt != self._committed.get(tp):
                out[tp] = nxt
        return out

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._pending.pop(tp, None)
            self._committed.pop(tp, None)
