"""Write a curated dataset to a directory: train and eval files in three formats, provenance,
what was dropped and why, a manifest, and a dataset card (README.md) that `datasets` reads.

Layout: `<format>/train.jsonl` and `<format>/eval.jsonl` for alpaca ({instruction, input,
output}), messages ({messages: [user, assistant]}, as TRL's SFTTrainer reads it) and text
({text: "question: ... answer: ..."}), an empty split left out (`datasets` refuses an empty
file); `provenance.jsonl`, `dropped.jsonl`, `manifest.json`. Nothing in it depends on the
time or the machine: the same curated pairs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.curation.card import render_card
from pipeline.curation.dataset import Curated
from pipeline.messages import Pair

MANIFEST_SCHEMA = "dataset/1"


def prompt_of(pair: Pair) -> str:
    return f"{pair.instruction}\n\n{pair.input}" if pair.input else pair.instruction


def alpaca(pair: Pair) -> dict[str, Any]:
    return {"instruction": pair.instruction, "input": pair.input, "output": pair.output}


def messages(pair: Pair) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": prompt_of(pair)},
            {"role": "assistant", "content": pair.output},
        ]
    }


def question_answer(pair: Pair) -> dict[str, Any]:
    return {"text": f"question: {prompt_of(pair)} answer: {pair.output}"}


FORMATS: dict[str, Callable[[Pair], dict[str, Any]]] = {
    "alpaca": alpaca,
    "messages": messages,
    "text": question_answer,
}
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    sha256: str
    train_n: int
    eval_n: int

    @property
    def id(self) -> str:
        return f"ds-{self.sha256[:12]}"


def content_hash(curated: Curated) -> str:
    """sha256 over both splits' pairs in order (split, id and text): the dataset's identity,
    whatever formats are written."""
    digest = hashlib.sha256()
    for split, pairs in (("train", curated.train), ("eval", curated.eval)):
        for pair in pairs:
            line = {"split": split, "pair_id": pair.pair_id, **alpaca(pair)}
            digest.update(_json_line(line).encode("utf-8"))
    return digest.hexdigest()


def write_snapshot(
    curated: Curated,
    directory: Path,
    *,
    formats: Iterable[str] = tuple(FORMATS),
    name: str = "Distillery dataset",
    extra: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> Snapshot:
    """Write every file into `directory`, which must be empty, new, or an earlier snapshot
    (replaced). `extra` (inputs, run id...) goes into the manifest, `notes` into the card."""
    formats = tuple(dict.fromkeys(formats))
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be among {', '.join(FORMATS)}; got {', '.join(unknown)}")
    _clear(directory)
    split_pairs = {"train": curated.train, "eval": curated.eval}
    splits = [split for split in SPLITS if split_pairs[split]]
    for fmt in formats:
        for split in splits:
            _write_jsonl(directory / fmt / f"{split}.jsonl", map(FORMATS[fmt], split_pairs[split]))
    _write_jsonl(
        directory / "provenance.jsonl",
        (_provenance(p, split) for split in SPLITS for p in split_pairs[split]),
    )
    _write_jsonl(
        directory / "dropped.jsonl",
        (
            {"pair_id": d.pair.pair_id, "doc_id": d.pair.doc_id, "chunk_id": d.pair.chunk_id,
             "filter": d.filter, "match": d.match, "score": d.score,
             "instruction": d.pair.instruction}
            for d in curated.dropped
        ),
    )  # fmt: skip
    sha = content_hash(curated)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "sha256": sha,
        "train_n": len(curated.train),
        "eval_n": len(curated.eval),
        "eval_docs": sorted(curated.eval_docs),
        "dropped": curated.drop_counts(),
        "formats": list(formats),
        "config": curated.config.model_dump(mode="json"),
        **(extra or {}),
    }
    (directory / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    card = render_card(curated, sha, formats, splits, name, notes)
    (directory / "README.md").write_text(card, encoding="utf-8")
    return Snapshot(directory, sha, len(curated.train), len(curated.eval))


_OURS = {*FORMATS, "provenance.jsonl", "dropped.jsonl", "manifest.json", "README.md"}


def check_directory(directory: Path) -> None:
    """Raise ValueError unless a snapshot may be written to `directory`: new, empty, or an
    earlier snapshot (which is replaced); anything else there is not ours to delete."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a directory")
    present = {p.name for p in directory.iterdir()} if directory.exists() else set()
    if present and ("manifest.json" not in present or present - _OURS):
        raise ValueError(f"{directory} is not empty and not a dataset written there before")


def _clear(directory: Path) -> None:
    """Create `directory`, or empty it of an earlier snapshot's files: a format written before
    and not now must not linger."""
    check_directory(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in {p.name for p in directory.iterdir()}:
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _provenance(pair: Pair, split: str) -> dict[str, Any]:
    return {
        "pair_id": pair.pair_id,
        "split": split,
        "doc_id": pair.doc_id,
        "chunk_id": pair.chunk_id,
        "task": pair.task,
        "generator": pair.generator.model_dump(mode="json"),
        "license": pair.license,
        "source": pair.source.model_dump(mode="json") if pair.source else None,
        "run_id": pair.run_id,
    }


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(_json_line(r) for r in records)
