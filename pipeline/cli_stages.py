"""A run's stages, in order (`distillery run`, `distillery demo`): its sources published, then
each service waited for until it has handled everything, what it made counted and told, and
every step recorded in the run's summary, which is saved at each change for `distillery status
RUN` and for tests."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import grpc
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import BaseModel

from pipeline import bus, topics
from pipeline.cli_common import blob_store, console, fail, kafka_settings, read_all
from pipeline.cli_scrape import submit
from pipeline.cli_train import request_training
from pipeline.errors import BadInput
from pipeline.inference_client import InferenceClient
from pipeline.messages import (
    Checkpoint,
    DatasetRef,
    DlqRecord,
    EvalResult,
    M,
    Pair,
    ParsedChunk,
    RawDoc,
    decode,
)
from pipeline.runconfig import RunConfig
from pipeline.settings import KafkaSettings

State = Literal["running", "done", "failed"]
#: The stages of a run, with the service each waits for.
STAGES = {"scrape": "scraper", "extract": "extractor", "synthesize": "synthesizer",
          "train": "trainer", "evaluate": "evaluator", "serve": "inference"}  # fmt: skip


class Stage(BaseModel):
    name: str
    state: State = "running"
    seconds: float = 0.0
    counts: dict[str, int | float | str] = {}


class Summary(BaseModel):
    """What a run did, stage by stage: `runs/<run_id>/summary.json` in the stack's home (and
    `summary.json` for the demo), for people and for tests."""

    run_id: str
    description: str = ""
    sources: list[str] = []
    base_model: str | None = None
    #: Said before and after the run: a smoke model's label, say.
    warning: str | None = None
    state: State = "running"
    error: str | None = None
    #: The process that drives the run (a detached `distillery run`).
    driver_pid: int | None = None
    #: Each topic's end when the run began: the live view counts from there.
    baseline: dict[str, int] = {}
    stages: list[Stage] = []
    #: Documents the extractor refused, by file name, with the reason.
    dead_lettered: dict[str, str] = {}
    dataset: DatasetRef | None = None
    #: sha256 over the run's distinct pair ids, sorted: equal sets, equal digests.
    pair_ids_sha256: str | None = None
    verdict: str | None = None
    #: Where the model is served, the model that answered at the end, and its answer.
    address: str | None = None
    served: str | None = None
    answer: str | None = None
    wall_s: float = 0.0

    def states(self) -> dict[str, str]:
        """Each service's stage state, "waiting" for those not begun."""
        begun = {STAGES[s.name]: s.state for s in self.stages if s.name in STAGES}
        return {service: begun.get(service, "waiting") for service in STAGES.values()}


class Recorder:
    """Keeps a run's summary and saves it (`save`) whenever a stage begins or ends."""

    def __init__(self, summary: Summary, save: Callable[[Summary], object]) -> None:
        self.summary = summary
        self._save = save
        self._started = time.monotonic()

    def save(self) -> None:
        self.summary.wall_s = round(time.monotonic() - self._started, 2)
        self._save(self.summary)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, int | float | str]]:
        """Times a stage; its counts go in the dict given."""
        stage = Stage(name=name)
        self.summary.stages.append(stage)
        self.save()
        started = time.monotonic()
        try:
            yield stage.counts
            stage.state = "done"
        except BaseException:
            stage.state = "failed"
            raise
        finally:
            stage.seconds = round(time.monotonic() - started, 2)
            self.save()


def drive(config: RunConfig, run_id: str, home: Path, recorder: Recorder) -> None:
    """Every stage of the run, in order, each recorded."""
    summary = recorder.summary
    settings = kafka_settings(home.resolve())
    timeout_s = config.stage_timeout_s
    with recorder.stage("scrape") as counts:
        for number, source in enumerate(config.sources, 1):
            console.print(f"[bold]1. scrape[/bold] ({number}/{len(config.sources)}) "
                          f"{describe_source(source)}")  # fmt: skip
            submit(source, run_id, True, "scraper", home, timeout_s=timeout_s)
        docs = of_run(RawDoc, read_all(settings, topics.RAW_DOCS), run_id)
        counts |= _distinct("documents", [d.doc_id for d in docs])
    with recorder.stage("extract") as counts:
        console.print(f"[bold]2. extract[/bold] {topics.RAW_DOCS} → {topics.PARSED_TEXT}")
        drain(settings, "extractor", topics.RAW_DOCS, timeout_s=timeout_s)
        fetch = blob_store(home).get
        for dead in read_all(settings, topics.dlq(topics.RAW_DOCS)):
            record = decode(DlqRecord, dead.value)
            try:
                doc = decode(RawDoc, record.original_value(fetch))
            except BadInput:
                continue  # not a document at all: no run's
            if doc.run_id == run_id:
                name = doc.source.url.rsplit("/", 1)[-1]
                if name not in summary.dead_lettered:
                    console.print(f"  dead-lettered {name}: {record.reason}", soft_wrap=True)
                summary.dead_lettered[name] = record.reason
        chunks = of_run(ParsedChunk, read_all(settings, topics.PARSED_TEXT), run_id)
        counts |= _distinct("chunks", [c.chunk_id for c in chunks])
        counts["dead_lettered"] = len(summary.dead_lettered)
    with recorder.stage("synthesize") as counts:
        generator = os.environ.get("SYNTHESIZER_GENERATOR", "reading-comprehension")
        console.print(f"[bold]3. synthesize[/bold] {topics.PARSED_TEXT} → {topics.PAIRS} "
                      f"({generator})")  # fmt: skip
        drain(settings, "synthesizer", topics.PARSED_TEXT, timeout_s=timeout_s)
        pairs = of_run(Pair, read_all(settings, topics.PAIRS), run_id)
        # The same pair from two chunks is two records, not a replay (the curation keeps one).
        counts |= _distinct("pairs", [p.pair_id for p in pairs],
                            records=[(p.pair_id, p.chunk_id) for p in pairs])  # fmt: skip
        ids = sorted({p.pair_id for p in pairs})
        summary.pair_ids_sha256 = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        tasks = Counter(p.task for p in {p.pair_id: p for p in pairs}.values())
        console.print(
            f"  {len(ids)} pairs: " + ", ".join(f"{t} {n}" for t, n in tasks.most_common())
        )
        if pairs:
            sample = pairs[len(pairs) // 2]
            console.print(f"  e.g. \\[{sample.task}] {sample.instruction} → {sample.output}",
                          soft_wrap=True)  # fmt: skip
    with recorder.stage("train") as counts:
        checkpoint = train(run_id, home, settings, timeout_s)
        summary.dataset = checkpoint.dataset
        metrics = checkpoint.metrics
        counts |= {"train_pairs": checkpoint.dataset.train_n,
                   "eval_pairs": checkpoint.dataset.eval_n, "steps": int(metrics["steps"]),
                   "eval_loss_before": round(metrics["eval_loss_before"], 4),
                   "eval_loss_after": round(metrics["eval_loss_after"], 4)}  # fmt: skip
    with recorder.stage("evaluate") as counts:
        result = evaluate(checkpoint, home, settings, timeout_s)
        summary.verdict = counts["verdict"] = result.verdict
    with recorder.stage("serve") as counts:
        summary.address, summary.served, summary.answer = serve(result, home)
        counts["answer_chars"] = len(summary.answer)


def of_run(model: type[M], records: Iterable[ConsumerRecord], run_id: str) -> list[M]:
    """The run's messages among `records`, in order; a value that is no `model` is no run's
    (the services dead-letter such values; a reader skips them)."""
    out = []
    for record in records:
        try:
            message = decode(model, record.value)
        except BadInput:
            continue
        if getattr(message, "run_id", None) == run_id:
            out.append(message)
    return out


def describe_source(source: object) -> str:
    fields = source.model_dump(exclude_defaults=True, exclude={"kind"})  # type: ignore[attr-defined]
    kind = source.kind  # type: ignore[attr-defined]
    return f"{kind} " + ", ".join(f"{k}={v}" for k, v in fields.items())


def _distinct(
    name: str, ids: list[str], records: list[object] | None = None
) -> dict[str, int | float | str]:
    """How many distinct ids, and how many records repeated one (by `records`' identity, the
    ids themselves by default): delivery is at least once, so a restarted service may publish
    a record again; ids make the copies harmless."""
    keys = ids if records is None else records
    return {name: len(set(ids)), f"{name}_replayed": len(keys) - len(set(keys))}


def train(run_id: str, home: Path, settings: KafkaSettings, timeout_s: float) -> Checkpoint:
    """Stage 4: the trainer curates the run's pairs into a snapshot and trains an adapter."""
    recipe = os.environ.get("TRAINER_RECIPE", "the trainer's recipe")
    console.print(
        f"[bold]4. train[/bold] {topics.PAIRS} → {topics.CHECKPOINTS}: the run's pairs curated "
        "(duplicates, ROUGE-L near-duplicates, split by document, contamination check) and "
        f"trained with {recipe}"
    )
    drain(settings, "trainer", topics.PAIRS, timeout_s=timeout_s)
    request_training(run_id, wait=True, timeout_s=timeout_s, home=home)
    mine = of_run(Checkpoint, read_all(settings, topics.CHECKPOINTS), run_id)
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


def evaluate(
    checkpoint: Checkpoint, home: Path, settings: KafkaSettings, timeout_s: float
) -> EvalResult:
    """Stage 5: base vs tuned through lm-eval (ARC, the domain test on the held-out documents'
    pairs, their perplexity), the verdict and the report."""
    from pipeline.cli_report import report

    arc_dir = os.environ.get("EVALUATOR_ARC_DIR")
    if os.environ.get("EVALUATOR_ARC_TASKS", "").replace(" ", "") == "[]":
        arc = "no ARC"
    else:
        arc = f"ARC from {arc_dir}" if arc_dir else "ARC from the hub"
    console.print(
        f"[bold]5. evaluate[/bold] {topics.CHECKPOINTS} → {topics.EVAL_RESULTS}: base vs tuned "
        f"with lm-eval: {arc}, the "
        "domain test on the held-out documents' pairs (ROUGE), their perplexity"
    )
    drain(settings, "evaluator", topics.CHECKPOINTS, timeout_s=timeout_s)
    results = of_run(EvalResult, read_all(settings, topics.EVAL_RESULTS), checkpoint.run_id)
    mine = [e for e in results if e.checkpoint_id == checkpoint.checkpoint_id]
    if not mine:
        dead = read_all(settings, topics.dlq(topics.CHECKPOINTS))
        why = [f"{d.reason}: {d.error}" for d in (decode(DlqRecord, r.value) for r in dead)
               if d.original_key == checkpoint.run_id]  # checkpoints are keyed by run  # fmt: skip
        raise fail(f"no evaluation of {checkpoint.checkpoint_id} on {topics.EVAL_RESULTS}"
                   + (f"; dead-lettered: {why[-1]}" if why else ""))  # fmt: skip
    report(checkpoint.checkpoint_id, home=home, examples=2)
    return mine[-1]


def serve(result: EvalResult, home: Path) -> tuple[str, str, str]:
    """Stage 6: the inference service loads a promoted adapter as `latest`; a streamed
    answer to a held-out question over gRPC, from the tuned model (or the base, if rejected).
    The service's address, the model that answered, and its answer."""
    from pipeline.cli_generate import embedded_address
    from services.evaluator.evaluation import stored_report

    # A deployed stack's service is named as `distillery generate` names it.
    address = os.environ.get("INFERENCE_ADDRESS") or embedded_address(home)
    verdict = "promoted" if result.verdict == "promote" else "rejected"
    console.print(f"[bold]6. serve[/bold] {topics.EVAL_RESULTS} → gRPC at {address}: "
                  f"{result.checkpoint_id} {verdict}")  # fmt: skip
    wanted = result.checkpoint_id if result.verdict == "promote" else "base"
    token = os.environ.get("INFERENCE_AUTH_TOKEN")
    with InferenceClient(address, token=token, timeout_s=60) as client:
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
    return address, wanted, "".join(answer)


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
