"""ROUGE-L near-duplicate filtering that decides exactly as Self-Instruct and Alpaca do, fast.

Their rule: a new text is dropped when its ROUGE-L F-measure against any text kept so far is
above the threshold (rouge-score, default tokenizer, no stemmer; the new text is the target,
the kept one the prediction), in order. `RougePool` holds the kept texts as integer ids with an
inverted index over their rarest elements; `kernels.py` does the search. BENCHMARKS.md has the
figures and why it is built this way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.curation import kernels

_TOKEN = re.compile(r"[a-z0-9]+")
_FORMAT = "distillery-rouge-pool/1"


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokenizer: `str.lower()`, then the runs of [a-z0-9] (it replaces
    everything else with spaces, splits and keeps the [a-z0-9]+ tokens: the same list)."""
    return _TOKEN.findall(text.lower())


def fmeasure(lcs: int, m: int, n: int) -> float:
    """rouge-score's ROUGE-L F for an LCS between a prediction of m tokens and a target of n."""
    return float(kernels.fmeasure(lcs, m, n))


def rouge_l(target: str, prediction: str) -> float:
    """ROUGE-L F of two texts through the filter's own tokenizer and bit-parallel LCS."""
    ids: dict[str, int] = {}
    a = np.array([ids.setdefault(t, len(ids)) for t in tokenize(target)], dtype=np.int32)
    b = np.array([ids.setdefault(t, len(ids)) for t in tokenize(prediction)], dtype=np.int32)
    if len(a) == 0 or len(b) == 0:
        return 0.0
    return fmeasure(int(kernels.lcs_pair(a, b, len(ids))), len(b), len(a))


@dataclass(frozen=True)
class Decisions:
    """One entry per text of a batch, in order."""

    kept: np.ndarray  # bool
    match: np.ndarray  # int64: pool index of the kept text that matched, -1 when none did
    score: np.ndarray  # float64: the ROUGE-L F of that match, 0.0 when none


class RougePool:
    """Texts kept so far, indexed for ROUGE-L queries at one threshold.

    `add` puts texts in unconditionally (seed tasks), `filter` keeps and adds what matches
    nothing (F > threshold), `query` only reports matches (F >= threshold by default: the
    contamination check). Pool indices count texts in the order they entered; `ids` names
    each (a pair id, "seed:3"), and `compares` says what the texts are (which fields)."""

    def __init__(self, threshold: float = 0.7, *, compares: str = "") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.compares = compares
        self.ids: list[str] = []
        self._vocab: dict[str, int] = {}
        # An element is a token's k-th occurrence in a text, so multisets become sets.
        self._elements: dict[tuple[int, int], int] = {}
        self._rank = np.zeros(0, dtype=np.int64)
        self._df = np.zeros(0, dtype=np.int64)  # texts each element was met in
        self._count = 0
        self._n_post = 0
        self._seq = np.zeros(0, dtype=np.int32)
        self._set = np.zeros(0, dtype=np.int32)
        self._off = np.zeros(1, dtype=np.int64)
        self._head = np.zeros(0, dtype=np.int64)
        self._nxt = np.zeros(0, dtype=np.int64)
        self._post_rec = np.zeros(0, dtype=np.int32)
        self._post_pos = np.zeros(0, dtype=np.int32)
        self._seen = np.zeros(0, dtype=np.int64)
        self._hits = np.zeros(0, dtype=np.int32)
        self._need = np.zeros(0, dtype=np.int32)
        self._local = np.zeros(0, dtype=np.int32)
        #: Counters for people: candidates met in the index, overlaps merged, LCS computed.
        self.stats = np.zeros(3, dtype=np.int64)
        self._probes = np.zeros(1, dtype=np.int64)  # makes every probe's `seen` mark unique

    def __len__(self) -> int:
        return self._count

    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> None:
        self._run(kernels.MODE_ADD, texts, inclusive=False)
        self.ids += self._names(texts, ids)

    def filter(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> Decisions:
        names = self._names(texts, ids)
        decisions = self._run(kernels.MODE_FILTER, texts, inclusive=False)
        self.ids += [name for name, keep in zip(names, decisions.kept, strict=True) if keep]
        return decisions

    def query(self, texts: Sequence[str], *, inclusive: bool = True) -> Decisions:
        return self._run(kernels.MODE_QUERY, texts, inclusive=inclusive)

    def _names(self, texts: Sequence[str], ids: Sequence[str] | None) -> list[str]:
        if ids is None:
            return [f"pool:{len(self.ids) + i}" for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
        return list(ids)

    def _run(self, mode: int, texts: Sequence[str], *, inclusive: bool) -> Decisions:
        return self._decide(mode, *self._encode(texts), inclusive=inclusive)

    def _decide(
        self, mode: int, seq: np.ndarray, elems: np.ndarray, off: np.ndarray, *, inclusive: bool
    ) -> Decisions:
        """Run the kernel over an encoded batch (token ids, ranked elements, offsets)."""
        n = len(off) - 1
        self._reserve(n, len(seq))
        kept = np.zeros(n, dtype=np.bool_)
        match = np.full(n, -1, dtype=np.int64)
        score = np.zeros(n, dtype=np.float64)
        self._count, self._n_post = kernels.run_batch(
            mode, self.threshold, inclusive, seq, elems, off, self._rank,
            self._seq, self._set, self._off, self._count,
            self._head, self._nxt, self._post_rec, self._post_pos, self._n_post,
            self._seen, self._hits, self._need, self._local,
            kept, match, score, self.stats, self._probes,
        )  # fmt: skip
        return Decisions(kept, match, score)

    def _encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids in text order, element ids sorted by rank, and offsets, for a batch."""
        vocab, elements = self._vocab, self._elements
        first_new = len(elements)
        seq: list[int] = []
        elems: list[int] = []
        off = [0]
        for text in texts:
            seen: dict[int, int] = {}
            for token in tokenize(text):
                tid = vocab.setdefault(token, len(vocab))
                k = seen.get(tid, 0)
                seen[tid] = k + 1
                seq.append(tid)
                elems.append(elements.setdefault((tid, k), len(elements)))
            off.append(len(seq))
        elem_arr = np.array(elems, dtype=np.int32)
        self._rank_elements(elem_arr, first_new)
        lengths = np.diff(off)
        owner = np.repeat(np.arange(len(texts)), lengths)
        order = np.lexsort((self._rank[elem_arr], owner))
        return np.array(seq, dtype=np.int32), elem_arr[order], np.array(off, dtype=np.int64)

    def _rank_elements(self, elems: np.ndarray, first_new: int) -> None:
        """Rank the elements first met in this batch among the older ones, by how many texts
        hold them (rare first: short prefixes, short posting lists). Older elements keep their
        order, so every indexed prefix stays valid (the index stores element ids, and ranks
        only order them); any consistent order is correct, a frequency order is fast."""
        n_new = len(self._elements) - first_new
        self._df = np.concatenate([self._df, np.zeros(n_new, dtype=np.int64)])
        self._df += np.bincount(elems, minlength=len(self._df))
        if n_new == 0:
            return
        old = np.argsort(self._rank)  # element ids in their current order
        # New ones go before the first older element at least as frequent (older frequencies
        # made non-decreasing along the order, since the order predates them).
        ceiling = np.maximum.accumulate(self._df[old]) if len(old) else old
        new = np.arange(first_new, len(self._elements))
        slot = np.searchsorted(ceiling, self._df[new], side="left")
        keys = np.concatenate([2 * np.arange(len(old)) + 1, 2 * slot])
        ids = np.concatenate([old, new])
        order = ids[np.lexsort((self._df[ids], keys))]
        self._rank = np.empty(len(self._elements), dtype=np.int64)
        self._rank[order] = np.arange(len(order))

    def _reserve(self, texts: int, tokens: int) -> None:
        """Grow every array so that the batch fits even if all of it is kept."""
        records = self._count + texts
        total = int(self._off[self._count]) + tokens
        self._off = _grown(self._off, records + 1, 0)
        self._seen = _grown(self._seen, records, 0)
        self._hits = _grown(self._hits, records, 0)
        self._need = _grown(self._need, records, 0)
        self._seq = _grown(self._seq, total, 0)
        self._set = _grown(self._set, total, 0)
        postings = self._n_post + tokens
        self._nxt = _grown(self._nxt, postings, 0)
        self._post_rec = _grown(self._post_rec, postings, 0)
        self._post_pos = _grown(self._post_pos, postings, 0)
        self._head = _grown(self._head, len(self._elements), -1)
        self._local = _grown(self._local, len(self._vocab), -1)

    def save(self, path: Path) -> None:
        """Write the pool (texts as token ids, their names, vocabulary, ranks) to one .npz file,
        atomically; the index is rebuilt on load, in linear time. One writer at a time."""
        keys = np.array(list(self._elements), dtype=np.int64).reshape(-1, 2)
        end = int(self._off[self._count])
        meta = {
            "format": _FORMAT, "threshold": self.threshold, "compares": self.compares,
        }  # fmt: skip
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as f:
            np.savez_compressed(
                f,
                meta=np.array(json.dumps(meta)),
                ids=np.array(self.ids, dtype=np.str_),
                vocab=np.array(list(self._vocab), dtype=np.str_),
                element_keys=keys,
                rank=self._rank,
                df=self._df,
                seq=self._seq[:end],
                set=self._set[:end],
                off=self._off[: self._count + 1],
            )
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> RougePool:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path}: not a ROUGE pool file ({meta.get('format')!r})")
            pool = cls(meta["threshold"], compares=meta["compares"])
            pool.ids = [str(name) for name in data["ids"]]
            pool._vocab = {str(t): i for i, t in enumerate(data["vocab"])}
            pool._elements = {(int(t), int(k)): i for i, (t, k) in enumerate(data["element_keys"])}
            pool._rank = data["rank"]
            pool._df = data["df"]
            # The kept texts go back in as one batch: the index is rebuilt, nothing re-decided.
            pool._decide(kernels.MODE_ADD, data["seq"], data["set"], data["off"], inclusive=False)
        return pool


def _grown(array: np.ndarray, size: int, fill: int) -> np.ndarray:
    """`array` with room for `size` items: doubled when short, the new part set to `fill`."""
    if len(array) >= size:
        return array
    bigger = np.full(max(size, 2 * len(array)), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger
