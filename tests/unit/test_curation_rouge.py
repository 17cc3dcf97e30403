"""The fast ROUGE-L filter against rouge-score itself: the same tokens, the same F down to the
last bit, and the same keep/drop decisions as Self-Instruct's and Alpaca's loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from pipeline.curation import kernels
from pipeline.curation.neardup import RougePool, fmeasure, rouge_l, tokenize
from tests.support.rouge_reference import SCORER, perturbed, reference

pytestmark = pytest.mark.unit

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Few words, so random texts share many tokens and LCS values land near every threshold;
# punctuation, case, digits and non-ASCII to exercise the tokenizer.
WORDS = ["a", "the", "cat", "Cat", "sat", "mat", "on", "x1", "42", "é", "Ünïcode", "İstanbul"]
SEPARATORS = [" ", "  ", ", ", ".", "-", "\n", "!?", "…", "\u00a0", "_", "'"]
texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=40).map(
    lambda parts: "".join(w + s for w, s in parts)
)
long_texts = st.lists(st.sampled_from(WORDS[:6]), min_size=60, max_size=200).map(" ".join)


def rouge(target: str, prediction: str) -> float:
    return float(SCORER.score(target, prediction)["rougeL"].fmeasure)


@PROPERTY
@given(st.text())
def test_tokenizer_is_rouge_scores(text: str) -> None:
    assert tokenize(text) == SCORER._tokenizer.tokenize(text)


@PROPERTY
@given(texts, texts)
def test_rouge_l_equals_rouge_score_bit_for_bit(a: str, b: str) -> None:
    assert rouge_l(a, b) == rouge(a, b)


@PROPERTY
@given(long_texts, long_texts)
def test_rouge_l_on_texts_longer_than_one_machine_word(a: str, b: str) -> None:
    """60 to 200 tokens: the bit-parallel LCS carries across 64-bit words."""
    assert rouge_l(a, b) == rouge(a, b)


@PROPERTY
@given(
    st.lists(st.sampled_from(WORDS), max_size=300), st.lists(st.sampled_from(WORDS), max_size=300)
)
def test_lcs_equals_dynamic_programming(a: list[str], b: list[str]) -> None:
    ids = {w: i for i, w in enumerate(WORDS)}
    lcs = kernels.lcs_pair(
        np.array([ids[w] for w in a], np.int32), np.array([ids[w] for w in b], np.int32), len(ids)
    )
    table = rouge_scorer._lcs_table(a, b)
    assert lcs == table[-1][-1]


def test_a_tie_by_integers_is_not_a_tie_in_doubles() -> None:
    """lcs=7, m=8, n=12: 2*7/(8+12) is exactly 0.7, but rouge-score's doubles give
    0.7000000000000001, so the reference drops it. So must we."""
    kept = "a b c d e f g h"
    new = "a b c d e f g u v w y z"
    assert rouge(new, kept) == 0.7000000000000001
    assert rouge_l(new, kept) == rouge(new, kept)
    pool = RougePool(0.7)
    pool.add([kept])
    assert not pool.filter([new]).kept[0]


def test_min_lcs_is_the_first_passing_lcs() -> None:
    """The pruning bound against brute force over every length pair up to 120 tokens."""
    for threshold in (0.7, 0.5, 2 / 3, 0.35, 0.123456789, 1.0):
        for inclusive in (False, True):
            for m in range(1, 121):
                for n in range(1, 121):
                    passing = [
                        lcs
                        for lcs in range(1, min(m, n) + 1)
                        if (f := fmeasure(lcs, m, n)) > threshold or (inclusive and f == threshold)
                    ]
                    expected = passing[0] if passing else min(m, n) + 1
                    got = kernels.min_lcs(m, n, threshold, inclusive)
                    assert min(got, min(m, n) + 1) == expected, (threshold, inclusive, m, n)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(texts, max_size=60),
    st.sampled_from([0.7, 0.5, 0.3, 2 / 3, 0.9, 0.25]) | st.floats(0.05, 1.0),
)
def test_decisions_equal_the_reference_on_random_streams(stream: list[str], thr: float) -> None:
    assert RougePool(thr).filter(stream).kept.tolist() == reference(stream, thr)


@settings(max_examples=40, deadline=None)
@given(st.lists(long_texts, max_size=10), st.sampled_from([0.5, 0.7, 0.9]))
def test_decisions_on_long_texts(stream: list[str], thr: float) -> None:
    """Several 64-bit words per text, in the filter's own mask building and probing."""
    assert RougePool(thr).filter(stream).kept.tolist() == reference(stream, thr)


def test_decisions_on_real_outputs(test_data: Path) -> None:
    """Alpaca's outputs (up to hundreds of tokens) with near-duplicates, on `output`."""
    with (test_data / "data/instructions/alpaca/alpaca_data.json").open() as f:
        outputs = [row["output"] for row in json.load(f)[:200] if len(row["output"]) > 300][:25]
    stream = perturbed(outputs, seed=5)
    for threshold in (0.5, 0.8):
        kept = RougePool(threshold).filter(stream).kept
        assert kept.tolist() == reference(stream, threshold)
        assert 0 < kept.sum() < len(stream)  # texts of up to 252 tokens, some dropped


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, min_size=1, max_size=12), st.lists(texts, max_size=40))
def test_decisions_with_seed_tasks_in_the_pool(seeds: list[str], stream: list[str]) -> None:
    pool = RougePool(0.5)
    pool.add(seeds)
    assert pool.filter(stream).kept.tolist() == reference(stream, 0.5, tuple(seeds))
    assert len(pool) == len(seeds) + sum(reference(stream, 0.5, tuple(seeds)))


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, max_size=30), st.lists(texts, max_size=30))
def test_query_reports_every_text_at_or_above_the_threshold(
    pool_texts: list[str], probe: list[str]
) -> None:
    pool = RougePool(0.5)
    pool.add(pool_texts)
    found = pool.query(probe)
    for i, text in enumerate(probe):
        best = max((rouge(text, other) for other in pool_texts), default=0.0)
        assert found.kept[i] == (best < 0.5)
        if not found.kept[i]:
            assert rouge(text, pool_texts[found.match[i]]) == found.score[i] >= 0.5
    assert len(pool) == len(pool_texts)  # a query adds nothing


def alpaca(test_data: Path) -> list[str]:
    with (test_data / "data/instructions/alpaca/alpaca_data.json").open() as f:
        return [row["instruction"] for row in json.load(f)]


@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.35])
def test_decisions_equal_the_reference_on_alpaca(test_data: Path, threshold: float) -> None:
    """Real instructions, raw and with near-duplicates mixed in (the thresholds below 0.7 and
    the variants are where decisions happen: Alpaca's file is itself the output at 0.7)."""
    instructions = alpaca(test_data)[:400]
    for stream in (instructions, perturbed(instructions, seed=7)[:600]):
        decisions = RougePool(threshold).filter(stream)
        expected = reference(stream, threshold)
        assert decisions.kept.tolist() == expected
        assert 0 < sum(expected) <= len(stream)


def test_alpaca_survives_its_own_filter(test_data: Path) -> None:
    """Every instruction in alpaca_data.json passed the 0.7 filter, including those exactly at
    0.7; an integer test of 20*lcs > 7*(m+n) would drop some of them."""
    instructions = alpaca(test_data)
    assert RougePool(0.7).filter(instructions).kept.all()


def test_batches_and_a_saved_pool_decide_as_one_pass(test_data: Path, tmp_path: Path) -> None:
    """Incremental mode: filtering in batches, with the pool saved and loaded between them,
    decides exactly as one pass over the whole stream."""
    stream = perturbed(alpaca(test_data)[:1500], seed=3)
    whole = RougePool(0.5).filter(stream).kept
    pool = RougePool(0.5)
    first = pool.filter(stream[:700]).kept
    pool.save(tmp_path / "pool.npz")
    again = RougePool.load(tmp_path / "pool.npz")
    assert len(again) == len(pool) == first.sum()
    second = again.filter(stream[700:]).kept
    assert np.concatenate([first, second]).tolist() == whole.tolist()


def test_matches_name_the_kept_text_and_its_score() -> None:
    pool = RougePool(0.7)
    decisions = pool.filter(["Give three tips for staying healthy.", "Name a color.",
                             "give 3 tips for staying healthy!"])  # fmt: skip
    assert decisions.kept.tolist() == [True, True, False]
    assert decisions.match.tolist() == [-1, -1, 0]
    assert decisions.score[2] == rouge("give 3 tips for staying healthy!",
                                       "Give three tips for staying healthy.")  # fmt: skip


def test_empty_texts_are_kept_and_never_match() -> None:
    """rouge-score scores an empty token list 0 against anything, so the reference keeps it."""
    assert RougePool(0.1).filter(["", "?!", "...", ""]).kept.tolist() == [True] * 4


def test_bad_thresholds_and_files_are_named(tmp_path: Path) -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            RougePool(bad)
    path = tmp_path / "other.npz"
    np.savez(path, meta=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match="not a ROUGE pool"):
        RougePool.load(path)


def test_the_counters_are_only_for_reading() -> None:
    """Resetting `stats` (to measure one batch) must not change a decision."""
    pool = RougePool(0.5)
    pool.filter(["alpha beta gamma delta"])
    pool.filter(["alpha zzz"])
    pool.stats[:] = 0
    assert pool.filter(["q", "alpha beta gamma delta"]).kept.tolist() == [True, False]


def test_a_word_new_to_the_pool_but_common_in_a_batch_is_ranked_as_common(
    test_data: Path,
) -> None:
    """Ranking a batch's new words as rarest would put one common to the whole batch in every
    prefix, and the batch would compare all against all. Counted in work, not seconds."""
    instructions = alpaca(test_data)[:6000]
    stream = instructions[:3000] + ["Qqqzz: " + text for text in instructions[3000:]]
    whole = RougePool(0.7)
    whole.filter(stream)
    batches = RougePool(0.7)
    batches.filter(stream[:3000])
    batches.filter(stream[3000:])
    assert batches.stats[1] < 2 * whole.stats[1]  # overlaps merged
