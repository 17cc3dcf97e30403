"""The demo's stages (`distillery demo`): a sample corpus through every service built so far on
the embedded stack, each stage waited for and reported, and a summary of them all (times and
counts per stage) that the demo writes beside the stack's state."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from pydantic import BaseModel

from pipeline import bus, topics
from pipeline.cli_common import blob_store, console, fail, kafka_settings, read_all
from pipeline.cli_scrape import submit
from pipeline.cli_train import request_training
from pipeline.inference_client import InferenceClient
from pipeline.messages import (
    Checkpoint,
    DlqRecord,
    EvalResult,
    FolderSource,
    Pair,
    ParsedChunk,
    RawDoc,
    decode,
)
from pipeline.settings import KafkaSettings


def _shared() -> Path:
    return Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared"))


def demo_environment() -> None:
    """What the demo's services are given, unless chosen already: the shared tiny model and
    ARC when present (tests and CI); ARC left out otherwise, since the demo runs offline."""
    model = _shared() / "models" / "stories260K"
    if model.is_dir():
        os.environ.setdefault("DISTILLERY_BASE_MODEL", str(model.resolve()))
    arc = _shared() / "data" / "arc"
    if arc.is_dir():
        os.environ.setdefault("EVALUATOR_ARC_DIR", str(arc.resolve()))
        os.environ.setdefault("EVALUATOR_ARC_LIMIT", "200")
    elif "EVALUATOR_ARC_DIR" not in os.environ:
        os.environ.setdefault("EVALUATOR_ARC_TASKS", "[]")
    os.environ.setdefault("EVALUATOR_MAX_NEW_TOKENS", "48")


def corpus() -> Path:
    """The shared real papers when present (tests and CI), else this project's own docs."""
    shared = _shared() / "data" / "pdfs"
    return (shared if shared.is_dir() else Path("docs")).resolve()


class Stage(BaseModel):
    name: str
    seconds: float = 0.0
    counts: dict[str, int | float | str] = {}


class Summary(BaseModel):
    """What the demo did: `summary.json` in its home, for people and for tests."""

    run_id: str
    corpus: str
    stages: list[Stage] = []
    #: Documents the extractor refused, by file name, with the reason.
    dead_lettered: dict[str, str] = {}
    verdict: str | None = None
    #: The model that answered at the end, and its answer.
    served: str | None = None
    answer: str | None = None
    wall_s: float = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, int | float | str]]:
        """Times a stage; its counts go in the dict given."""
        counts: dict[str, int | float | str] = {}
        started = time.monotonic()
        try:
            yield counts
        finally:
            self.stages.append(Stage(name=name, seconds=round(time.monotonic() - started, 2),
                                     counts=counts))  # fmt: skip


def stages(home: Path, running: set[str], summary: Summary) -> None:
    """Every stage whose service runs, in order, each recorded in `summary`."""
    folder, run_id = Path(summary.corpus), summary.run_id
    settings = kafka_settings(home.resolve())
    with summary.stage("scrape") as counts:
        console.print(f"[bold]1. scrape[/bold] the folder {folder}")
        submit(FolderSource(path=str(folder)), run_id, True, "scraper", home, timeout_s=600)
        counts["documents"] = sum(1 for r in read_all(settings, topics.RAW_DOCS)
                                  if decode(RawDoc, r.value).run_id == run_id)  # fmt: skip
    if "extractor" in running:
        with summary.stage("extract") as counts:
            console.print(f"[bold]2. extract[/bold] {topics.RAW_DOCS} → {topics.PARSED_TEXT}")
            drain(settings, "extractor", topics.RAW_DOCS, timeout_s=600)
            for dead in read_all(settings, topics.dlq(topics.RAW_DOCS)):
                record = decode(DlqRecord, dead.value)
                doc = decode(RawDoc, record.original_value())
                if doc.run_id == run_id:
                    name = doc.source.url.rsplit("/", 1)[-1]
                    summary.dead_lettered[name] = record.reason
                    console.print(f"  dead-lettered {name}: {record.reason}", soft_wrap=True)
            counts["chunks"] = sum(1 for r in read_all(settings, topics.PARSED_TEXT)
                                   if decode(ParsedChunk, r.value).run_id == run_id)  # fmt: skip
            counts["dead_lettered"] = len(summary.dead_lettered)
    if "synthesizer" in running:
        with summary.stage("synthesize") as counts:
            console.print(
                f"[bold]3. synthesize[/bold] {topics.PARSED_TEXT} → {topics.PAIRS} "
                "(reading-comprehension: tasks mined from the text, no LLM)"
            )
            drain(settings, "synthesizer", topics.PARSED_TEXT, timeout_s=600)
            pairs = [p for p in (decode(Pair, r.value) for r in read_all(settings, topics.PAIRS))
                     if p.run_id == run_id]  # fmt: skip
            tasks = Counter(p.task for p in pairs)
            console.print(
                f"  {len(pairs)} pairs: " + ", ".join(f"{t} {n}" for t, n in tasks.most_common())
            )
            if pairs:
                sample = pairs[len(pairs) // 2]
                console.print(
                    f"  e.g. [{sample.task}] {sample.instruction} → {sample.output}",
                    soft_wrap=True,
                )
            counts["pairs"] = len(pairs)
    if "trainer" in running:
        with summary.stage("train") as counts:
            checkpoint = train(run_id, home, settings)
            metrics = checkpoint.metrics
            counts |= {"train_pairs": checkpoint.dataset.train_n,
                       "eval_pairs": checkpoint.dataset.eval_n, "steps": int(metrics["steps"]),
                       "eval_loss_before": round(metrics["eval_loss_before"], 4),
                       "eval_loss_after": round(metrics["eval_loss_after"], 4)}  # fmt: skip
        if "evaluator" in running:
            with summary.stage("evaluate") as counts:
                result = evaluate(checkpoint, home, settings)
                summary.verdict = counts["verdict"] = result.verdict
            if "inference" in running:
                with summary.stage("serve") as counts:
                    summary.served, summary.answer = serve(result, home)
                    counts["answer_chars"] = len(summary.answer)


def train(run_id: str, home: Path, settings: KafkaSettings) -> Checkpoint:
    """Stage 4: the trainer curates the run's pairs into a snapshot and trains an adapter."""
    console.print(
        f"[bold]4. train[/bold] {topics.PAIRS} → {topics.CHECKPOINTS}: the run's pairs curated "
        "(duplicates, ROUGE-L near-duplicates, split by document, contamination check) and "
        "trained with LoRA on CPU"
    )
    drain(settings, "trainer", topics.PAIRS, timeout_s=600)
    request_training(run_id, wait=True, timeout_s=1800, home=home)
    checkpoints = [decode(Checkpoint, r.value) for r in read_all(settings, topics.CHECKPOINTS)]
    mine = [c for c in checkpoints if c.run_id == run_id]
    if not mine:
        raise fail(f"run {run_id} was trained, but no checkpoint of it is on {topics.CHECKPOINTS}")
    checkpoint = mine[-1]
    dataset, metrics = checkpoint.dataset, checkpoint.metrics
    console.print(
        f"  dataset {dataset.id}: {dataset.train_n} train, {dataset.eval_n} eval pairs; "
        f"card {dataset.uri}/README.md",
        soft_wrap=True,
    )
    console.print(
        f"  {checkpoint.method} on {checkpoint.base_model}: {metrics['steps']:.0f} steps, "
        f"held-out loss {metrics['eval_loss_before']:.3f} → {metrics['eval_loss_after']:.3f}"
        f" per answer token",
        soft_wrap=True,
    )
    return checkpoint


def evaluate(checkpoint: Checkpoint, home: Path, settings: KafkaSettings) -> EvalResult:
    """Stage 5: base vs tuned through lm-eval (ARC, the domain test on the held-out documents'
    pairs, their perplexity), the verdict and the report."""
    from pipeline.cli_report import report

    arc = os.environ.get("EVALUATOR_ARC_DIR")
    console.print(
        f"[bold]5. evaluate[/bold] {topics.CHECKPOINTS} → {topics.EVAL_RESULTS}: base vs tuned "
        f"with lm-eval: {'ARC from ' + arc if arc else 'no ARC (offline, no local copy)'}, the "
        "domain test on the held-out documents' pairs (ROUGE), their perplexity"
    )
    drain(settings, "evaluator", topics.CHECKPOINTS, timeout_s=1800)
    results = [decode(EvalResult, r.value) for r in read_all(settings, topics.EVAL_RESULTS)]
    mine = [e for e in results if e.checkpoint_id == checkpoint.checkpoint_id]
    if not mine:
        dead = read_all(settings, topics.dlq(topics.CHECKPOINTS))
        why = [f"{d.reason}: {d.error}" for d in (decode(DlqRecord, r.value) for r in dead)
               if d.original_key == checkpoint.run_id]  # checkpoints are keyed by run  # fmt: skip
        raise fail(f"no evaluation of {checkpoint.checkpoint_id} on {topics.EVAL_RESULTS}"
                   + (f"; dead-lettered: {why[-1]}" if why else ""))  # fmt: skip
    report(checkpoint.checkpoint_id, home=home, examples=2)
    return mine[-1]


def serve(result: EvalResult, home: Path) -> tuple[str, str]:
    """Stage 6: the inference service loads a promoted adapter as `latest`; a streamed
    answer to a held-out question over gRPC, from the tuned model (or the base, if rejected).
    The model that answered, and its answer."""
    from pipeline.cli_generate import embedded_address
    from services.evaluator.evaluation import stored_report

    address = embedded_address(home)
    verdict = "promoted" if result.verdict == "promote" else "rejected"
    console.print(f"[bold]6. serve[/bold] {topics.EVAL_RESULTS} → gRPC at {address}: "
                  f"{result.checkpoint_id} {verdict}")  # fmt: skip
    wanted = result.checkpoint_id if result.verdict == "promote" else "base"
    with InferenceClient(address, timeout_s=60) as client:
        deadline = time.monotonic() + 300
        while True:
            try:
                serving = client.generate("Hello", max_tokens=1).model
            except grpc.RpcError:
                serving = ""  # still starting
            if serving == wanted:
                break
            if time.monotonic() > deadline:
                raise fail(f"the inference service serves {serving or 'nothing'}, not {wanted}")
            time.sleep(1)
        report = stored_report(blob_store(home), result.checkpoint_id)
        examples = (report.improved or report.degraded) if report else []
        question = examples[0].prompt if examples else "question: What is LoRA? answer:"
        console.print(f"  latest = {wanted}; asked: {question}", soft_wrap=True)
        console.print("  answer: ", end="")
        answer = []
        for piece in client.stream(question, max_tokens=48, stop=["\n\n"]):
            console.print(piece, end="", soft_wrap=True, highlight=False, markup=False)
            answer.append(piece)
        console.print()
    return wanted, "".join(answer)


def drain(settings: KafkaSettings, group: str, topic: str, timeout_s: float) -> None:
    """Wait until `group` has committed everything `topic` holds, showing how far it is."""
    reader = bus.consumer(settings, group_id=None)
    try:
        ends = bus.end_offsets(reader, bus.partitions_of(reader, topic))
    finally:
        reader.close()
    total = sum(ends.values())
    deadline = time.monotonic() + timeout_s
    with console.status(f"{group}: 0/{total}") as progress:
        while True:
            committed = bus.committed(settings, group)
            done = sum(min(committed.get(tp, 0), end) for tp, end in ends.items())
            progress.update(f"{group}: {done}/{total} messages of {topic} handled")
            if done >= total:
                break
            if time.monotonic() > deadline:
                raise fail(
                    f"{group} handled {done} of {total} messages of {topic} in {timeout_s:.0f}s"
                )
            time.sleep(0.5)
    console.print(f"{group}: all {total} messages of {topic} handled")
