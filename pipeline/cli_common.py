"""What every `distillery` command shares: the consoles, the home option, finding the cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.embedded import StackState, pid_alive
from pipeline.settings import KafkaSettings

console = Console()
err = Console(stderr=True)

HomeOption = Annotated[
    Path,
    typer.Option(envvar="DISTILLERY_HOME", help="Where the stack keeps its state, logs and blobs."),
]
DEFAULT_HOME = Path(".distillery")


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


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
