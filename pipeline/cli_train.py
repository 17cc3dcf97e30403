"""`distillery train`: train a snapshot here, or ask the trainer service to train a run now,
showing the loss, tokens/s and ETA as it goes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.cli_common import DEFAULT_HOME, HomeOption, blob_store, console, fail
from pipeline.errors import BadInput


def train(
    snapshot: Annotated[
        Path | None,
        typer.Argument(help="A curated snapshot directory (`distillery curate`) to train here."),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="A recipe file or a bundled recipe's name [default: stories260k-lora]."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the adapter and checkpoints go (resumes there).")
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            envvar="DISTILLERY_BASE_MODEL",
            help="Replaces the recipe's base model (with --run the service's settings decide).",
        ),
    ] = None,
    run: Annotated[
        str | None, typer.Option(help="Ask the trainer service to train this run now.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="With --run: follow it to the checkpoint.")] = True,
    timeout: Annotated[float, typer.Option(help="With --run: seconds to wait.")] = 3600,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Train a snapshot with a recipe here (LoRA, QLoRA or full), or, with --run, have the
    trainer service take a snapshot of a run's pairs and train it without waiting for its
    triggers."""
    if (snapshot is None) == (run is None):
        raise fail("give a SNAPSHOT directory to train here, or --run RUN for the service")
    if run is not None:
        if recipe or out:
            raise fail("with --run the trainer service's recipe decides; drop --recipe and --out")
        request_training(run, wait=wait, timeout_s=timeout, home=home)
        return
    assert snapshot is not None  # noqa: S101 - one of the two, checked above
    if out is None:
        raise fail("training a snapshot here needs --out DIR")
    if not (snapshot / "manifest.json").is_file():
        raise fail(f"{snapshot} is not a snapshot (no manifest.json): see `distillery curate`")
    _local(snapshot, recipe or "stories260k-lora", out, base_model)


def _local(snapshot: Path, recipe_name: str, out: Path, base_model: str | None) -> None:
    from services.trainer.recipe import load_recipe  # the trainer extra
    from services.trainer.train import Interrupted, last_checkpoint, run
    from services.trainer.train import Progress as Step

    try:
        recipe = load_recipe(Path(recipe_name))
    except ValueError as exc:
        raise fail(str(exc)) from None
    if base_model:
        recipe = recipe.model_copy(update={"base_model": base_model})
    resuming = last_checkpoint(out / "checkpoints")
    console.print(
        f"training {recipe.name} ({recipe.method}) on {snapshot} from {recipe.base_model}"
        + (f", resuming from {resuming.name}" if resuming else "")
    )
    with _progress() as bar:
        task = bar.add_task("starting", total=None)

        def show(p: Step) -> None:
            bar.update(task, completed=p.step, total=p.total_steps, description=_line(vars(p)))

        try:
            result = run(recipe, snapshot, out, progress=show)
        except Interrupted as exc:
            raise fail(f"{exc}: run the same command again to resume") from None
        except (ValueError, OSError) as exc:  # a snapshot that fits nothing; no such model
            raise fail(str(exc)) from None
    before, after = result.eval_loss_before, result.eval_loss_after
    console.print(
        f"{result.steps} steps in {result.seconds:.0f}s, {result.tokens_per_s:,.0f} tokens/s; "
        f"train loss {result.train_loss:.4f}"
        + (f"; held-out loss {before:.4f} → {after:.4f}" if before and after else "")
    )
    console.print(f"adapter: {result.adapter_dir}")


def request_training(run_id: str, *, wait: bool, timeout_s: float, home: Path) -> None:
    """Ask the trainer service to train `run_id` now; with `wait`, follow it to the end."""
    from services.trainer.store import Request, TrainerStore, check_run_id  # the blob layout

    store = TrainerStore(blob_store(home))
    try:
        request = Request(id=uuid.uuid4().hex, run_id=check_run_id(run_id))
    except BadInput as exc:
        raise fail(str(exc)) from None
    store.request(request)
    console.print(f"asked the trainer to train run {run_id} ({store.count(run_id)} pairs stored)")
    if not wait:
        return
    deadline = time.monotonic() + timeout_s
    with _progress() as bar:
        task = bar.add_task("waiting for the trainer", total=None)
        while (state := store.state(run_id)).request_id != request.id:
            if time.monotonic() > deadline:
                raise fail(f"the trainer did not finish run {run_id} in {timeout_s:.0f}s")
            progress = store.progress(run_id)
            if progress and progress.get("status") == "training":
                bar.update(task, completed=progress["step"], total=progress["total_steps"],
                           description=_line(progress))  # fmt: skip
            time.sleep(0.5)
    outcome = state.request_outcome
    assert outcome is not None  # noqa: S101 - saved with the request id
    if outcome.outcome != "trained":
        raise fail(
            f"run {run_id}: {outcome.outcome}" + (f": {outcome.reason}" if outcome.reason else "")
        )
    console.print(
        f"run {run_id}: checkpoint {outcome.checkpoint_id}, adapter {outcome.adapter_uri}"
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    )


def _line(p: dict[str, Any]) -> str:
    return (
        f"step {p['step']}/{p['total_steps']}  loss {p['loss']:.4f}  "
        f"{p['tokens_per_s']:,.0f} tokens/s  ETA {p['eta_s']:.0f}s"
    )
