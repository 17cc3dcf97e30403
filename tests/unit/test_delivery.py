"""The worker loop's pure decisions (commit bookkeeping, retry policy) and its log lines."""

from __future__ import annotations

import json
import logging

import pytest
from kafka import TopicPartition

from pipeline.delivery import OffsetTracker, Outcome, RetryPolicy
from pipeline.errors import BadInput, Retryable
from pipeline.logs import JsonFormatter

pytestmark = pytest.mark.unit

TP = TopicPartition("t", 0)


def test_commit_stops_at_first_unfinished_offset():
    offsets = OffsetTracker()
    for o in range(10, 15):
        offsets.track(TP, o)
    for o in (10, 11, 13, 14):  # 12 still in flight
        offsets.done(TP, o)
    assert offsets.committable() == {TP: 12}
    offsets.committed({TP: 12})
    assert offsets.committable() == {}, "nothing moved, nothing to commit"
    offsets.done(TP, 12)
    assert offsets.committable() == {TP: 15}


def test_partitions_are_independent():
    other = TopicPartition("t", 1)
    offsets = OffsetTracker()
    offsets.track(TP, 0)
    offsets.track(other, 7)
    offsets.done(other, 7)
    assert offsets.committable() == {other: 8}


def test_forgotten_partition_is_never_committed():
    offsets = OffsetTracker()
    offsets.track(TP, 3)
    offsets.forget([TP])
    offsets.done(TP, 3)  # a late finish for a partition that moved away
    assert offsets.committable() == {}


POLICY = RetryPolicy(max_attempts=3, initial_s=0.5, max_s=4.0)


def test_bad_input_is_final_at_once():
    verdict = POLICY.decide(BadInput("nope", reason="x"), 1, stopping=False)
    assert isinstance(verdict, Outcome) and verdict.reason == "x" and verdict.attempts == 1


def test_unexpected_exception_is_dead_lettered_as_internal():
    verdict = POLICY.decide(ZeroDivisionError("bug"), 1, stopping=False)
    assert isinstance(verdict, Outcome) and verdict.reason == "internal_error"


def test_retryable_backs_off_then_gives_up():
    first = POLICY.decide(Retryable("timeout"), 1, stopping=False)
    second = POLICY.decide(Retryable("timeout"), 2, stopping=False)
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0  # exponential, with jitter
    final = POLICY.decide(Retryable("timeout"), 3, stopping=False)
    assert isinstance(final, Outcome) and final.reason == "retries_exhausted"


def test_retry_after_is_honoured_but_capped():
    assert POLICY.decide(Retryable("429", retry_after=2.0), 1, stopping=False) == 2.0
    assert POLICY.decide(Retryable("429", retry_after=99.0), 1, stopping=False) == 4.0


def test_retry_while_stopping_is_abandoned_not_dead():
    verdict = POLICY.decide(Retryable("timeout"), 1, stopping=True)
    assert isinstance(verdict, Outcome) and verdict.abandoned and verdict.error is None


def test_json_log_line_carries_record_position():
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "WARNING",
            "msg": "to %s",
            "args": ("a.dlq",),
            "topic": "a",
            "partition": 2,
            "offset": 41,
        }
    )
    line = json.loads(JsonFormatter("extractor").format(record))
    assert line["msg"] == "to a.dlq"
    assert (line["service"], line["topic"], line["partition"], line["offset"]) == (
        "extractor",
        "a",
        2,
        41,
    )
