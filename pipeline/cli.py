"""`distillery`: start and stop the embedded stack, and look at what flows through the topics."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from kafka.errors import KafkaError
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline import bus, monitor, topics
from pipeline.cli_common import (
    DEFAULT_HOME,
    HomeOption,
    console,
    fail,
    kafka_settings,
)
from pipeline.cli_curate import curate
from pipeline.cli_demo import demo
from pipeline.cli_generate import generate
from pipeline.cli_report import report
from pipeline.cli_run import attach, load_summary, run
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
from pipeline.settings import KafkaSettings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(scrape, name="scrape")
app.command()(curate)
app.command()(train)
app.command()(report)
app.command()(generate)
app.command()(run)
app.command()(demo)


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
def status(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="Follow this run (`distillery run`).")
    ] = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Where the broker is, which service processes are alive and the runs here; with RUN,
    follow that run live (again) until it ends."""
    home = home.resolve()
    if run_id is not None:
        attach(home, run_id)
        return
    state = StackState.load(home)
    if state is None or not pid_alive(state.supervisor_pid):
        raise fail("no stack is running here (`distillery up` starts one)")
    _print_status(state)
    runs = Table("run", "state", "stage", "verdict", "seconds")
    for folder in sorted((home / "runs").glob("*/")):
        summary = load_summary(home, folder.name)
        if summary is not None:
            stage = summary.stages[-1].name if summary.stages else "-"
            runs.add_row(summary.run_id, summary.state, stage, summary.verdict or "-",
                         f"{summary.wall_s:.0f}")  # fmt: skip
    if runs.rows:
        console.print(runs)


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
    watch: Annotated[
        bool, typer.Option(help="Redraw the stages every second (Ctrl-C ends).")
    ] = False,
) -> None:  # fmt: skip
    """Every stage: messages in, handled and out, rate, lag, dead letters, retries and the
    service's own figures; then each topic and each consumer group's committed offsets."""
    home = home.resolve()
    settings = kafka_settings(home)
    if create:
        try:
            made = bus.ensure_topics(settings, topics.all_topics(), replication)
        except KafkaError as exc:
            raise fail(f"cannot create topics on {settings.bootstrap_servers}: {exc}") from None
        console.print(f"created {', '.join(made)}" if made else "every topic exists already")
    # The metrics endpoints are the embedded stack's; a deployed stack's are Prometheus's.
    urls = {} if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else monitor.endpoints(
        StackState.load(home))  # fmt: skip
    try:
        if watch:
            _watch(settings, urls)
            return
        console.print(monitor.table(monitor.observe(settings, urls)))
        _print_topics(settings)
    except KafkaError as exc:
        raise fail(f"cannot read {settings.bootstrap_servers}: {exc}") from None


def _watch(settings: KafkaSettings, urls: dict[str, list[str]]) -> None:
    before = None
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                now = monitor.observe(settings, urls)
                live.update(monitor.table(now, before))
                before = now
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass


def _print_topics(settings: KafkaSettings) -> None:
    reader = bus.consumer(settings, group_id=None)
    try:
        names = sorted(reader.topics())
        tps = [tp for name in names for tp in bus.partitions_of(reader, name)]
        ends = bus.end_offsets(reader, tps)
    finally:
        reader.close()
    lags = bus.group_lags(settings)
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
    topic: Annotated[
        str | None, typer.Argument(help="A topic, whole messages; none: every stage's topic "
                                   "and DLQ, a line per message.")] = None,
    home: HomeOption = DEFAULT_HOME,
    last: Annotated[
        int, typer.Option("-n", "--last", help="Start this many back per partition.")
    ] = 10,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", "-b")] = False,
    follow: Annotated[bool, typer.Option(help="Keep printing new messages.")] = True,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's messages.")] = None,
) -> None:  # fmt: skip
    """Print a topic's messages (or every stage's, a line each), then follow (Ctrl-C stops)."""
    settings = kafka_settings(home.resolve())
    names = [topic] if topic else list(topics.all_topics())
    # Ends from a client of their own, as in read_all: the embedded broker serves a client
    # that goes on to read the partitions it probed from few of them.
    probe = bus.consumer(settings, group_id=None)
    try:
        tps = [tp for name in names for tp in bus.partitions_of(probe, name)]
        ends = bus.end_offsets(probe, tps) if tps else {}
    finally:
        probe.close()
    if not tps:
        raise fail(f"no topic {topic!r}; `distillery topics` lists them")
    reader = bus.consumer(settings, group_id=None)
    try:
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, 0 if from_beginning else max(0, ends[tp] - last))
        idle_since = time.monotonic()
        while follow or time.monotonic() - idle_since < 1.0:
            batch = reader.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if run_id is None or _run_of(record.value) == run_id:
                        (_print_record if topic else _print_line)(record)
                idle_since = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


def _run_of(value: bytes | None) -> str | None:
    """The run a message belongs to (a dead letter's: its original's)."""
    try:
        message = json.loads(value or b"")
        if message.get("schema", "").startswith("dlq/"):
            message = json.loads(base64.b64decode(message.get("value_b64") or b""))
        run = message.get("run_id")
    except (ValueError, AttributeError):
        return None
    return run if isinstance(run, str) else None


#: What one line shows of each kind of message.
_BRIEF = {
    "source-request": lambda m: f"{m['run_id']}: {m['source'].get('kind')} "
                                + json.dumps({k: v for k, v in m["source"].items() if k != "kind"}),
    "raw-doc": lambda m: f"{m['doc_id'][:12]} {m['content_type']} {m['size']:,} B "
                         f"{m['source'].get('title') or m['source']['url']}",
    "chunk": lambda m: f"{m['chunk_id'][:12]}…:{m['index']}/{m['total']} "
                              f"{m['n_tokens']} tokens: {m['text'][:80]!r}",
    "pair": lambda m: f"[{m['task']}] {m['instruction'][:70]!r} → {m['output'][:50]!r}",
    "checkpoint": lambda m: f"{m['checkpoint_id']} {m['method']} on {m['base_model']}, "
                            f"dataset {m['dataset']['id']} ({m['dataset']['train_n']} train)",
    "eval-result": lambda m: f"{m['checkpoint_id']} {m['verdict']}: {m['reason'][:100]}",
    "dlq": lambda m: f"{m['reason']} from {m['service']}: {m['error'][:100]}",
}  # fmt: skip


def _print_line(record: object) -> None:
    head = f"[dim]{record.topic}[{record.partition}]@{record.offset}[/dim]"  # type: ignore[attr-defined]
    try:
        message = json.loads(record.value)  # type: ignore[attr-defined]
        line = _BRIEF[message["schema"].split("/")[0]](message)
    except (TypeError, ValueError, KeyError, AttributeError):
        line = repr(record.value[:120])  # type: ignore[attr-defined]
    console.print(head, Text(line), highlight=False, no_wrap=True, overflow="ellipsis")


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


if __name__ == "__main__":
    app()
