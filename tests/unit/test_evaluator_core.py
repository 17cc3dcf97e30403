"""The evaluator's decisions: paired bootstrap intervals, the verdict policy, the examples
that moved most."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.evaluator.core import (
    Comparison,
    Delta,
    Policy,
    Sample,
    TaskRun,
    assess,
    bits_per_byte,
    decide,
    extremes,
    paired_bootstrap,
    word_perplexity,
)

pytestmark = pytest.mark.unit


def test_the_same_scores_give_a_zero_delta_and_a_zero_width_interval() -> None:
    scores = [0.1, 0.5, 0.9, 0.3]
    delta = paired_bootstrap(scores, scores)
    assert (delta.delta, delta.low, delta.high, delta.n) == (0, 0, 0, 4)
    assert not delta.improved()


def test_a_consistent_gain_is_an_improvement_beyond_its_interval() -> None:
    rng = random.Random(1)  # noqa: S311 - test data, not security
    base = [rng.random() * 0.5 for _ in range(200)]
    tuned = [b + 0.05 + rng.gauss(0, 0.05) for b in base]
    delta = paired_bootstrap(base, tuned)
    assert delta.low > 0 and delta.low < delta.delta < delta.high
    assert delta.delta == pytest.approx(np.mean(tuned) - np.mean(base))
    assert delta.improved() and not delta.improved(higher_is_better=False)


def test_noise_alone_is_rarely_called_an_improvement() -> None:
    """Two equally good models: "improved" is a one-sided 2.5 % test, so it comes up in about
    5 of 200 trials."""
    rng = np.random.default_rng(2)
    false_alarms = 0
    for trial in range(200):
        base, tuned = rng.random(80), rng.random(80)
        false_alarms += paired_bootstrap(base.tolist(), tuned.tolist(), resamples=1000,
                                         seed=trial).improved()  # fmt: skip
    assert false_alarms <= 12


def test_pairing_sees_a_small_gain_that_unpaired_scores_would_hide() -> None:
    """Examples vary far more than the gain; resampling pairs cancels that variation."""
    rng = random.Random(3)  # noqa: S311 - test data, not security
    base = [rng.random() for _ in range(300)]
    tuned = [b + 0.01 for b in base]
    delta = paired_bootstrap(base, tuned)
    assert delta.low == pytest.approx(0.01) and delta.improved()


def test_the_interval_covers_the_true_gain_about_95_times_in_100() -> None:
    rng = np.random.default_rng(4)
    covered = 0
    for trial in range(200):
        base = rng.normal(0.5, 0.2, 60)
        tuned = base + rng.normal(0.03, 0.1, 60)  # the true mean gain is 0.03
        delta = paired_bootstrap(base.tolist(), tuned.tolist(), resamples=1000, seed=trial)
        covered += delta.low <= 0.03 <= delta.high
    assert 180 <= covered <= 198  # 95 % of 200, with room for the percentile method's bias


def test_unpaired_or_empty_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 base, 1 tuned"):
        paired_bootstrap([1, 2], [1])
    with pytest.raises(ValueError, match="no examples"):
        paired_bootstrap([], [])


def _delta(delta: float, low: float, high: float, base: float = 0.5) -> Delta:
    return Delta(base, base + delta, delta, low, high, 100)


def test_promote_when_the_domain_improves_and_arc_holds() -> None:
    verdict = decide(_delta(0.1, 0.05, 0.15), {"arc_easy/acc": _delta(-0.01, -0.05, 0.03)},
                     Policy())  # fmt: skip
    assert verdict.promote
    assert verdict.reason == (
        "domain/rougeL improved by 0.1000 (95% CI [+0.0500, +0.1500]); arc_easy/acc -0.0100"
    )


def test_reject_when_the_domain_gain_is_within_noise() -> None:
    verdict = decide(_delta(0.02, -0.01, 0.05), {}, Policy())
    assert not verdict.promote
    assert (
        "did not improve beyond its interval (+0.0200, 95% CI [-0.0100, +0.0500])" in verdict.reason
    )


def test_reject_when_arc_falls_beyond_its_interval_more_than_allowed_naming_each_task() -> None:
    general = {
        "arc_easy/acc": _delta(-0.08, -0.12, -0.04),
        "arc_challenge/acc": _delta(-0.05, -0.09, -0.01),  # may have fallen only 1 point
    }
    verdict = decide(_delta(0.1, 0.05, 0.15), general, Policy(max_general_drop=0.03))
    assert not verdict.promote
    assert verdict.reason == (
        "arc_easy/acc fell by 0.0800 (0.5000 → 0.4200, 95% CI [-0.1200, -0.0400]), "
        "more than the 0.0300 allowed"
    )
    both = decide(_delta(0.0, -0.01, 0.01), general, Policy(max_general_drop=0.005))
    assert both.reason.count(";") == 2  # the domain and both tasks


def test_extremes_are_the_largest_changes_each_way() -> None:
    base = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    tuned = [0.9, 0.4, 0.5, 0.1, 0.6, 0.45]
    assert extremes(base, tuned, 2) == ([0, 4], [3, 1])
    assert extremes(base, tuned, 10) == ([0, 4], [3, 1, 5])  # unchanged ones in neither


def test_perplexity_is_compared_as_lm_eval_aggregates_it_over_the_corpus() -> None:
    """Columns (loglikelihood, words, bytes): the statistic is the corpus rate, not the mean
    of each example's rate, and a fall in bits per byte is the gain."""
    base = [[-40.0, 10, 50], [-200.0, 40, 210], [-30.0, 5, 20]]
    tuned = [[-35.0, 10, 50], [-150.0, 40, 210], [-31.0, 5, 20]]
    delta = paired_bootstrap(base, tuned, statistic=bits_per_byte)
    assert delta.base == pytest.approx(270 / 280 / np.log(2))
    assert delta.tuned == pytest.approx(216 / 280 / np.log(2))
    ppl = paired_bootstrap(base, tuned, statistic=word_perplexity)
    assert ppl.base == pytest.approx(np.exp(270 / 55)) and ppl.tuned < ppl.base
    policy = Policy(domain_metric="perplexity/bits_per_byte")
    assert decide(_delta(-0.2, -0.3, -0.1), {}, policy).promote
    assert decide(_delta(-0.2, -0.3, -0.1), {}, policy).reason.startswith(
        "perplexity/bits_per_byte fell by 0.2000"
    )
    assert not decide(_delta(0.2, 0.1, 0.3), {}, policy).promote


def test_a_policy_names_the_metrics_it_can_promote_on() -> None:
    with pytest.raises(ValueError, match="'domain/rougeL', 'domain/rouge1'"):
        Policy(domain_metric="arc_easy/acc")


def _run(scores: list[float], metric: str, docs: list[dict[str, str]] | None = None) -> TaskRun:
    docs = docs or [{} for _ in scores]
    samples = [Sample(doc=d, output=f"answer {v}", scores={metric: v})
               for d, v in zip(docs, scores, strict=True)]  # fmt: skip
    return TaskRun(metrics={metric: float(np.mean(scores))}, samples=samples)


def test_an_assessment_scores_every_task_and_shows_what_moved_per_document() -> None:
    docs = [{"prompt": f"q{i}", "reference": f"r{i}", "document": f"paper {i % 2}"}
            for i in range(6)]  # fmt: skip
    base_domain = [0.0, 0.25, 0.5, 0.25, 0.0, 0.75]
    tuned_domain = [0.5, 0.75, 1.0, 0.75, 0.5, 0.25]  # +0.5 five times (ties), -0.5 once
    comparison = Comparison(
        base={"distillery_domain": _run(base_domain, "rougeL", docs),
              "arc_easy": _run([1, 0, 0, 1], "acc")},
        tuned={"distillery_domain": _run(tuned_domain, "rougeL", docs),
               "arc_easy": _run([1, 0, 0, 0], "acc")},
    )  # fmt: skip
    found = assess(comparison, Policy(max_general_drop=0.3), examples=2)
    assert set(found.scores) == {"domain/rougeL", "arc_easy/acc"}
    assert found.scores["arc_easy/acc"].delta == pytest.approx(-0.25)
    assert found.scores["domain/rougeL"].metric == "rougeL"
    assert found.verdict.promote is False  # one big loss in six: the interval reaches below 0
    assert [e.prompt for e in found.improved] == ["q0", "q1"]
    assert [(e.prompt, e.base, e.tuned) for e in found.degraded] == [
        ("q5", "answer 0.75", "answer 0.25")
    ]
    assert [(d.document, d.n) for d in found.documents] == [("paper 0", 3), ("paper 1", 3)]
    assert found.documents[1].tuned == pytest.approx((0.75 + 0.75 + 0.25) / 3)


def test_without_held_out_pairs_there_is_nothing_to_promote_on() -> None:
    arc = {"arc_easy": _run([1, 0], "acc")}
    found = assess(Comparison(base=arc, tuned=arc), Policy())
    assert not found.verdict.promote
    assert "no domain/rougeL to judge by" in found.verdict.reason
    assert found.improved == found.degraded == found.documents == []


def test_many_examples_are_resampled_in_blocks_with_the_same_result() -> None:
    rng = np.random.default_rng(5)
    base, tuned = rng.random(5000), rng.random(5000)
    delta = paired_bootstrap(base.tolist(), tuned.tolist(), seed=9)  # several blocks
    picks = np.random.default_rng(9).integers(0, 5000, size=(2000, 5000))
    expected = np.quantile((tuned - base)[picks].mean(axis=1), [0.025, 0.975])
    assert (delta.low, delta.high) == pytest.approx(tuple(expected), abs=1e-12)
