"""Compiled kernels of the ROUGE-L filter: prefix-filtered candidate search, multiset overlap and
bit-parallel LCS over integer token ids. `neardup.py` prepares the arrays; nothing here knows text.

Exactness rests on two facts. The decision is rouge-score's own double arithmetic (`fmeasure`),
evaluated on the true LCS. Every pruning bound is derived so that it can only keep a pair the
decision might accept: `min_lcs` starts below the smallest LCS that could pass, by a margin far
larger than the formula's rounding error, and steps up through the formula itself.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

# Relative error of rouge-score's F = 2*p*r/(p+r) against the exact 2*lcs/(m+n): four roundings
# (two divisions, a product, a sum; 2*p and the int conversions are exact), below 1e-15.
# Bounds are widened by far more than that.
_DELTA = 1e-12
_SHRINK = 1.0 - 1e-9

MODE_FILTER = 0  # keep (and insert) what matches nothing in the pool
MODE_ADD = 1  # insert everything, no question asked (seed tasks)
MODE_QUERY = 2  # report matches, insert nothing (contamination check)

# Counters in `stats`: candidates met in the index, overlaps merged, LCS computed.
STAT_CANDIDATES, STAT_OVERLAPS, STAT_LCS = 0, 1, 2

ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@nb.njit(cache=True, inline="always")
def fmeasure(lcs: int, m: int, n: int) -> float:
    """rouge-score's ROUGE-L F for an LCS of `lcs` between a kept text of m tokens (the
    prediction) and a new one of n (the target): the same double operations in the same order."""
    if lcs == 0:
        return 0.0  # rouge-score: empty token lists score 0, and p + r == 0 gives 0.0
    precision = lcs / m
    recall = lcs / n
    return 2 * precision * recall / (precision + recall)


@nb.njit(cache=True, inline="always")
def decide(lcs: int, m: int, n: int, threshold: float, inclusive: bool) -> bool:
    f = fmeasure(lcs, m, n)
    return f >= threshold if inclusive else f > threshold


@nb.njit(cache=True)
def min_lcs(m: int, n: int, threshold: float, inclusive: bool) -> int:
    """The smallest LCS for which `decide` holds, or more than min(m, n) when none can.

    Any passing LCS satisfies lcs >= threshold*(m+n)/(2*(1+_DELTA)) (the float F is within
    _DELTA of 2*lcs/(m+n)), so starting just under that and stepping up through `decide` finds
    the true minimum without assuming the float formula is monotone."""
    top = min(m, n)
    low = int(math.floor(threshold * (m + n) / (2.0 * (1.0 + _DELTA)) * _SHRINK))
    low = max(low, 1)
    while low <= top and not decide(low, m, n, threshold, inclusive):
        low += 1
    return low


@nb.njit(cache=True)
def prefix_length(n: int, threshold: float) -> int:
    """How many of a record's rarest elements must be probed (or indexed): any pair that can
    pass shares at least threshold*n/(2*(1+_DELTA)-threshold) elements with a record of n
    (prefix filtering: two sets with overlap >= t share an element in their first |x|-t+1)."""
    if n == 0:
        return 0
    need = int(math.floor(threshold * n / (2.0 * (1.0 + _DELTA) - threshold) * _SHRINK))
    need = max(need, 1)
    return n - need + 1


@nb.njit(cache=True, inline="always")
def _popcount(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return int((x * _H01) >> np.uint64(56))


@nb.njit(cache=True)
def _build_masks(seq: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Match masks of one text (Hyyrö's bit-parallel LCS): bit i of masks[local[t]] is set
    when token t sits at position i. Fills `local` (token id -> row, -1 elsewhere); one row
    per distinct token, so a long text with a small vocabulary stays small."""
    rows = 0
    for i in range(seq.shape[0]):
        if local[seq[i]] < 0:
            local[seq[i]] = rows
            rows += 1
    masks = np.zeros((rows, (seq.shape[0] + 63) >> 6), dtype=np.uint64)
    for i in range(seq.shape[0]):
        masks[local[seq[i]], i >> 6] |= np.uint64(1) << np.uint64(i & 63)
    return masks


@nb.njit(cache=True)
def _clear_masks(seq: np.ndarray, local: np.ndarray) -> None:
    for i in range(seq.shape[0]):
        local[seq[i]] = -1


@nb.njit(cache=True)
def lcs_bitparallel(
    n: int, other: np.ndarray, local: np.ndarray, masks: np.ndarray, v: np.ndarray
) -> int:
    """LCS length between the masked text (n tokens) and `other`: O(len(other) * n/64)."""
    words = (n + 63) >> 6
    for w in range(words):
        v[w] = ONES
    for j in range(other.shape[0]):
        row = local[other[j]]
        if row < 0:
            continue  # U = 0: V is unchanged
        carry = np.uint64(0)
        for w in range(words):
            old = v[w]
            match = masks[row, w]
            u = old & match
            total = old + u
            c1 = np.uint64(1) if total < old else np.uint64(0)
            total2 = total + carry
            c2 = np.uint64(1) if total2 < total else np.uint64(0)
            carry = c1 | c2
            v[w] = total2 | (old & ~match)  # (V + U) | (V - U), and V - U == V & ~M
    ones = 0
    for w in range(words - 1):
        ones += _popcount(v[w])
    tail = n - ((words - 1) << 6)
    last = v[words - 1]
    if tail < 64:
        last &= (np.uint64(1) << np.uint64(tail)) - np.uint64(1)
    ones += _popcount(last)
    return n - ones


@nb.njit(cache=True)
def lcs_pair(a: np.ndarray, b: np.ndarray, vocab: int) -> int:
    """LCS length of two id sequences (the single-pair entry point, for tests and tools)."""
    if a.shape[0] == 0:
        return 0
    local = np.full(vocab, -1, dtype=np.int32)
    masks = _build_masks(a, local)
    v = np.empty(masks.shape[1], dtype=np.uint64)
    return lcs_bitparallel(a.shape[0], b, local, masks, v)


@nb.njit(cache=True)
def overlap(a: np.ndarray, b: np.ndarray, rank: np.ndarray) -> int:
    """Size of the intersection of two element lists sorted by rank (the multiset overlap of
    two texts, each repeat of a token being its own element): an upper bound of their LCS."""
    i = 0
    j = 0
    found = 0
    while i < a.shape[0] and j < b.shape[0]:
        ra = rank[a[i]]
        rb = rank[b[j]]
        if ra == rb:
            found += 1
            i += 1
            j += 1
        elif ra < rb:
            i += 1
        else:
            j += 1
    return found


@nb.njit(cache=True)
def run_batch(
    mode: int,
    threshold: float,
    inclusive: bool,
    # the batch: token ids in text order, element ids sorted by rank, offsets
    b_seq: np.ndarray,
    b_set: np.ndarray,
    b_off: np.ndarray,
    rank: np.ndarray,
    # the pool (capacity reserved by the caller), updated in place
    p_seq: np.ndarray,
    p_set: np.ndarray,
    p_off: np.ndarray,
    count: int,
    # the inverted index over each pool record's prefix: linked postings per element
    head: np.ndarray,
    nxt: np.ndarray,
    post_rec: np.ndarray,
    post_pos: np.ndarray,
    n_post: int,
    # scratch: per pool record, and per token id
    seen: np.ndarray,
    hits: np.ndarray,
    need: np.ndarray,
    local: np.ndarray,
    # results per batch record, and counters
    kept: np.ndarray,
    match: np.ndarray,
    score: np.ndarray,
    stats: np.ndarray,
    probes: np.ndarray,  # one counter, private to the pool: `seen` marks must never repeat
) -> tuple[int, int]:
    """Decide each batch record in order against the pool, which grows with what is kept.

    For each record: probe the index with its prefix, counting shared prefix elements per
    candidate (PPJoin's positional filter drops those that cannot reach their bound), then
    verify survivors by full overlap and finally by LCS, stopping at the first that passes."""
    cand = np.empty(max(count + b_off.shape[0], 1), dtype=np.int64)
    longest = 0
    for i in range(b_off.shape[0] - 1):
        longest = max(longest, b_off[i + 1] - b_off[i])
    masks = np.zeros((0, 0), dtype=np.uint64)
    v = np.empty((longest + 63) // 64 + 1, dtype=np.uint64)
    for x in range(b_off.shape[0] - 1):
        lo = b_off[x]
        n = b_off[x + 1] - lo
        seq = b_seq[lo : lo + n]
        elems = b_set[lo : lo + n]
        found = -1
        best = 0.0
        prefix = prefix_length(n, threshold)
        if mode != MODE_ADD and n > 0:
            stamp = probes[0] + x + 1  # `seen` marks differ for every probe ever made
            n_cand = 0
            for i in range(prefix):
                p = head[elems[i]]
                while p != -1:
                    r = post_rec[p]
                    j = post_pos[p]
                    p = nxt[p]
                    m = p_off[r + 1] - p_off[r]
                    if seen[r] != stamp:
                        seen[r] = stamp
                        stats[STAT_CANDIDATES] += 1
                        need[r] = min_lcs(m, n, threshold, inclusive)
                        if need[r] > min(m, n):
                            hits[r] = -1  # the lengths alone rule it out
                            continue
                        hits[r] = 0
                        cand[n_cand] = r
                        n_cand += 1
                    if hits[r] < 0:
                        continue
                    if hits[r] + 1 + min(n - i - 1, m - j - 1) >= need[r]:
                        hits[r] += 1
                    else:
                        hits[r] = -1
            built = False
            for c in range(n_cand):
                r = cand[c]
                if hits[r] <= 0:
                    continue
                other_set = p_set[p_off[r] : p_off[r + 1]]
                stats[STAT_OVERLAPS] += 1
                if overlap(elems, other_set, rank) < need[r]:
                    continue
                if not built:
                    masks = _build_masks(seq, local)
                    built = True
                stats[STAT_LCS] += 1
                m = p_off[r + 1] - p_off[r]
                common = lcs_bitparallel(n, p_seq[p_off[r] : p_off[r + 1]], local, masks, v)
                if decide(common, m, n, threshold, inclusive):
                    found = r
                    best = fmeasure(common, m, n)
                    break
            if built:
                _clear_masks(seq, local)
        match[x] = found
        score[x] = best
        kept[x] = found < 0
        if mode == MODE_QUERY or found >= 0:
            continue
        # Insert into the pool and index its prefix.
        start = p_off[count]
        p_seq[start : start + n] = seq
        p_set[start : start + n] = elems
        p_off[count + 1] = start + n
        for i in range(prefix):
            post_rec[n_post] = count
            post_pos[n_post] = i
            nxt[n_post] = head[elems[i]]
            head[elems[i]] = n_post
            n_post += 1
        count += 1
    probes[0] += b_off.shape[0] - 1
    return count, n_post
