"""The trainer's scheduler: the worker loop hands it each pair to store; its own thread
trains runs when they are due.

`handle` stores each pair in the blob store (by pair and chunk, so a replay is no new pair)
and only then lets the loop commit it. A run is due when its backlog is (`min_new_pairs` new,
none for `idle_seconds`) or `distillery train --run` asks. Then: the run's pairs curated
(near-duplicates, split by document, contamination), the licence guard, one training run in
a child process (`python -m services.trainer.train`, or the configured launcher: torchrun for
several GPUs) whose progress comes back as JSON lines; the adapter and what goes with it
stored, and a `checkpoints` message naming them.

A snapshot is trained once per recipe (outcomes are keyed by checkpoint id). The snapshot in
training is written to the run's state before the child starts: a trainer stopped mid-run
(SIGTERM: the child checkpoints first; or killed) finishes that snapshot first when it
restarts, resuming from the checkpoint in its work directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline import terms
from pipeline.blobstore import put_tree
from pipeline.curation.dataset import CurationConfig, canonical_order, curate
from pipeline.curation.snapshot import write_snapshot
from pipeline.errors import BadInput, Retryable
from pipeline.messages import Checkpoint, DatasetRef, Message, Pair
from services.trainer.config import TrainerSettings
from services.trainer.core import Backlog
from services.trainer.metrics import TrainerMetrics
from services.trainer.recipe import Recipe
from services.trainer.store import (
    InProgress,
    RunState,
    SnapshotOutcome,
    TrainerStore,
    check_run_id,
)

log = logging.getLogger("trainer")

#: The child's exit status when it stopped on SIGTERM after saving a checkpoint
#: (train.STOPPED; not imported, which would load torch and TRL into the service's process).
STOPPED = 3


class Stopped(Exception):  # noqa: N818 - a state, not a failure
    """The service is stopping; the run in hand resumes when it starts again."""


class Interrupted(RuntimeError):
    """Training ended without a result and without a verdict on the data (a signal from
    outside, the store failing): the run comes due again and resumes from its checkpoint."""


class Scheduler:
    def __init__(
        self,
        settings: TrainerSettings,
        store: TrainerStore,
        recipe: Recipe,
        publish: Callable[[Message], None],
        metrics: TrainerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.recipe = recipe
        self.publish = publish
        self.metrics = metrics
        self.clock = clock
        self.backlog = Backlog(settings.min_new_pairs, settings.idle_seconds)
        self.curation = CurationConfig(
            fields=settings.near_duplicate_fields,
            threshold=settings.near_duplicate_threshold,
            eval_fraction=settings.eval_fraction,
        )
        self.rules = (
            terms.load_rules(settings.terms_table) if settings.terms_table else terms.DEFAULT_RULES
        )
        self._stopping = threading.Event()
        # Held from "are we stopping?" to the child being known, so stop() never misses one.
        self._child_lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._resumable: set[str] = set()  # runs with a snapshot in training at start-up

    # --- the worker loop's side
    def handle(self, pair: Pair) -> list[Message]:
        check_run_id(pair.run_id)
        try:
            added = self.store.add(pair)
        except BadInput:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure: retried, never committed
            raise Retryable(f"could not store the pair: {exc}", reason="store_failed") from exc
        if added:
            self.backlog.arrived(pair.run_id, self.clock())
            self.metrics.pair_stored()
        return []

    # --- the scheduler's thread
    def resume_backlog(self) -> None:
        """After a restart: pairs stored beyond each run's last snapshot are new again, and a
        snapshot that was in training is resumed first."""
        for run_id in self.store.runs():
            state = self.store.state(run_id)
            new = self.store.count(run_id) - state.pairs_at_last
            if new > 0:
                self.backlog.arrived(run_id, self.clock(), new)
                log.info("run %s: %d pairs not yet in a snapshot", run_id, new)
            if state.in_progress is not None:
                self._resumable.add(run_id)
                log.info("run %s: resuming %s", run_id, state.in_progress.checkpoint_id)

    def loop(self) -> None:
        resumed = False
        while not self._stopping.wait(0 if not resumed else self.settings.poll_seconds):
            try:
                if not resumed:
                    self.resume_backlog()
                    resumed = True
                self.tick()
            except Stopped:
                return
            except Exception:  # noqa: BLE001 - the store or the broker: try again next tick
                log.exception("scheduler tick failed; trying again")
                self._stopping.wait(self.settings.poll_seconds)

    def tick(self) -> None:
        for run_id in sorted(self._resumable):
            self.train(run_id)
        for request in self.store.requests():
            state = self.store.state(request.run_id)
            if request.id != state.request_id:
                log.info("run %s: training requested (%s)", request.run_id, request.id)
                outcome = self.train(request.run_id, requested=True)
                state = self.store.state(request.run_id)
                state.request_id, state.request_outcome = request.id, outcome
                self.store.save_state(request.run_id, state)
        for run_id in self.backlog.due(self.clock()):
            self.train(run_id)

    def stop(self) -> None:
        with self._child_lock:
            self._stopping.set()
            if self._child is not None and self._child.poll() is None:
                self._child.terminate()  # the child saves a checkpoint, then exits STOPPED

    # --- one snapshot
    def train(self, run_id: str, *, requested: bool = False) -> SnapshotOutcome:
        """Resume the run's snapshot in training, or take a new one and train it."""
        taken = 0
        try:
            state = self.store.state(run_id)
            if state.in_progress is not None:
                if (self._work(run_id, state.in_progress) / "snapshot").is_dir():
                    return self._fit(run_id, state, state.in_progress)
                # The work directory is gone (a pod without its volume): start over.
                log.warning("run %s: no work left for %s", run_id, state.in_progress.checkpoint_id)
                state.in_progress = None
            taken = self.backlog.take(run_id)
            return self._take(run_id, state, requested=requested)
        except Stopped:
            raise
        except Exception:
            # Not the data's verdict (the store, the broker, a signal): due again after
            # idle_seconds, when a snapshot in training resumes from its checkpoint.
            self.backlog.arrived(run_id, self.clock(), max(taken, self.backlog.min_new))
            raise
        finally:
            self._resumable.discard(run_id)

    def _take(self, run_id: str, state: RunState, *, requested: bool) -> SnapshotOutcome:
        """Curate the run's pairs into a snapshot, check its terms, and train it unless it
        was trained (or refused) before."""
        pairs = self.store.pairs(run_id)
        state.pairs_at_last = len(pairs)
        if not pairs:
            return self._record(run_id, state, None, SnapshotOutcome(outcome="empty"))
        curated = curate(canonical_order(pairs), self.curation)
        problems = terms.violations(
            (p.generator.terms for p in [*curated.train, *curated.eval]),
            self.recipe.base_model,
            self.rules,
        )
        staging = self.settings.work_dir / run_id / "next-snapshot"
        shutil.rmtree(staging, ignore_errors=True)  # what a killed trainer left half-written
        snapshot = write_snapshot(
            curated, staging, name=f"Distillery run {run_id}", extra={"run_id": run_id},
            notes=[f"Terms: {problem}." for problem in problems],
        )  # fmt: skip
        planned = InProgress(
            checkpoint_id=_checkpoint_id(snapshot.sha256, self.recipe),
            dataset_id=snapshot.id,
            sha256=snapshot.sha256,
            train_n=snapshot.train_n,
            eval_n=snapshot.eval_n,
            terms_violations=problems,
        )
        work = self._work(run_id, planned)
        if not (work / "snapshot").exists():
            work.mkdir(parents=True, exist_ok=True)
            staging.rename(work / "snapshot")
        shutil.rmtree(staging, ignore_errors=True)

        done = state.outcomes.get(planned.checkpoint_id)
        if done is not None and not _worth_retrying(done, requested, self.settings):
            log.info("run %s: %s already %s", run_id, planned.checkpoint_id, done.outcome)
            self.store.save_state(run_id, state)
            return done
        if problems and self.settings.on_terms_violation == "refuse":
            reason = "; ".join(problems)
            log.error("run %s: %s refused: %s", run_id, snapshot.id, reason)
            outcome = SnapshotOutcome(outcome="refused", reason=reason, dataset_id=snapshot.id)
            return self._record(run_id, state, planned.checkpoint_id, outcome)
        for problem in problems:
            log.warning("run %s: training anyway (TRAINER_ON_TERMS_VIOLATION=warn): %s",
                        run_id, problem)  # fmt: skip
        if snapshot.train_n == 0:
            outcome = SnapshotOutcome(outcome="empty", reason="no training pair after curation",
                                      dataset_id=snapshot.id)  # fmt: skip
            return self._record(run_id, state, planned.checkpoint_id, outcome)
        state.in_progress = planned
        self.store.save_state(run_id, state)
        return self._fit(run_id, state, planned)

    def _fit(self, run_id: str, state: RunState, planned: InProgress) -> SnapshotOutcome:
        """Train `planned` (resuming from its checkpoint), store the outputs, announce them."""
        work = self._work(run_id, planned)
        blobs = self.store.blobs
        dataset_uri = put_tree(blobs, work / "snapshot", f"datasets/{run_id}/{planned.dataset_id}")
        result = self._run_child(run_id, planned.checkpoint_id, work)
        if isinstance(result, str):
            outcome = SnapshotOutcome(outcome="failed", reason=result,
                                      dataset_id=planned.dataset_id)  # fmt: skip
            return self._record(run_id, state, planned.checkpoint_id, outcome)
        name = f"checkpoints/{planned.checkpoint_id}"
        adapter_uri = put_tree(blobs, work / "run" / "adapter", f"{name}/adapter")
        state_uri = blobs.put_file_as(f"{name}/trainer_state.json",
                                      work / "run" / "trainer_state.json")  # fmt: skip
        self.publish(
            Checkpoint(
                checkpoint_id=planned.checkpoint_id,
                run_id=run_id,
                base_model=self.recipe.base_model,
                method=self.recipe.method,
                adapter_uri=adapter_uri,
                dataset=DatasetRef(
                    id=planned.dataset_id,
                    sha256=planned.sha256,
                    train_n=planned.train_n,
                    eval_n=planned.eval_n,
                    uri=dataset_uri,
                ),  # fmt: skip
                hyperparameters=hyperparameters(self.recipe),
                metrics=_metrics(result, len(planned.terms_violations)),
                artifacts={
                    "tokenizer": adapter_uri,
                    "recipe": f"{adapter_uri}/recipe.yaml",
                    "trainer_state": state_uri,
                    "dataset_card": f"{dataset_uri}/README.md",
                },
            )
        )
        log.info("run %s: %s trained on %s: %s", run_id, planned.checkpoint_id,
                 planned.dataset_id, adapter_uri)  # fmt: skip
        outcome = SnapshotOutcome(
            outcome="trained", dataset_id=planned.dataset_id,
            checkpoint_id=planned.checkpoint_id, adapter_uri=adapter_uri,
        )  # fmt: skip
        recorded = self._record(run_id, state, planned.checkpoint_id, outcome)
        shutil.rmtree(work)  # everything is in the store; checkpoints hold optimizer state
        return recorded

    def _work(self, run_id: str, planned: InProgress) -> Path:
        return self.settings.work_dir / run_id / planned.checkpoint_id

    def _record(
        self, run_id: str, state: RunState, checkpoint_id: str | None, outcome: SnapshotOutcome
    ) -> SnapshotOutcome:
        if checkpoint_id is not None:
            state.outcomes[checkpoint_id] = outcome
        state.in_progress = None
        self.store.save_state(run_id, state)
        self.metrics.snapshot(outcome.outcome)
        return outcome

    def _run_child(self, run_id: str, checkpoint_id: str, work: Path) -> dict[str, Any] | str:
        """Train in a child process; its result, or why it failed. Raises Stopped when the
        service is stopping (the child has saved a checkpoint to resume from) and
        Interrupted when the child ended by a signal from elsewhere."""
        if (work / "run" / "result.json").exists() and (work / "run" / "adapter").is_dir():
            # Trained before a restart, not yet published: training again would do 0 steps
            # and report a loss of 0.
            found: dict[str, Any] = json.loads((work / "run" / "result.json").read_text())
            return found
        recipe_file = work / "recipe.yaml"
        recipe_file.write_text(yaml.safe_dump(self.recipe.model_dump(mode="json"), sort_keys=False))
        launcher = (
            shlex.split(self.settings.launcher) if self.settings.launcher else [sys.executable]
        )
        argv = [*launcher, "-m", "services.trainer.train",
                str(work / "snapshot"), str(recipe_file), str(work / "run")]  # fmt: skip
        stderr = work / "train.log"
        progress = {"checkpoint_id": checkpoint_id, "status": "starting"}
        self._report(run_id, progress)
        result: dict[str, Any] | None = None
        with open(stderr, "ab") as err, self._child_lock:
            if self._stopping.is_set():
                raise Stopped
            child = self._child = subprocess.Popen(  # noqa: S603 - our module, our settings
                argv, stdout=subprocess.PIPE, stderr=err, text=True
            )
        try:
            assert child.stdout is not None  # noqa: S101 - asked for just above
            for line in child.stdout:
                event = _event(line)
                if event.get("event") == "progress":
                    self._progress(run_id, progress | event | {"status": "training"})
                elif event.get("event") == "done":
                    result = event
        finally:
            if child.poll() is None:  # we are leaving early: never two children on one run
                child.terminate()
            code = child.wait()
            with self._child_lock:
                self._child = None
        if code == 0 and result is not None:
            self._report(run_id, progress | {"status": "done", **_metrics(result, 0)})
            return result
        if code == STOPPED or code < 0:
            self._report(run_id, progress | {"status": "stopped"})
            if self._stopping.is_set():
                raise Stopped
            raise Interrupted(f"run {run_id}: training ended by a signal ({code}); resuming later")
        tail = stderr.read_text(errors="replace").strip().splitlines()[-5:]
        self._report(run_id, progress | {"status": "failed"})
        log.error("run %s: training failed (exit %s): %s", run_id, code, " | ".join(tail))
        return f"training exited with status {code}: {tail[-1] if tail else 'no output'}"

    def _progress(self, run_id: str, event: dict[str, Any]) -> None:
        self.metrics.step.set(event["step"])
        self.metrics.total_steps.set(event["total_steps"])
        self.metrics.loss.set(event["loss"])
        self.metrics.tokens_per_s.set(event["tokens_per_s"])
        self.metrics.eta_s.set(event["eta_s"])
        log.info(
            "run %s: step %d/%d loss %.4f %.0f tokens/s ETA %.0fs",
            run_id, event["step"], event["total_steps"], event["loss"],
            event["tokens_per_s"], event["eta_s"],
        )  # fmt: skip
        self._report(run_id, event)

    def _report(self, run_id: str, progress: dict[str, Any]) -> None:
        """Progress for `distillery train --run`: worth a log line when the store fails, not
        the training."""
        try:
            self.store.save_progress(run_id, progress)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("run %s: could not store progress: %s", run_id, exc)


def _worth_retrying(done: SnapshotOutcome, requested: bool, settings: TrainerSettings) -> bool:
    """A failure when someone asks again (the base model was fixed, say); a refusal once the
    policy says warn. A trained or empty snapshot is final."""
    if done.outcome == "failed":
        return requested
    return done.outcome == "refused" and settings.on_terms_violation == "warn"


def _event(line: str) -> dict[str, Any]:
    """A JSON event line of the child; anything else it prints (libraries do) is ignored."""
    if not line.startswith('{"event"'):
        return {}
    try:
        found: dict[str, Any] = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return found


def _checkpoint_id(dataset_sha256: str, recipe: Recipe) -> str:
    """Deterministic: the same dataset trained by the same recipe is the same checkpoint."""
    digest = hashlib.sha256(dataset_sha256.encode())
    digest.update(recipe.model_dump_json().encode())
    return f"ckpt-{digest.hexdigest()[:16]}"


def hyperparameters(recipe: Recipe) -> dict[str, str | int | float | bool | None]:
    """The recipe flattened (lora.rank, optim.lr, ...), as the checkpoint message carries it."""
    flat: dict[str, str | int | float | bool | None] = {}
    for key, value in recipe.model_dump(mode="json").items():
        if isinstance(value, dict):
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = ",".join(item) if isinstance(item, list) else item
        else:
            flat[key] = value
    return flat


def _metrics(result: dict[str, Any], terms_violations: int) -> dict[str, float]:
    names = ("train_loss", "eval_loss_before", "eval_loss_after", "steps", "train_examples",
             "dropped_too_long", "tokens", "tokens_per_s", "seconds")  # fmt: skip
    found = {name: float(result[name]) for name in names if result.get(name) is not None}
    if result.get("resumed_from") is not None:
        found["resumed_from_step"] = float(result["resumed_from"])
    if terms_violations:
        found["terms_violations"] = float(terms_violations)
    return found
