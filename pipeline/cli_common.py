"""What every `distillery` command shares: the consoles, the home option, finding the cluster."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from kafka.consumer.fetcher import ConsumerRecord
from rich.console import Console

from pipeline import bus
from pipeline.blobstore import BlobStore, open_store
from pipeline.embedded import StackState, pid_alive
from pipeline.settings import BlobSettings, KafkaSettings

console = Console()
err = Console(stderr=True)

HomeOption = Annotated[
    Path,
    typer.Option(envvar="DISTILLERY_HOME", help="Where the stack keeps its state, logs and blobs."),
]
DEFAULT_HOME = Path(".distillery")


class Failure(typer.Exit):
    """A command's failure, said on stderr, its message kept (a run's summary records it)."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message


def fail(message: str) -> Failure:
    err.print(f"[red]error:[/red] {message}")
    return Failure(message)


def kafka_settings(home: Path) -> KafkaSettings:
    """The cluster named by KAFKA_BOOTSTRAP_SERVERS, else the running embedded stack's."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        state = StackState.load(home)
        if state is None or not pid_alive(state.supervisor_pid):
            raise fail(
                "no stack is running here: start one with `distillery up` "
                "or point KAFKA_BOOTSTRAP_SERVERS at a cluster"
            )
        bootstrap = state.bootstrap
    return KafkaSettings(bootstrap_servers=bootstrap)


def read_all(settings: KafkaSettings, topic: str) -> list[ConsumerRecord]:
    """Every record a topic holds now."""
    # Ends from a client of their own: one that goes on to read the partitions it probed
    # gets nothing from most of them on the embedded broker (its fetch session, it seems).
    probe = bus.consumer(settings, group_id=None)
    try:
        ends = {
            tp: end
            for tp, end in bus.end_offsets(probe, bus.partitions_of(probe, topic)).items()
            if end
        }
    finally:
        probe.close()
    if not ends:
        return []
    reader = bus.consumer(settings, group_id=None)
    try:
        reader.assign(list(ends))
        reader.seek_to_beginning()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 30
        while any(reader.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise fail(f"could not read {topic} to its end in 30s")
            for batch in reader.poll(timeout_ms=200).values():
                records += batch
        return records
    finally:
        reader.close()


def blob_store(home: Path) -> BlobStore:
    """BLOB_STORE_URI's store, else the running embedded stack's."""
    if os.environ.get("BLOB_STORE_URI"):
        return open_store(BlobSettings())
    state = StackState.load(home.resolve())
    if state is None:
        raise fail(
            "no stack is running here: start one with `distillery up` or set BLOB_STORE_URI "
            "to the services' blob store"
        )
    return open_store(BlobSettings(store_uri=state.blob_store))
