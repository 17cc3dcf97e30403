"""Kafka clients configured once for Apache Kafka and the embedded broker alike, plus topic admin.

Every producer, consumer and admin client in the project is built here, so the settings that
make them work with both brokers (short sessions, acks=all, idempotence) live in one place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.settings import KafkaSettings


def producer(settings: KafkaSettings, **overrides: object) -> KafkaProducer:
    """A producer whose acknowledgements mean the data is on every in-sync replica."""
    config: dict[str, object] = {
        **settings.client_config(),
        "acks": "all",
        # Retries after a lost response would write twice; idempotence lets the broker drop them.
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_in_flight_requests_per_connection": 5,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer(settings: KafkaSettings, group_id: str | None, **overrides: object) -> KafkaConsumer:
    """A consumer that never commits on its own: the worker commits after outputs are acked."""
    config: dict[str, object] = {
        **settings.client_config(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
    }
    config.update(overrides)
    return KafkaConsumer(**config)


def admin(settings: KafkaSettings) -> KafkaAdminClient:
    return KafkaAdminClient(**settings.client_config())


def ensure_topics(
    settings: KafkaSettings, partitions: Mapping[str, int], replication: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        missing = [NewTopic(name, n, replication) for name, n in partitions.items()
                   if name not in existing]  # fmt: skip
        created = []
        for topic in missing:
            try:
                client.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another process won the race: the topic exists, which is all we need
        return created
    finally:
        client.close()


def wait_until_reachable(settings: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin(settings).close()
            return
        except KafkaError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"no Kafka broker at {settings.bootstrap_servers} ({last})")


def partitions_of(client: KafkaConsumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in sorted(client.partitions_for_topic(topic) or ())]


def end_offsets(client: KafkaConsumer, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset one past the last record of each partition.

    The embedded broker (Tansu 0.6) answers ListOffsets(latest) with the base offset of the last
    record batch plus one, which undercounts whenever producers batch; the high watermark in its
    fetch responses is right. So fetch once from the reported end and take the larger of the
    two: exact on Tansu, unchanged on Apache Kafka. `client` must be a consumer without a group
    (its assignment is replaced).
    """
    tps = list(tps)
    ends: dict[TopicPartition, int] = dict(client.end_offsets(tps))
    written = [tp for tp in tps if ends[tp] > 0]  # 0 means no batch at all: truly empty
    if not written:
        return ends
    client.assign(written)
    for tp in written:
        client.seek(tp, ends[tp] - 1)
    pending = set(written)
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        client.poll(timeout_ms=100, max_records=1)
        for tp in list(pending):
            highwater = client.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
                pending.discard(tp)
                client.pause(tp)
    client.assign([])
    return ends


def committed(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    """A consumer group's committed offsets (partitions it never committed are absent)."""
    client = admin(settings)
    try:
        offsets = client.list_group_offsets(group).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        client.close()


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return self.end - self.committed


def group_lags(settings: KafkaSettings) -> list[GroupLag]:
    """Committed offsets and lag per consumer group and topic, from offsets alone.

    Computed from ListGroups + OffsetFetch rather than DescribeGroups, which the embedded
    broker does not answer in a form the client accepts.
    """
    committed = groups_committed(settings)
    reader = consumer(settings, group_id=None)
    try:
        tps = {tp for offsets in committed.values() for tp in offsets}
        ends = end_offsets(reader, tps) if tps else {}
        rows: dict[tuple[str, str], list[int]] = {}
        for gid, offsets in committed.items():
            for tp, offset in offsets.items():
                row = rows.setdefault((gid, tp.topic), [0, 0])
                row[0] += offset
                row[1] += ends.get(tp, offset)
        return [GroupLag(g, t, c, e) for (g, t), (c, e) in sorted(rows.items())]
    finally:
        reader.close()


def groups_committed(settings: KafkaSettings) -> dict[str, dict[TopicPartition, int]]:
    """Every consumer group's committed offsets (ListGroups + OffsetFetch)."""
    client = admin(settings)
    try:
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in client.list_groups():
            gid = group["group_id"]
            offsets = client.list_group_offsets(gid).get(gid, {})
            committed[gid] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        return committed
    finally:
        client.close()
