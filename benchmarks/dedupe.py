"""The ROUGE-L near-duplicate filter against the loop of Self-Instruct and Alpaca, same run.

    python -m benchmarks.dedupe

Reference: Alpaca's `generate_instruction.py` filter in one process: each instruction is
tokenised once with rouge-score's tokenizer, scored with `rouge_scorer._score_lcs` against every
kept one, and kept when the max is <= the threshold (0.7). Fast: `RougePool.filter` on the same
strings, tokenisation included, the compiled kernels loaded beforehand (their one-time compile
is timed on its own, into an empty cache). Then the fast filter alone on all 52,002, on a set
rich in near-duplicates made by perturbing Alpaca's instructions (its decisions checked against
the reference on a 3,000-item sample), and at threshold 0.5. Any differing decision counts.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Time the compile into an empty cache: numba reads NUMBA_CACHE_DIR when it is imported.
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cache-")

from pipeline.curation.neardup import RougePool  # noqa: E402
from tests.support.rouge_reference import reference  # noqa: E402

DATA = Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared")) / "data" / "instructions"
SIZES = (2000, 4000)
SAMPLE = 3000
REPEATS = 3


def fast(texts: list[str], threshold: float) -> tuple[list[bool], float, RougePool]:
    """Decisions, the median seconds of REPEATS fresh runs, and the last run's pool."""
    times = []
    for _ in range(REPEATS):
        pool = RougePool(threshold)
        start = time.perf_counter()
        kept = pool.filter(texts).kept.tolist()
        times.append(time.perf_counter() - start)
    return kept, statistics.median(times), pool


def perturbed(texts: list[str]) -> list[tuple[int, str]]:
    """Each instruction and 0-3 variants of it (a word dropped, two swapped, one upper-cased,
    punctuation added or removed), shuffled: near-duplicates everywhere, far apart in order.
    Each item comes with the index of the instruction it was made from."""
    rng = random.Random(2026)  # noqa: S311 - a reproducible data set, not a secret

    def vary(text: str) -> str:
        words = text.split()
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(words))
            kind = rng.randrange(4)
            if kind == 0 and len(words) > 3:
                del words[i]
            elif kind == 1 and len(words) > 1:
                j = rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
            elif kind == 2:
                words[i] = words[i].upper() if rng.random() < 0.5 else words[i].capitalize()
            else:
                words[i] = words[i].strip(".,;:!?") or words[i] + rng.choice(",.;!?")
        return " ".join(words)

    out = []
    for i, text in enumerate(texts):
        out.append((i, text))
        out.extend((i, vary(text)) for _ in range(rng.randint(0, 3)))
    rng.shuffle(out)
    return out


def sample_of(items: list[tuple[int, str]], size: int) -> list[str]:
    """`size` items in stream order, taken whole-family (an instruction with its variants) so
    that the sample is as rich in near-duplicates as the set."""
    rng = random.Random(7)  # noqa: S311 - a reproducible sample
    families = sorted({i for i, _ in items})
    chosen = set(rng.sample(families, size))  # more than enough families
    return [text for i, text in items if i in chosen][:size]


def main() -> None:
    path = DATA / "alpaca" / "alpaca_data.json"
    if not path.is_file():
        sys.exit(f"{path} not found: set DISTILLERY_TEST_DATA")
    instructions = [row["instruction"] for row in json.loads(path.read_text())]

    start = time.perf_counter()
    RougePool(0.7).filter(["compile the kernels", "compile the kernels now"])
    compile_s = time.perf_counter() - start
    print(f"kernels compiled in {compile_s:.1f} s (cached on disk after the first run)")

    diffs = 0
    side_by_side = {}
    for n in SIZES:
        texts = instructions[:n]
        start = time.perf_counter()
        expected = reference(texts, 0.7)
        ref_s = time.perf_counter() - start
        kept, fast_s, _ = fast(texts, 0.7)
        differ = sum(a != b for a, b in zip(expected, kept, strict=True))
        diffs += differ
        side_by_side[n] = (ref_s, fast_s)
        print(f"N={n}: reference {ref_s:.1f} s, fast {fast_s * 1000:.1f} ms, "
              f"{ref_s / fast_s:.0f}x, kept {sum(kept)}, {differ} decisions differ")  # fmt: skip

    kept, full_s, pool = fast(instructions, 0.7)
    candidates, overlaps, lcs = pool.stats.tolist()
    print(f"all {len(instructions)}: {full_s:.2f} s, kept {sum(kept)}; {candidates} candidates "
          f"from the index, {overlaps} overlaps merged, {lcs} LCS computed")  # fmt: skip

    family_items = perturbed(instructions)
    variants = [text for _, text in family_items]
    kept_p, pert_s, _ = fast(variants, 0.7)
    sample = sample_of(family_items, SAMPLE)
    sample_fast, _, _ = fast(sample, 0.7)
    sample_ref = reference(sample, 0.7)
    differ = sum(a != b for a, b in zip(sample_ref, sample_fast, strict=True))
    diffs += differ
    print(
        f"perturbed {len(variants)}: {pert_s:.2f} s, dropped {len(variants) - sum(kept_p)}; "
        f"sample of {SAMPLE}: dropped {SAMPLE - sum(sample_ref)}, {differ} decisions differ"
    )

    kept_05, half_s, _ = fast(instructions, 0.5)
    check = instructions[: SIZES[0]]
    differ = sum(a != b for a, b in zip(reference(check, 0.5), fast(check, 0.5)[0], strict=True))
    diffs += differ
    print(f"threshold 0.5: {half_s:.2f} s, dropped {len(instructions) - sum(kept_05)}; "
          f"first {len(check)} against the reference: {differ} decisions differ")  # fmt: skip

    ref_s, fast_s = side_by_side[SIZES[-1]]
    result = {
        "n_ref": SIZES[-1],
        "speedup": round(ref_s / fast_s),
        "decision_diffs": diffs,
        "full_n": len(instructions),
        "full_seconds": round(full_s, 2),
        "perturbed_dropped": len(variants) - sum(kept_p),
        "perturbed_n": len(variants),
        "perturbed_seconds": round(pert_s, 2),
        "speedup_n2000": round(side_by_side[SIZES[0]][0] / side_by_side[SIZES[0]][1]),
        "reference_seconds": round(ref_s, 1),
        "fast_seconds": round(fast_s, 4),
        "threshold_05_dropped": len(instructions) - sum(kept_05),
        "threshold_05_seconds": round(half_s, 2),
        "compile_seconds": round(compile_s, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
