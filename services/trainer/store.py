"""The trainer's state in the blob store, where the service and `distillery train` both see it.

    trainer/<run>/pairs/<pair>.json      each pair/1 message once, whatever the replays
    trainer/<run>/state.json             what each snapshot became (trained, refused, failed)
    trainer/<run>/progress.json          the training in progress: step, loss, tokens/s, ETA
    trainer/requests/<run>.json          `distillery train --run RUN`: train it now
    datasets/<run>/<dataset_id>/         the snapshots, with their cards
    checkpoints/<checkpoint_id>/         adapter/ (with tokenizer and recipe), trainer_state.json

A pair is stored before its offset is committed, so a pair is never lost; a replay writes the
same name again, so none is counted twice. The name is the pair_id and its chunk: the same
triple mined from two chunks is two records (curation keeps one), and keeping whichever came
first would make the dataset depend on the order of delivery.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pipeline.blobstore import BlobStore
from pipeline.errors import BadInput
from pipeline.messages import Pair, decode, encode

Outcome = Literal["trained", "refused", "failed", "empty"]
M = TypeVar("M", bound=BaseModel)


class SnapshotOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    outcome: Outcome
    reason: str = ""
    checkpoint_id: str | None = None
    adapter_uri: str | None = None


class RunState(BaseModel):
    """What became of a run's snapshots, by dataset sha256; a snapshot is trained once."""

    model_config = ConfigDict(extra="forbid")
    #: Pairs stored when the last snapshot was taken: those beyond it are new.
    pairs_at_last: int = 0
    snapshots: dict[str, SnapshotOutcome] = {}
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
        name = f"trainer/{pair.run_id}/pairs/{pair.pair_id}-{chunk}.json"
        if self.blobs.exists(self.blobs.uri(name)):
            return False
        self.blobs.put_as(name, encode(pair))
        return True

    def pairs(self, run_id: str) -> list[Pair]:
        return [
            decode(Pair, self.blobs.get(self.blobs.uri(name)))
            for name in self.blobs.names(f"trainer/{run_id}/pairs")
        ]

    def count(self, run_id: str) -> int:
        return len(self.blobs.names(f"trainer/{run_id}/pairs"))

    def runs(self) -> list[str]:
        """Every run with pairs stored."""
        return sorted(
            {name.split("/")[1] for name in self.blobs.names("trainer") if "/pairs/" in name}
        )

    # --- state, progress, requests
    def state(self, run_id: str) -> RunState:
        return _read(self.blobs, f"trainer/{run_id}/state.json", RunState) or RunState()

    def save_state(self, run_id: str, state: RunState) -> None:
        self.blobs.put_as(f"trainer/{run_id}/state.json", state.model_dump_json().encode())

    def progress(self, run_id: str) -> dict[str, Any] | None:
        try:
            data = self.blobs.get(self.blobs.uri(f"trainer/{run_id}/progress.json"))
        except BadInput:
            return None
        found: dict[str, Any] = json.loads(data)
        return found

    def save_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        self.blobs.put_as(f"trainer/{run_id}/progress.json", json.dumps(progress).encode())

    def request(self, request: Request) -> None:
        self.blobs.put_as(
            f"trainer/requests/{request.run_id}.json", request.model_dump_json().encode()
        )

    def requests(self) -> list[Request]:
        found = []
        for name in self.blobs.names("trainer/requests"):
            request = _read(self.blobs, name, Request)
            if request is not None:
                found.append(request)
        return found


def _read(blobs: BlobStore, name: str, model: type[M]) -> M | None:
    try:
        data = blobs.get(blobs.uri(name))
    except BadInput:
        return None
    return model.model_validate_json(data)
