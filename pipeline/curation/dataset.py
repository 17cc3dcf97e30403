"""Curate pairs into a training set and an evaluation set: replays and exact duplicates out,
near-duplicates out by ROUGE-L (the Self-Instruct/Alpaca rule, in the order given), a split by
document so that evaluation pairs come from documents training never saw, and a contamination
check that drops any evaluation pair too close to a training pair."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from pipeline.curation.neardup import RougePool
from pipeline.messages import Pair, normalise


class Fields(StrEnum):
    """Which part of a pair two pairs are compared on."""

    INSTRUCTION = "instruction"  # as Alpaca and Self-Instruct
    INSTRUCTION_INPUT = "instruction+input"  # templated instructions differ by their input
    OUTPUT = "output"
    ALL = "instruction+input+output"

    def text(self, pair: Pair) -> str:
        parts = {"instruction": pair.instruction, "input": pair.input, "output": pair.output}
        return "\n".join(parts[name] for name in self.value.split("+"))


class CurationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Two pairs are near-duplicates when the whole example is. Alpaca compares instructions
    #: alone (`instruction`); on tasks mined from documents, whose instructions are templates,
    #: that drops distinct examples: 614 of the shared papers' 1,542 pairs on instruction+input,
    #: 166 on all three (mostly the same sentence met again in overlapping chunks).
    fields: Fields = Fields.ALL
    #: Dropped when ROUGE-L F against a kept pair is above this (0.7: Self-Instruct, Alpaca).
    threshold: float = Field(0.7, gt=0, le=1)
    #: Share of documents held out for evaluation, chosen by a hash of the doc_id.
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    split_salt: str = "distillery"
    contamination_fields: Fields = Fields.ALL
    #: An evaluation pair at or above this ROUGE-L F against any training pair is dropped.
    contamination_threshold: float = Field(0.7, gt=0, le=1)


FILTERS = {
    "replayed": "the same pair_id delivered more than once (at-least-once delivery)",
    "exact_duplicate": "the same normalised text (NFKC, case-folded, spaces collapsed) "
    "as an earlier pair",
    "near_duplicate": "ROUGE-L F above the threshold against a pair kept before it "
    "(rouge-score's tokenizer and arithmetic, in order)",
    "contaminated": "an evaluation pair with ROUGE-L F at or above the contamination "
    "threshold against a training pair",
}


@dataclass(frozen=True)
class Drop:
    pair: Pair
    filter: str  # a key of FILTERS
    #: The pair_id it repeats or resembles; "seed:N" / "pool:N" for a text that was not a pair.
    match: str
    score: float  # ROUGE-L F of the match (1.0 for replays and exact duplicates)


@dataclass(frozen=True)
class Curated:
    train: list[Pair]
    eval: list[Pair]
    dropped: list[Drop]
    eval_docs: frozenset[str]
    config: CurationConfig

    def drop_counts(self) -> dict[str, int]:
        counts = Counter(drop.filter for drop in self.dropped)
        return {name: counts.get(name, 0) for name in FILTERS}


def canonical_order(pairs: Iterable[Pair]) -> list[Pair]:
    """Pairs from a stream, in an order independent of delivery: by document, chunk index,
    then pair id. The ROUGE-L filter decides in order, so a snapshot must not depend on which
    partition was read first."""

    def key(pair: Pair) -> tuple[str, int, str]:
        index = pair.chunk_id.rpartition(":")[2]
        return pair.doc_id, int(index) if index.isdigit() else -1, pair.pair_id

    return sorted(pairs, key=key)


def curate(
    pairs: Sequence[Pair],
    config: CurationConfig,
    *,
    seeds: Sequence[str] = (),
    pool: RougePool | None = None,
) -> Curated:
    """Filter `pairs` in the order given and split them. `seeds` (seed tasks) join a new ROUGE-L
    pool first, as in Self-Instruct. Or `pool` carries the texts kept by earlier batches, seeds
    included (incremental mode), and is updated with this batch's survivors."""
    if pool is not None and seeds:
        raise ValueError("give seeds or a pool that already holds them, not both")
    dropped: list[Drop] = []
    unique = _drop_repeats(pairs, dropped, config.fields)
    survivors = _drop_near_duplicates(unique, dropped, config, seeds, pool)
    eval_docs = eval_documents({p.doc_id for p in survivors}, config)
    train = [p for p in survivors if p.doc_id not in eval_docs]
    held_out = [p for p in survivors if p.doc_id in eval_docs]
    clean_eval = _drop_contaminated(train, held_out, dropped, config)
    return Curated(train, clean_eval, dropped, eval_docs, config)


def _drop_repeats(pairs: Sequence[Pair], dropped: list[Drop], fields: Fields) -> list[Pair]:
    seen_ids: set[str] = set()
    first_by_text: dict[str, str] = {}
    unique = []
    for pair in pairs:
        if pair.pair_id in seen_ids:
            dropped.append(Drop(pair, "replayed", pair.pair_id, 1.0))
            continue
        seen_ids.add(pair.pair_id)
        text = normalise(fields.text(pair))
        if text in first_by_text:
            dropped.append(Drop(pair, "exact_duplicate", first_by_text[text], 1.0))
            continue
        first_by_text[text] = pair.pair_id
        unique.append(pair)
    return unique


def _drop_near_duplicates(
    pairs: list[Pair],
    dropped: list[Drop],
    config: CurationConfig,
    seeds: Sequence[str],
    pool: RougePool | None,
) -> list[Pair]:
    if pool is None:
        pool = RougePool(config.threshold)
        pool.add(seeds)
    elif pool.threshold != config.threshold:
        raise ValueError(
            f"the pool was built at threshold {pool.threshold}, the config asks {config.threshold}"
        )
    before = len(pool)
    decisions = pool.filter([config.fields.text(p) for p in pairs])
    kept = [p for p, keep in zip(pairs, decisions.kept, strict=True) if keep]
    for pair, keep, match, score in zip(
        pairs, decisions.kept, decisions.match, decisions.score, strict=True
    ):
        if not keep:
            name = kept[match - before].pair_id if match >= before else _earlier(match, seeds)
            dropped.append(Drop(pair, "near_duplicate", name, float(score)))
    return kept


def _earlier(index: int, seeds: Sequence[str]) -> str:
    return f"seed:{index}" if index < len(seeds) else f"pool:{index}"


def eval_documents(doc_ids: set[str], config: CurationConfig) -> frozenset[str]:
    """The documents held out: those whose salted hash falls below `eval_fraction`, so a
    document keeps its side as the corpus grows. With two documents or more and a fraction
    above 0, at least one is held out and at least one trains."""
    if config.eval_fraction == 0 or len(doc_ids) < 2:
        return frozenset()

    def position(doc_id: str) -> float:
        digest = hashlib.sha256(f"{config.split_salt}\x1f{doc_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(doc_ids, key=position)
    chosen = {d for d in ranked if position(d) < config.eval_fraction}
    if not chosen:
        chosen = {ranked[0]}
    if len(chosen) == len(ranked):
        chosen.discard(ranked[-1])
    return frozenset(chosen)


def _drop_contaminated(
    train: list[Pair], held_out: list[Pair], dropped: list[Drop], config: CurationConfig
) -> list[Pair]:
    fields = config.contamination_fields
    pool = RougePool(config.contamination_threshold)
    pool.add([fields.text(p) for p in train])
    found = pool.query([fields.text(p) for p in held_out], inclusive=True)
    clean = []
    for pair, ok, match, score in zip(held_out, found.kept, found.match, found.score, strict=True):
        if ok:
            clean.append(pair)
        else:
            dropped.append(Drop(pair, "contaminated", train[match].pair_id, float(score)))
    return clean
