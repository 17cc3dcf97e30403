"""`distillery`: start and stop the embedded stack, and look at what flows through the topics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from kafka.errors import KafkaError
from rich.table import Table
from rich.text import Text

from pipeline import bus, topics
from pipeline.cli_common import (
    DEFAULT_HOME,
    HomeOption,
    console,
    fail,
    kafka_settings,
)
from pipeline.cli_curate import curate
from pipeline.cli_demo import Summary, corpus, demo_environment, stages
from pipeline.cli_generate import generate
from pipeline.cli_report import report
from pipeline.cli_scrape import scrape
from pipeline.cli_train import train
from pipeline.embedded import (
    SERVICES,
    ServiceSpec,
    StackState,
    Supervisor,
    available_services,
    pid_alive,
)

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(scrape, name="scrape")
app.command()(curate)
app.command()(train)
app.command()(report)
app.command()(generate)


def _parse_replicas(values: list[str]) -> dict[str, int]:
    replicas = {}
    for value in values:
        name, _, count = value.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise fail(
                f"--replicas wants SERVICE=N with SERVICE one of {', '.join(SERVICES)}; "
                f"got {value!r}"
            )
        replicas[name] = int(count)
    return replicas


@app.command()
def up(
    home: HomeOption = DEFAULT_HOME,
    replicas: Annotated[
        list[str], typer.Option(help="Replicas of a service, e.g. synthesizer=3.")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    foreground: Annotated[bool, typer.Option(help="Supervise from this process.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack.")] = 60.0,
) -> None:
    """Start the broker (unless KAFKA_BOOTSTRAP_SERVERS is set), the topics and the services."""
    home = home.resolve()
    state = StackState.load(home)
    if state and pid_alive(state.supervisor_pid):
        console.print(f"already up (supervisor pid {state.supervisor_pid}); `distillery status`")
        return
    counts = _parse_replicas(replicas)
    specs = [ServiceSpec.module(name, counts.get(name, 1)) for name in available_services()]
    if foreground:
        home.mkdir(parents=True, exist_ok=True)
        Supervisor(home, specs, os.environ.get("KAFKA_BOOTSTRAP_SERVERS")).run()
        return
    (home / "logs").mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pipeline.cli", "up", "--foreground", "--home", str(home)]
    argv += [f"--replicas={r}" for r in replicas]
    with open(home / "logs" / "supervisor.log", "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - ourselves, detached so the stack outlives us
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    with console.status("starting the stack"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = StackState.load(home)
            if state and state.ready:
                break
            if proc.poll() is not None:
                raise fail(
                    f"the supervisor exited ({proc.returncode}); see {home}/logs/supervisor.log"
                )
            time.sleep(0.1)
        else:
            raise fail(f"the stack was not ready within {timeout:.0f}s; see {home}/logs/")
    _print_status(state)
    if not specs:
        console.print(
            "[yellow]No service is implemented in this checkout yet:[/yellow] "
            "the broker and topics are up, nothing consumes them."
        )


@app.command()
def down(home: HomeOption = DEFAULT_HOME) -> None:
    """Stop the services (each finishes its message and commits), then the broker."""
    home = home.resolve()
    state = StackState.load(home)
    if state is None or not pid_alive(state.supervisor_pid):
        StackState.path(home).unlink(missing_ok=True)
        console.print("nothing running")
        return
    os.kill(state.supervisor_pid, signal.SIGTERM)
    with console.status("stopping"):
        deadline = time.monotonic() + 60
        while pid_alive(state.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if pid_alive(state.supervisor_pid):
        raise fail(f"supervisor {state.supervisor_pid} still running after 60 s")
    console.print("stopped")


@app.command()
def status(home: HomeOption = DEFAULT_HOME) -> None:
    """Where the broker is and which service processes are alive."""
    state = StackState.load(home.resolve())
    if state is None or not pid_alive(state.supervisor_pid):
        raise fail("no stack is running here (`distillery up` starts one)")
    _print_status(state)


def _print_status(state: StackState) -> None:
    kind = "embedded Tansu" if state.embedded_broker else "external"
    console.print(f"broker  [bold]{state.bootstrap}[/bold] ({kind})")
    console.print(f"blobs   {state.blob_store}")
    table = Table("service", "pid", "alive", "restarts", "metrics", "log")
    for name, info in state.services.items():
        pid = info.get("pid")
        alive = isinstance(pid, int) and pid_alive(pid)
        table.add_row(
            name,
            str(pid or "-"),
            "[green]yes[/green]" if alive else "[red]no[/red]",
            str(info.get("restarts", 0)),
            info.get("metrics", ""),
            info.get("log", ""),
        )
    if state.services:
        console.print(table)


@app.command("topics")
def topics_(
    home: HomeOption = DEFAULT_HOME,
    create: Annotated[
        bool,
        typer.Option("--create", help="First create every pipeline topic and DLQ that is "
                     "missing, with its partitions (a cluster's set-up; the embedded stack "
                     "does it itself)."),
    ] = False,
    replication: Annotated[
        int, typer.Option(min=1, help="Replication factor of the topics --create makes.")
    ] = 1,
) -> None:  # fmt: skip
    """Messages per topic, DLQ counts, and each consumer group's committed offsets and lag."""
    settings = kafka_settings(home.resolve())
    if create:
        try:
            made = bus.ensure_topics(settings, topics.all_topics(), replication)
        except KafkaError as exc:
            raise fail(f"cannot create topics on {settings.bootstrap_servers}: {exc}") from None
        console.print(f"created {', '.join(made)}" if made else "every topic exists already")
    try:
        reader = bus.consumer(settings, group_id=None)
        try:
            names = sorted(reader.topics())
            tps = [tp for name in names for tp in bus.partitions_of(reader, name)]
            ends = bus.end_offsets(reader, tps)
        finally:
            reader.close()
        lags = bus.group_lags(settings)
    except KafkaError as exc:
        raise fail(f"cannot read {settings.bootstrap_servers}: {exc}") from None
    ordered = [t for t in topics.PIPELINE if t in names] + [
        t for t in names if t not in topics.PIPELINE and not t.endswith(topics.DLQ_SUFFIX)
    ]
    table = Table("topic", "partitions", "messages", "dlq")
    for name in ordered:
        parts = [tp for tp in tps if tp.topic == name]
        dead = sum(v for tp, v in ends.items() if tp.topic == topics.dlq(name))
        table.add_row(
            name,
            str(len(parts)),
            str(sum(ends[tp] for tp in parts)),
            f"[red]{dead}[/red]" if dead else "0",
        )
    console.print(table)
    groups = Table("group", "topic", "committed", "end", "lag")
    for row in lags:
        groups.add_row(
            row.group,
            row.topic,
            str(row.committed),
            str(row.end),
            f"[yellow]{row.lag}[/yellow]" if row.lag else "0",
        )
    console.print(groups if lags else "no consumer group has committed yet")


@app.command()
def tail(
    topic: str,
    home: HomeOption = DEFAULT_HOME,
    last: Annotated[
        int, typer.Option("-n", "--last", help="Start this many back per partition.")
    ] = 10,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", "-b")] = False,
    follow: Annotated[bool, typer.Option(help="Keep printing new messages.")] = True,
) -> None:
    """Pretty-print a topic's messages, then follow it (Ctrl-C to stop)."""
    settings = kafka_settings(home.resolve())
    reader = bus.consumer(settings, group_id=None)
    try:
        tps = bus.partitions_of(reader, topic)
        if not tps:
            raise fail(f"no topic {topic!r}; `distillery topics` lists them")
        ends = bus.end_offsets(reader, tps)
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, 0 if from_beginning else max(0, ends[tp] - last))
        idle_since = time.monotonic()
        while follow or time.monotonic() - idle_since < 1.0:
            batch = reader.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    _print_record(record)
                idle_since = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


def _print_record(record: object) -> None:
    key = record.key.decode("utf-8", "replace") if record.key else "-"  # type: ignore[attr-defined]
    head = f"[dim]{record.topic}[{record.partition}]@{record.offset}[/dim] key={key}"  # type: ignore[attr-defined]
    try:
        value = json.loads(record.value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        console.print(head, repr(record.value[:200]))  # type: ignore[attr-defined]
        return
    if isinstance(value, dict):
        schema = value.pop("schema", "?")
        console.print(head, f"[cyan]{schema}[/cyan]")
        for field, v in value.items():
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            line = Text("    ")
            line.append(field, style="bold")
            line.append(": " + (text[:160] + "…" if len(text) > 160 else text))
            console.print(line, highlight=False)
    else:
        console.print(head, value)


@app.command()
def demo(home: HomeOption = DEFAULT_HOME / "demo") -> None:
    """Run the pipeline on the embedded stack over a sample corpus and report every stage."""
    demo_environment()
    started = time.monotonic()
    summary = Summary(run_id=f"demo-{time.strftime('%Y%m%d-%H%M%S')}", corpus=str(corpus()))
    with summary.stage("start the stack"):
        up(home=home)
    try:
        running = set(available_services())
        stages(home, running, summary)
        table = Table("stage", "topic in", "service", "state")
        for service, topic in zip(SERVICES, topics.PIPELINE, strict=True):
            state = (
                "[green]running[/green]" if service in running else "[yellow]not built yet[/yellow]"
            )
            table.add_row(str(SERVICES.index(service) + 1), topic, service, state)
        console.print(table)
        topics_(home=home)
        missing = [s for s in SERVICES if s not in running]
        if missing:
            console.print(
                f"[yellow]Honest summary:[/yellow] run {summary.run_id} went as far as the "
                f"services built so far; not built yet: {', '.join(missing)}, so no gRPC "
                "answer from the tuned model."
            )
    finally:
        down(home=home)
        # Written whatever happened: the stages up to a failure are what explains it.
        summary.wall_s = round(time.monotonic() - started, 2)
        path = home.resolve() / "summary.json"
        path.write_text(summary.model_dump_json(indent=2) + "\n")
        console.print(f"summary: {path}")


if __name__ == "__main__":
    app()
