"""The trainer's state in the blob store, where the service and `distillery train` both see it.

    trainer/runs/<run>/pairs/<pair>.json  each pair/1 message once, whatever the replays
    trainer/runs/<run>/state.json         what each snapshot became, and the one in training
    trainer/runs/<run>/progress.json      the training in progress: step, loss, tokens/s, ETA
    trainer/requests/<run>.json           `distillery train --run RUN`: train it now
    datasets/<run>/<dataset_id>/          the snapshots, with their cards
    checkpoints/<checkpoint_id>/          adapter/ (with tokenizer and recipe), trainer_state.json

Run ids become one path segment each, so they are checked (`check_run_id`).

A pair is stored before its offset is committed, so a pair is never lost; a replay writes the
same name again, so none is counted twice. The name is the pair_id and its chunk: the same
triple mined from two chunks is two records (curation keeps one), and keeping whichever came
first would make the dataset depend on the order of delivery.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.blobstore import BlobStore
from pipeline.errors import BadInput
from pipeline.messages import Pair, decode, encode

log = logging.getLogger("trainer")

Outcome = Literal["trained", "refused", "failed", "empty"]
M = TypeVar("M", bound=BaseModel)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"run id {run_id!r}: the trainer takes letters, digits, '.', '_' and '-' "
            "(up to 128, starting with a letter or digit)",
            reason="bad_run_id",
        )
    return run_id


class SnapshotOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    outcome: Outcome
    reason: str = ""
    dataset_id: str | None = None
    checkpoint_id: str | None = None
    adapter_uri: str | None = None


class InProgress(BaseModel):
    """The snapshot in training: what a restarted trainer resumes before anything else."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    checkpoint_id: str
    dataset_id: str
    sha256: str
    train_n: int
    eval_n: int
    terms_violations: list[str] = []


class RunState(BaseModel):
    """What became of a run's snapshots, by checkpoint id (dataset and recipe): each is
    trained once."""

    model_config = ConfigDict(extra="forbid")
    #: Pairs stored when the last snapshot was taken: those beyond it are new.
    pairs_at_last: int = 0
    outcomes: dict[str, SnapshotOutcome] = {}
    in_progress: InProgress | None = None
    #: The last `distillery train --run` request handled, and what it led to.
    request_id: str | None = None
    request_outcome: SnapshotOutcome | None = None


class Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)


class TrainerStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    # --- pairs
    def add(self, pair: Pair) -> bool:
        """Store `pair` under its id and chunk; True when it was not there yet."""
        chunk = hashlib.sha256(pair.chunk_id.encode()).hexdigest()[:16]
        name = f"{_run(pair.run_id)}/pairs/{pair.pair_id}-{chunk}.json"
        if self.blobs.exists(self.blobs.uri(name)):
            return False
        self.blobs.put_as(name, encode(pair))
        return True

    def pairs(self, run_id: str) -> list[Pair]:
        return [
            decode(Pair, self.blobs.get(self.blobs.uri(name)))
            for name in self.blobs.names(f"{_run(run_id)}/pairs")
        ]

    def count(self, run_id: str) -> int:
        return len(self.blobs.names(f"{_run(run_id)}/pairs"))

    def runs(self) -> list[str]:
        """Every run with pairs stored."""
        return sorted({name.split("/")[2] for name in self.blobs.names("trainer/runs")})

    # --- state, progress, requests
    def state(self, run_id: str) -> RunState:
        return _read(self.blobs, f"{_run(run_id)}/state.json", RunState) or RunState()

    def save_state(self, run_id: str, state: RunState) -> None:
        self.blobs.put_as(f"{_run(run_id)}/state.json", state.model_dump_json().encode())

    def progress(self, run_id: str) -> dict[str, Any] | None:
        found = _read(self.blobs, f"{_run(run_id)}/progress.json", _Progress)
        return found.model_dump() if found else None

    def save_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self.blobs.put_as(f"{_run(run_id)}/progress.json", json.dumps(progress).encode())

    def request(self, request: Request) -> None:
        name = f"trainer/requests/{check_run_id(request.run_id)}.json"
        self.blobs.put_as(name, request.model_dump_json().encode())

    def requests(self) -> list[Request]:
        found = []
        for name in self.blobs.names("trainer/requests"):
            try:
                request = _read(self.blobs, name, Request)
                if request is not None:
                    found.append(
                        request.model_copy(update={"run_id": check_run_id(request.run_id)})
                    )
            except (ValidationError, BadInput) as exc:  # not ours to delete; it blocks no other
                log.warning("ignoring %s: %s", name, exc)
        return found


class _Progress(BaseModel):
    model_config = ConfigDict(extra="allow")  # whatever the training reported


def _run(run_id: str) -> str:
    return f"trainer/runs/{check_run_id(run_id)}"


def _read(blobs: BlobStore, name: str, model: type[M]) -> M | None:
    try:
        data = blobs.get(blobs.uri(name))
    except BadInput:
        return None
    return model.model_validate_json(data)
