"""`distillery demo` (`make demo`): the whole pipeline on the embedded stack over a sample
corpus, offline, each stage told as it happens, then the stack stopped and a summary written
(`summary.json` in the demo's home)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.cli_common import DEFAULT_HOME, HomeOption, console
from pipeline.cli_stages import Recorder, Summary, describe_source, drive
from pipeline.demo_model import HUB_MODEL, SMOKE_LABEL, hub_reachable, smoke_model
from pipeline.messages import FolderSource
from pipeline.runconfig import RunConfig


def _shared() -> Path:
    return Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared"))


def demo_environment(home: Path) -> str | None:
    """What the demo's services are given, unless chosen already: the shared tiny model and
    ARC when present (tests and CI); else a small instruct model from the hub, or offline a
    random smoke model (whose warning this returns); ARC left out without a local copy."""
    model = _shared() / "models" / "stories260K"
    warning = None
    if "DISTILLERY_BASE_MODEL" in os.environ:
        pass
    elif model.is_dir():
        os.environ["DISTILLERY_BASE_MODEL"] = str(model.resolve())
    elif hub_reachable():
        os.environ["DISTILLERY_BASE_MODEL"] = HUB_MODEL
    else:
        from pipeline.sample_corpus import documents  # the demo extra

        texts = (p.read_text(encoding="utf-8") for p in documents())
        os.environ["DISTILLERY_BASE_MODEL"] = str(smoke_model(home / "smoke-model", texts))
        warning = (f"{SMOKE_LABEL}: no base model is reachable (no DISTILLERY_BASE_MODEL, no "
                   f"{model}, no hub), so the demo tunes random weights: every stage runs, "
                   "the answers are noise")  # fmt: skip
    arc = _shared() / "data" / "arc"
    if arc.is_dir():
        os.environ.setdefault("EVALUATOR_ARC_DIR", str(arc.resolve()))
        os.environ.setdefault("EVALUATOR_ARC_LIMIT", "200")
    elif "EVALUATOR_ARC_DIR" not in os.environ:
        os.environ.setdefault("EVALUATOR_ARC_TASKS", "[]")
    os.environ.setdefault("EVALUATOR_MAX_NEW_TOKENS", "48")
    return warning


def corpus(home: Path) -> Path:
    """The shared real papers when present (tests and CI), else this project's own documents
    rendered as HTML and PDF in the demo's home."""
    shared = _shared() / "data" / "pdfs"
    if shared.is_dir():
        return shared.resolve()
    from pipeline.sample_corpus import render  # the demo extra

    folder = home / "corpus"
    render(folder)
    return folder


def demo(home: HomeOption = DEFAULT_HOME / "demo") -> None:
    """Run the pipeline on the embedded stack over a sample corpus and report every stage."""
    from pipeline.cli import down, topics_, up  # the stack's commands

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    folder = corpus(home)
    warning = demo_environment(home)
    if warning:
        console.print(f"[bold yellow]{warning}[/bold yellow]")
    run_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = RunConfig(run_id=run_id, description="the demo",
                       sources=[FolderSource(path=str(folder))])  # fmt: skip
    summary = Summary(run_id=run_id, description=config.description,
                      sources=[describe_source(s) for s in config.sources],
                      base_model=os.environ["DISTILLERY_BASE_MODEL"], warning=warning)  # fmt: skip
    path = home / "summary.json"
    recorder = Recorder(summary, lambda s: path.write_text(s.model_dump_json(indent=2) + "\n"))
    try:
        with recorder.stage("start the stack"):
            up(home=home)
        drive(config, run_id, home, recorder)
        topics_(home=home)
        summary.state = "done"
    except BaseException:
        summary.state = "failed"
        raise
    finally:
        down(home=home)
        # Written whatever happened: the stages up to a failure are what explains it.
        recorder.save()
        if warning:
            console.print(f"[bold yellow]{warning}[/bold yellow]")
        console.print(f"summary: {path}")
