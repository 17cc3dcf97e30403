"""The evaluator's decisions: paired bootstrap intervals, the verdict policy, the examples
that moved most."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.evaluator.core import Delta, Policy, decide, extremes, paired_bootstrap

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
        "domain/rougeL improved by +0.1000 (95% CI [+0.0500, +0.1500]); arc_easy/acc -0.0100"
    )


def test_reject_when_the_domain_gain_is_within_noise() -> None:
    verdict = decide(_delta(0.02, -0.01, 0.05), {}, Policy())
    assert not verdict.promote
    assert (
        "did not improve beyond its interval (+0.0200, 95% CI [-0.0100, +0.0500])" in verdict.reason
    )


def test_reject_when_arc_falls_more_than_allowed_naming_each_task() -> None:
    general = {
        "arc_easy/acc": _delta(-0.05, -0.09, -0.01),
        "arc_challenge/acc": _delta(-0.02, -0.06, 0.02),
    }
    verdict = decide(_delta(0.1, 0.05, 0.15), general, Policy(max_general_drop=0.03))
    assert not verdict.promote
    assert (
        verdict.reason
        == "arc_easy/acc fell by 0.0500 (0.5000 → 0.4500), more than the 0.0300 allowed"
    )
    both = decide(_delta(0.0, -0.01, 0.01), general, Policy(max_general_drop=0.01))
    assert both.reason.count(";") == 2  # the domain and both tasks


def test_extremes_are_the_largest_changes_each_way() -> None:
    base = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    tuned = [0.9, 0.4, 0.5, 0.1, 0.6, 0.45]
    assert extremes(base, tuned, 2) == ([0, 4], [3, 1])
    assert extremes(base, tuned, 10) == ([0, 4], [3, 1, 5])  # unchanged ones in neither
