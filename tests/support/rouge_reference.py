"""The reference the ROUGE-L filter must agree with (the filter loop of Alpaca's
`generate_instruction.py`, Self-Instruct's rule, with rouge-score's own tokenizer and LCS), and
near-duplicates to try it on."""

from __future__ import annotations

import random
from collections.abc import Sequence

from rouge_score import rouge_scorer

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference(stream: Sequence[str], threshold: float, seeds: Sequence[str] = ()) -> list[bool]:
    """Keep a text when no score against the pool (seeds, then what was kept) exceeds
    `threshold`; each text tokenised once, as Alpaca does."""
    pool = [SCORER._tokenizer.tokenize(s) for s in seeds]
    kept = []
    for text in stream:
        tokens = SCORER._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, other).fmeasure for other in pool]
        keep = not scores or max(scores) <= threshold
        kept.append(keep)
        if keep:
            pool.append(tokens)
    return kept


def perturbed(texts: list[str], seed: int) -> list[str]:
    """Near-duplicates: each text with up to two variants (word drop, swap, case, punctuation)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible variants, no secret

    def vary(text: str) -> str:
        words = text.split()
        i = rng.randrange(len(words))
        match rng.randrange(4):
            case 0 if len(words) > 2:
                del words[i]
            case 1 if len(words) > 2:
                j = min(i + 1, len(words) - 1)
                words[i], words[j] = words[j], words[i]
            case 2:
                words[i] = words[i].upper()
            case _:
                words[i] += rng.choice(",.;!?")
        return " ".join(words)

    out = []
    for text in texts:
        out.append(text)
        out.extend(vary(text) for _ in range(rng.randrange(3)))
    rng.shuffle(out)
    return out
