"""What the evaluator decides from scores: base vs tuned deltas with paired bootstrap
intervals, the promote/reject verdict, and the examples that moved most. Pure: per-example
scores in, numbers and words out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Delta:
    """tuned - base on one metric, with a confidence interval for the difference of means."""

    base: float
    tuned: float
    delta: float
    low: float
    high: float
    n: int

    def improved(self, higher_is_better: bool = True) -> bool:
        """Better beyond its interval: the whole interval on the good side of zero."""
        return self.low > 0 if higher_is_better else self.high < 0


def paired_bootstrap(
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Delta:
    """The mean of `tuned - base` over the same examples, and its percentile bootstrap
    interval: examples are resampled as pairs, so what both models find hard cancels out."""
    if len(base) != len(tuned):
        raise ValueError(f"paired scores differ in length: {len(base)} base, {len(tuned)} tuned")
    if not base:
        raise ValueError("no examples to compare")
    b, t = np.asarray(base, dtype=np.float64), np.asarray(tuned, dtype=np.float64)
    differences = t - b
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Delta(float(b.mean()), float(t.mean()), float(differences.mean()),
                 float(low), float(high), len(differences))  # fmt: skip


class Policy(BaseModel):
    """When a tuned model is promoted."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: The domain metric that must improve beyond its interval.
    domain_metric: str = "domain/rougeL"
    #: How far each general task (ARC) may fall, in points of its metric (0.02 = 2 points).
    max_general_drop: float = Field(0.02, ge=0)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str


def decide(domain: Delta, general: Mapping[str, Delta], policy: Policy) -> Verdict:
    """Promote when the domain score improves beyond its interval and no general task falls
    by more than the policy allows; otherwise reject, saying why."""
    problems = []
    if not domain.improved():
        problems.append(
            f"{policy.domain_metric} did not improve beyond its interval "
            f"({domain.delta:+.4f}, 95% CI [{domain.low:+.4f}, {domain.high:+.4f}])"
        )
    for task, delta in sorted(general.items()):
        if delta.delta < -policy.max_general_drop:
            problems.append(
                f"{task} fell by {-delta.delta:.4f} ({delta.base:.4f} → {delta.tuned:.4f}), "
                f"more than the {policy.max_general_drop:.4f} allowed"
            )
    if problems:
        return Verdict(False, "; ".join(problems))
    falls = ", ".join(f"{task} {d.delta:+.4f}" for task, d in sorted(general.items()))
    return Verdict(
        True,
        f"{policy.domain_metric} improved by {domain.delta:+.4f} "
        f"(95% CI [{domain.low:+.4f}, {domain.high:+.4f}])" + (f"; {falls}" if falls else ""),
    )


def extremes(base: Sequence[float], tuned: Sequence[float], n: int) -> tuple[list[int], list[int]]:
    """The indices of the `n` examples most improved and the `n` most degraded (tuned - base),
    largest change first; ties keep example order. An example is in one list at most."""
    change = np.asarray(tuned, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    order = np.argsort(-change, kind="stable")
    improved = [int(i) for i in order[:n] if change[i] > 0]
    degraded = [int(i) for i in order[::-1][:n] if change[i] < 0 and int(i) not in improved]
    return improved, degraded
