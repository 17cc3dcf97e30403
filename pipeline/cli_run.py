"""`distillery run CONFIG.yaml`: one file describes a run; the stack starts with the file's
settings, a driver process publishes the run's sources and follows it through every topic to
the served adapter, and this terminal shows it live until it ends (Ctrl-C only stops
watching). `--detach` returns at once; `distillery status RUN` attaches again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline import monitor
from pipeline.cli_common import DEFAULT_HOME, Failure, HomeOption, console, fail, kafka_settings
from pipeline.cli_stages import Recorder, Summary, describe_source, drive
from pipeline.embedded import SERVICES, StackState, pid_alive
from pipeline.messages import FolderSource
from pipeline.runconfig import RUN_ID, RunConfig, RunConfigError, apply, env_file, load_run_config

#: Seconds over which the live view averages each stage's rate.
RATE_WINDOW_S = 5.0


def run(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="The run's YAML file.")],
    detach: Annotated[
        bool, typer.Option(help="Start the run and return; `distillery status RUN` follows it.")
    ] = False,
    env: Annotated[
        str | None,
        typer.Option(metavar="SERVICE", help="Print a service's settings from the file as "
                     "NAME=value lines (a deployment's .env or ConfigMap) and exit."),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="The run's id, instead of the file's (or its name).")
    ] = None,
    driver: Annotated[bool, typer.Option("--driver", hidden=True)] = False,
    home: HomeOption = DEFAULT_HOME,
) -> None:  # fmt: skip
    """Run the pipeline as CONFIG describes it, from its sources to a served adapter."""
    home = home.resolve()
    external = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    try:
        config = load_run_config(config_path, embedded=not external and env is None)
    except RunConfigError as exc:
        raise fail(str(exc)) from None
    if env is not None:
        if env not in SERVICES:
            raise fail(f"--env wants one of {', '.join(SERVICES)}; got {env!r}")
        sys.stdout.write(env_file(config, env))
        return
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise fail(f"--run-id {run_id!r}: letters, digits, '.', '_' and '-' (up to 128)")
    run_id = run_id or config.run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    if driver:
        _drive(config, run_id, home)
        return
    current = load_summary(home, run_id)
    if current and current.state == "running" and _driving(current):
        console.print(f"run {run_id} is already going here; following it")
        attach(home, run_id)
        return
    for source in config.sources:
        if isinstance(source, FolderSource) and not external and not Path(source.path).is_dir():
            raise fail(f"sources: {source.path} is not a directory")
    _start_stack(config, home, external)
    settings = kafka_settings(home)
    summary = Summary(run_id=run_id, description=config.description,
                      sources=[describe_source(s) for s in config.sources],
                      baseline=monitor.topic_ends(settings))  # fmt: skip
    folder = run_dir(home, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    save_summary(home, summary)
    argv = [sys.executable, "-m", "pipeline.cli", "run", str(config_path.resolve()), "--driver",
            "--run-id", run_id, "--home", str(home)]  # fmt: skip
    with open(folder / "run.log", "ab") as out:
        subprocess.Popen(  # noqa: S603 - ourselves, detached so the run outlives this terminal
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "COLUMNS": "120"},
        )  # fmt: skip
    if detach:
        console.print(
            f"run [bold]{run_id}[/bold] started; `distillery status {run_id} --home {home}` "
            f"follows it; its log: {folder / 'run.log'}"
        )
        return
    attach(home, run_id)


def _start_stack(config: RunConfig, home: Path, external: bool) -> None:
    """The embedded stack with the file's settings: started here, or the one already up if it
    was started with the same ones. A deployed stack keeps its own."""
    from pipeline.cli import up  # the stack's commands live with the CLI's entry point

    env = config.environment()
    if external:
        if env:
            console.print(
                "[yellow]KAFKA_BOOTSTRAP_SERVERS is set: the deployed services' own settings "
                "decide, not this file's sections[/yellow] (`distillery run CONFIG --env "
                "SERVICE` prints a section for its .env or ConfigMap)"
            )
        return
    marker = home / "runs" / "stack-settings.json"
    state = StackState.load(home)
    if state and pid_alive(state.supervisor_pid):
        # The settings a run started this very stack with (by its supervisor's pid).
        recorded = json.loads(marker.read_text()) if marker.exists() else {}
        ours = recorded.get("supervisor_pid") == state.supervisor_pid
        started_with = recorded.get("environment") if ours else {}
        if env and started_with != env:  # a file that sets nothing takes the stack as it is
            raise fail(
                f"the stack up in {home} was started with other settings than this file's; "
                f"stop it (`distillery down --home {home}`) or give another --home"
            )
        return
    apply(env)  # the supervisor passes its environment on to the services
    up(home=home)
    marker.parent.mkdir(parents=True, exist_ok=True)
    state = StackState.load(home)
    assert state is not None  # noqa: S101 - up() returned: the stack is ready
    marker.write_text(json.dumps({"supervisor_pid": state.supervisor_pid, "environment": env},
                                 indent=2, sort_keys=True) + "\n")  # fmt: skip


def _drive(config: RunConfig, run_id: str, home: Path) -> None:
    """The detached driver: every stage, the summary saved at each step."""
    apply(config.environment())  # what the services were given, for what it tells
    summary = load_summary(home, run_id) or Summary(run_id=run_id)
    summary.driver_pid = os.getpid()
    recorder = Recorder(summary, lambda s: save_summary(home, s))
    recorder.save()
    try:
        drive(config, run_id, home, recorder)
        summary.state = "done"
    except Failure as exc:
        summary.state, summary.error = "failed", exc.message
        raise
    except Exception as exc:  # recorded for `status RUN`, then raised as it came
        summary.state, summary.error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        recorder.save()


def run_dir(home: Path, run_id: str) -> Path:
    return home / "runs" / run_id


def load_summary(home: Path, run_id: str) -> Summary | None:
    try:
        return Summary.model_validate_json((run_dir(home, run_id) / "summary.json").read_text())
    except FileNotFoundError:
        return None


def save_summary(home: Path, summary: Summary) -> None:
    path = run_dir(home, summary.run_id) / "summary.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(summary.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)  # readers never see half a file


def _driving(summary: Summary) -> bool:
    """Whether a driver is (or may still be, just started) at work on the run."""
    return summary.driver_pid is None or pid_alive(summary.driver_pid)


def attach(home: Path, run_id: str) -> None:
    """Follow a run live until it ends; then its summary and how to call the served model."""
    summary = load_summary(home, run_id)
    if summary is None:
        runs = sorted(p.name for p in (home / "runs").glob("*/") if p.is_dir())
        raise fail(f"no run {run_id!r} in {home}" + (f"; there are: {', '.join(runs)}" if runs
                   else ""))  # fmt: skip
    if summary.state == "running":
        try:
            _follow(home, run_id)
        except KeyboardInterrupt:
            console.print(f"stopped watching; the run goes on (`distillery status {run_id} "
                          f"--home {home}` follows it again)")  # fmt: skip
            return
        summary = load_summary(home, run_id) or summary
    print_outcome(home, summary)
    if summary.state == "failed":
        raise typer.Exit(1)


def _follow(home: Path, run_id: str) -> None:
    settings = kafka_settings(home)
    urls = monitor.endpoints(StackState.load(home))
    seen: deque[monitor.Observation] = deque()
    started = time.monotonic()
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while True:
            summary = load_summary(home, run_id)
            assert summary is not None  # noqa: S101 - it existed a moment ago; runs stay
            now = monitor.observe(settings, urls, summary.baseline)
            while seen and now.at - seen[0].at > RATE_WINDOW_S:
                seen.popleft()
            live.update(_view(home, summary, now, seen[0] if seen else None))
            seen.append(now)
            if summary.state != "running":
                return
            if not _driving(summary) or (summary.driver_pid is None
                                         and time.monotonic() - started > 60):  # fmt: skip
                raise fail(f"the driver of run {run_id} is gone without finishing; see "
                           f"{run_dir(home, run_id) / 'run.log'}")  # fmt: skip
            time.sleep(1.0)


def _view(
    home: Path, summary: Summary, now: monitor.Observation, before: monitor.Observation | None
) -> Group:
    head = Text.assemble(("run ", "dim"), (summary.run_id, "bold"),
                         f"  {summary.description}" if summary.description else "",
                         (f"  {summary.wall_s:.0f}s", "dim"))  # fmt: skip
    log = run_dir(home, summary.run_id) / "run.log"
    lines = log.read_text(errors="replace").splitlines()[-6:] if log.exists() else []
    tail = Text("\n".join(line[:160] for line in lines), style="dim")
    return Group(head, monitor.table(now, before, summary.states()), tail)


def print_outcome(home: Path, summary: Summary) -> None:
    """The summary of a run that ended, and how to call what it serves."""
    table = Table("stage", "state", "seconds", "counts")
    for stage in summary.stages:
        counts = ", ".join(f"{k} {v}" for k, v in stage.counts.items()
                           if not (k.endswith("_replayed") and not v))  # fmt: skip
        table.add_row(stage.name, stage.state, f"{stage.seconds:.1f}", counts)
    console.print(table)
    for name, reason in summary.dead_lettered.items():
        console.print(f"dead-lettered {name}: {reason}", soft_wrap=True)
    if summary.state == "failed":
        log = run_dir(home, summary.run_id) / "run.log"
        console.print(f"[bold red]run {summary.run_id} failed[/bold red]: {summary.error}; "
                      f"see {log}", soft_wrap=True)  # fmt: skip
        return
    dataset = summary.dataset
    console.print(
        f"run [bold]{summary.run_id}[/bold] done in {summary.wall_s:.0f}s"
        + (f": dataset {dataset.id} ({dataset.train_n} train, {dataset.eval_n} eval pairs)"
           if dataset else "")
        + (f", verdict [bold]{summary.verdict}[/bold]" if summary.verdict else ""),
        soft_wrap=True,
    )  # fmt: skip
    if summary.address:
        console.print(f"served at [bold]{summary.address}[/bold] (gRPC) as {summary.served}; "
                      "for example:")  # fmt: skip
        console.print(f"  distillery generate --home {home} \"question: What is LoRA? answer:\"",
                      soft_wrap=True, highlight=False, markup=False)  # fmt: skip
        console.print(
            f"  grpcurl -plaintext -d '{{\"prompt\": \"question: What is LoRA? answer:\", "
            f"\"model\": \"latest\"}}' {summary.address} "
            "distillery.inference.v1.Inference/GenerateStream",
            soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip
        console.print(f"the stack goes on serving; `distillery down --home {home}` stops it")
