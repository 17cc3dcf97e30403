"""The evaluator's handler: a checkpoint in; its evaluation stored and an `eval-results`
message out.

For each checkpoint: the adapter (or the whole model) and the dataset's held-out split are
fetched from the blob store; a child process (`python -m services.evaluator.run`) runs base
and tuned through lm-eval with the same settings; the scores are compared example by example
(paired bootstrap), the policy decides, and the report goes to `evaluations/<checkpoint_id>/`
(report.html, review.csv, then report.json). Once report.json is there, a redelivered
checkpoint is answered from it without evaluating again.

The handler is async so that the worker loop keeps polling (with its partitions paused) while
an evaluation runs for minutes or hours; a stopping service ends the child at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.blobstore import BlobStore, get_tree, name_of
from pipeline.errors import BadInput, Retryable
from pipeline.messages import Checkpoint, EvalResult
from services.evaluator.config import EvaluatorSettings
from services.evaluator.core import Comparison, Job, assess
from services.evaluator.judge import Judge
from services.evaluator.metrics import EvaluatorMetrics
from services.evaluator.report import Report, render_html, review_sheet

log = logging.getLogger("evaluator")

REPORT, PAGE, SHEET = "report.json", "report.html", "review.csv"


def folder_of(checkpoint_id: str) -> str:
    """Where a checkpoint's report lives in the blob store."""
    if "/" in checkpoint_id or checkpoint_id in (".", ".."):
        raise BadInput(f"checkpoint id {checkpoint_id!r} is not one path segment",
                       reason="bad_checkpoint_id")  # fmt: skip
    return f"evaluations/{checkpoint_id}"


def stored_report(blobs: BlobStore, checkpoint_id: str) -> Report | None:
    uri = blobs.uri(f"{folder_of(checkpoint_id)}/{REPORT}")
    return Report.model_validate_json(blobs.get(uri)) if blobs.exists(uri) else None


class Evaluator:
    def __init__(
        self,
        settings: EvaluatorSettings,
        blobs: BlobStore,
        metrics: EvaluatorMetrics,
        judge: Judge | None = None,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.metrics = metrics
        self.judge = judge
        self.python = python
        self._children: set[int] = set()  # evaluation processes running, by pid
        _prune(settings.work_dir)

    async def handle(self, checkpoint: Checkpoint) -> list[EvalResult]:
        ckpt = checkpoint.checkpoint_id
        report = await asyncio.to_thread(stored_report, self.blobs, ckpt)
        if report is not None:
            log.info("%s: evaluated before (%s); publishing that verdict", ckpt, report.verdict)
            return [self._result(report)]
        started = time.monotonic()
        work = self.settings.work_dir / ckpt
        try:
            report, sheet = await self._evaluate(checkpoint, work)
        except BadInput:
            shutil.rmtree(work, ignore_errors=True)  # dead-lettered: nothing here to reuse
            raise
        await asyncio.to_thread(self._store, report, sheet)
        shutil.rmtree(work, ignore_errors=True)
        seconds = time.monotonic() - started
        self.metrics.evaluated(report.verdict, seconds, report.scores)
        log.info("%s: %s in %.0fs: %s", ckpt, report.verdict, seconds, report.reason)
        return [self._result(report)]

    async def _evaluate(self, checkpoint: Checkpoint, work: Path) -> tuple[Report, str]:
        """The report and the review sheet. The work directory is left for a retry to reuse
        (Retryable: the judge or the store failed after the evaluation)."""
        job, comparison = await asyncio.to_thread(self._prepare, checkpoint, work)
        if comparison is None:
            log.info("%s: evaluating %s against %s (%s)", checkpoint.checkpoint_id,
                     checkpoint.adapter_uri, checkpoint.base_model, _describe(job))  # fmt: skip
            comparison = await self._run(work)
            # Done with the weights (GBs for a full fine-tune); a retry reuses the comparison.
            await asyncio.to_thread(shutil.rmtree, job.tuned, True)
        if self.judge is not None:
            comparison = await self.judge.add_to(comparison)
        settings = self.settings
        found = await asyncio.to_thread(assess, comparison, settings.policy,
                                        examples=settings.report_examples,
                                        resamples=settings.resamples)  # fmt: skip
        report = Report(
            checkpoint_id=checkpoint.checkpoint_id, run_id=checkpoint.run_id,
            base_model=checkpoint.base_model, adapter_uri=checkpoint.adapter_uri,
            dataset_id=checkpoint.dataset.id, domain_metric=settings.domain_metric,
            verdict="promote" if found.verdict.promote else "reject",
            reason=found.verdict.reason, scores=found.scores, improved=found.improved,
            degraded=found.degraded, documents=found.documents,
        )  # fmt: skip
        return report, review_sheet(found.review)

    def _prepare(self, checkpoint: Checkpoint, work: Path) -> tuple[Job, Comparison | None]:
        """The child's job, written with the tuned weights and the held-out pairs beside it;
        and the comparison the same job made already, if it did (the evaluation was done, and
        the judge or the store failed after it)."""
        settings, eval_n = self.settings, checkpoint.dataset.eval_n
        job = Job(
            base_model=checkpoint.base_model, tuned=work / "tuned",
            examples=work / "held_out.jsonl" if eval_n else None,
            prompt_format=str(checkpoint.hyperparameters.get("data.prompt_format", "alpaca")),
            domain_limit=settings.domain_limit,
            max_new_tokens=settings.max_new_tokens, perplexity=settings.perplexity,
            arc_tasks=list(settings.arc_tasks), arc_dir=settings.arc_dir,
            arc_limit=settings.arc_limit, batch_size=settings.batch_size, device=settings.device,
        )  # fmt: skip
        done, job_file = work / "comparison.json", work / "job.json"
        if done.is_file() and job_file.is_file() and job_file.read_text() == _json(job):
            return job, Comparison.model_validate_json(done.read_text(encoding="utf-8"))
        shutil.rmtree(work, ignore_errors=True)  # what a stopped or older evaluation left
        get_tree(self.blobs, name_of(self.blobs, checkpoint.adapter_uri), job.tuned)
        if job.examples is not None:
            self._held_out(checkpoint.dataset.uri, job.examples)
        job_file.write_text(_json(job), encoding="utf-8")
        return job, None

    def _held_out(self, dataset_uri: str, path: Path) -> None:
        """The dataset's eval split, each pair with the document it came from, to `path`."""
        records = _jsonl(self.blobs.get(f"{dataset_uri}/alpaca/eval.jsonl"))
        provenance = _jsonl(self.blobs.get(f"{dataset_uri}/provenance.jsonl"))
        # Provenance lists the pairs split by split, in the order of the split files.
        documents = [_document(p) for p in provenance if p["split"] == "eval"]
        if len(documents) != len(records):
            raise BadInput(f"{dataset_uri}: {len(records)} eval pairs but {len(documents)} "
                           "in its provenance", reason="dataset_inconsistent")  # fmt: skip
        rows = [r | {"document": d} for r, d in zip(records, documents, strict=True)]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")  # fmt: skip

    async def _run(self, work: Path) -> Comparison:
        """The child's comparison. A child ended by a signal (an OOM kill, say) is Retryable;
        one that failed is BadInput, with the end of its log."""
        out, log_path = work / "comparison.json", work / "evaluate.log"
        env = dict(os.environ)
        # The datasets library caches every json task it builds: here, not in $HOME.
        env.setdefault("HF_DATASETS_CACHE", str(work / "datasets-cache"))
        with log_path.open("ab") as err:
            # Its own session: a Ctrl-C meant for the service does not kill the evaluation
            # (the service decides), and killpg takes whatever the child started with it.
            child = await asyncio.create_subprocess_exec(
                self.python, "-m", "services.evaluator.run", str(work / "job.json"), str(out),
                stdout=err, stderr=err, env=env, start_new_session=True,
            )  # fmt: skip
            self._children.add(child.pid)
            try:
                code = await child.wait()
            except asyncio.CancelledError:  # the service is stopping: evaluate again later
                _kill(child.pid)
                await child.wait()
                raise
            finally:
                self._children.discard(child.pid)
        if code < 0:
            raise Retryable(f"the evaluation was ended by signal {-code}")
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise BadInput(
                f"evaluation failed (exit {code}): {' | '.join(tail) or 'no output'}",
                reason="evaluation_failed",
            )
        text = await asyncio.to_thread(out.read_text, encoding="utf-8")
        return Comparison.model_validate_json(text)

    def close(self) -> None:
        """End the evaluations still running (the worker loop has given up on them)."""
        for pid in list(self._children):
            _kill(pid)

    def _store(self, report: Report, sheet: str) -> None:
        folder = folder_of(report.checkpoint_id)
        self.blobs.put_as(f"{folder}/{PAGE}", render_html(report).encode())
        self.blobs.put_as(f"{folder}/{SHEET}", sheet.encode())
        self.blobs.put_as(f"{folder}/{REPORT}", report.model_dump_json(indent=2).encode())

    def _result(self, report: Report) -> EvalResult:
        return EvalResult(
            checkpoint_id=report.checkpoint_id, run_id=report.run_id,
            base_model=report.base_model, adapter_uri=report.adapter_uri, scores=report.scores,
            verdict=report.verdict, reason=report.reason,
            report_uri=self.blobs.uri(f"{folder_of(report.checkpoint_id)}/{PAGE}"),
        )  # fmt: skip


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _prune(work_dir: Path) -> None:
    """What earlier processes left, but for finished evaluations a retry may still reuse."""
    if work_dir.is_dir():
        for leftover in work_dir.iterdir():
            if not (leftover / "comparison.json").is_file():
                shutil.rmtree(leftover, ignore_errors=True)


def _json(job: Job) -> str:
    return job.model_dump_json(indent=2)


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def _document(provenance: dict[str, Any]) -> str:
    """A held-out document as people know it: its title, else its URL, else its id."""
    source = provenance.get("source") or {}
    return str(source.get("title") or source.get("url") or provenance["doc_id"])


def _describe(job: Job) -> str:
    arc = ", ".join(job.arc_tasks) or "no ARC"
    where = f"from {job.arc_dir}" if job.arc_dir else "from the hub"
    return f"{arc} {where}; domain test {'on' if job.examples else 'off'}; device {job.device}"
