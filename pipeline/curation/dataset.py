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
from pipeline.messages import Pair, encode, normalise


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
    "replayed": "the same pair from the same chunk delivered again (at-least-once delivery)",
    "exact_duplicate": "the same normalised text (NFKC, case-folded, spaces collapsed) "
    "as an earlier pair, from another chunk or document",
    "near_duplicate": "ROUGE-L F above the threshold against a pair kept before it "
    "(rouge-score's tokenizer and arithmetic, in order)",
    "contaminated": "an evaluation pair with ROUGE-L F at or above the contamination "
    "threshold against a training pair",
}


@dataclass(frozen=True)
class Drop:
    pair: Pair
    filter: str  # a key of FILTERS
    #: The pair_id it repeats or resembles, or "seed:N" for a seed task.
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

    def key(pair: Pair) -> tuple[str, int, str, str]:
        index = pair.chunk_id.rpartition(":")[2]
        position = int(index) if index.isascii() and index.isdigit() else -1
        # The whole message last: the same pair from two runs must not tie.
        return pair.doc_id, position, pair.pair_id, encode(pair).decode()

    return sorted(pairs, key=key)


def curate(
    pairs: Sequence[Pair],
    config: CurationConfig,
    *,
    seeds: Sequence[str] = (),
    pool: RougePool | None = None,
) -> Curated:
    """Filter `pairs` in the order given and split them. `seeds` (seed tasks' instructions)
    join a new ROUGE-L pool first, as in Self-Instruct. Or `pool` carries the texts kept by
    earlier batches, seeds included (incremental mode), and gains this batch's survivors."""
    if pool is not None and seeds:
        raise ValueError("give seeds or a pool that already holds them, not both")
    if seeds and config.fields is not Fields.INSTRUCTION:
        raise ValueError(
            f"seed tasks are instructions: compare on instruction, not {config.fields}"
        )
    dropped: list[Drop] = []
    unique = _drop_repeats(pairs, dropped, config.fields)
    survivors = _drop_near_duplicates(unique, dropped, config, seeds, pool)
    eval_docs = eval_documents({p.doc_id for p in survivors}, config)
    train = [p for p in survivors if p.doc_id not in eval_docs]
    held_out = [p for p in survivors if p.doc_id in eval_docs]
    clean_eval = _drop_contaminated(train, held_out, dropped, config)
    return Curated(train, clean_eval, dropped, eval_docs, config)


def _drop_repeats(pairs: Sequence[Pair], dropped: list[Drop], fields: Fields) -> list[Pair]:
    delivered: set[tuple[str, str]] = set()
    first_by_text: dict[str, str] = {}
    unique = []
    for pair in pairs:
        if (pair.pair_id, pair.chunk_id) in delivered:
            dropped.append(Drop(pair, "replayed", pair.pair_id, 1.0))
            continue
        delivered.add((pair.pair_id, pair.chunk_id))
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
        pool = new_pool(config, seeds)
    elif (pool.threshold, pool.compares) != (config.threshold, config.fields):
        raise ValueError(
            f"the pool holds {pool.compares or 'unnamed'} texts at threshold {pool.threshold}; "
            f"the config compares {config.fields} at {config.threshold}"
        )
    decisions = pool.filter([config.fields.text(p) for p in pairs], [p.pair_id for p in pairs])
    kept = []
    for pair, keep, match, score in zip(
        pairs, decisions.kept, decisions.match, decisions.score, strict=True
    ):
        if keep:
            kept.append(pair)
        else:
            dropped.append(Drop(pair, "near_duplicate", pool.ids[match], float(score)))
    return kept


def new_pool(config: CurationConfig, seeds: Sequence[str] = ()) -> RougePool:
    """An empty ROUGE-L pool for `config`, holding the seed tasks (named seed:N) first."""
    pool = RougePool(config.threshold, compares=config.fields)
    pool.add(seeds, [f"seed:{i}" for i in range(len(seeds))])
    return pool


def eval_documents(doc_ids: set[str], config: CurationConfig) -> frozenset[str]:
    """The documents held out: those whose salted hash falls below `eval_fraction`, so a
    document keeps its side as the corpus grows. With two documents or more and a fraction
    above 0, at least one is held out and at least one trains: in a corpus too small for its
    fraction that moves the document of lowest (or highest) hash, and only that one can
    change sides when documents are added."""
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
