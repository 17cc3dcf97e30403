"""What the evaluator decides from scores: base vs tuned deltas with paired bootstrap
intervals, the promote/reject verdict, the examples that moved most and the per-document
breakdown. Pure: per-example scores in, numbers and words out."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.messages import TaskScore
from services.evaluator.report import DocumentRow, Example

#: Where a smaller number is the better model.
LOWER_IS_BETTER = frozenset({"word_perplexity", "bits_per_byte"})
#: The metrics a policy may promote on: the domain test's, held-out perplexity's, the judge's.
DomainMetric = Literal["domain/rougeL", "domain/rouge1", "perplexity/bits_per_byte",
                       "perplexity/word_perplexity", "judge/win_rate"]  # fmt: skip
DOMAIN_METRICS = frozenset(get_args(DomainMetric))
#: The metric of the general tasks (ARC) that must not fall too far.
GENERAL_METRIC = "acc"
_PREFIX = "distillery_"  # our lm-eval task names; a hub task's name is the bare one


def score_name(task: str, metric: str) -> str:
    """The key of a score in `eval-results`: "domain/rougeL", "arc_easy/acc"."""
    return f"{task.removeprefix(_PREFIX)}/{metric}"


# --- what the harness measured ------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sample(_Frozen):
    doc: dict[str, Any]
    output: str | None = None  # the generated answer (generate_until tasks)
    #: Per-metric scores; for perplexity, the example's loglikelihood, words and bytes.
    scores: dict[str, float]


class TaskRun(_Frozen):
    metrics: dict[str, float]  # lm-eval's aggregates: acc, rougeL, word_perplexity, ...
    samples: list[Sample]  # in document order


class Comparison(_Frozen):
    """One lm-eval run of each model over the same tasks and settings, by task name."""

    base: dict[str, TaskRun]
    tuned: dict[str, TaskRun]


class Job(_Frozen):
    """What the evaluation child process runs (`python -m services.evaluator.run JOB OUT`)."""

    base_model: str
    tuned: Path  # a peft adapter directory, or a whole model (full fine-tuning)
    #: Held-out pairs, jsonl of {instruction, input, output, document}; None: no domain test.
    examples: Path | None
    prompt_format: str
    #: The first N held-out pairs make the domain test; None: all.
    domain_limit: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    perplexity: bool = True
    arc_tasks: list[str] = []
    #: Local ARC jsonl (offline); None: lm-eval's hub tasks by name.
    arc_dir: Path | None = None
    arc_limit: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    device: str = "cpu"


# --- statistics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """tuned - base on one metric, with a confidence interval for the difference."""

    base: float
    tuned: float
    delta: float
    low: float
    high: float
    n: int

    def improved(self, higher_is_better: bool = True) -> bool:
        """Better beyond its interval: the whole interval on the good side of zero."""
        return self.low > 0 if higher_is_better else self.high < 0

    def score(self, metric: str) -> TaskScore:
        return TaskScore(metric=metric, base=self.base, tuned=self.tuned, delta=self.delta,
                         ci_low=self.low, ci_high=self.high,
                         higher_is_better=metric not in LOWER_IS_BETTER)  # fmt: skip


#: Reduces resampled examples, shape (resamples, n[, columns]), to one value per resample.
Statistic = Callable[[np.ndarray], np.ndarray]


def mean(examples: np.ndarray) -> np.ndarray:
    return examples.mean(axis=1)  # type: ignore[no-any-return]


def word_perplexity(examples: np.ndarray) -> np.ndarray:
    """Columns (loglikelihood, words, bytes): lm-eval's corpus-level word perplexity."""
    return np.exp(-examples[..., 0].sum(axis=1) / examples[..., 1].sum(axis=1))  # type: ignore[no-any-return]


def bits_per_byte(examples: np.ndarray) -> np.ndarray:
    """Columns (loglikelihood, words, bytes): lm-eval's corpus-level bits per byte."""
    return -examples[..., 0].sum(axis=1) / examples[..., 2].sum(axis=1) / math.log(2)  # type: ignore[no-any-return]


def paired_bootstrap(
    base: Sequence[Any],
    tuned: Sequence[Any],
    *,
    statistic: Statistic = mean,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Delta:
    """`statistic(tuned) - statistic(base)` over the same examples, and its percentile
    bootstrap interval: examples are resampled as pairs, so what both models find hard cancels
    out. An example is a score, or a row of columns the statistic combines (perplexity)."""
    if len(base) != len(tuned):
        raise ValueError(f"paired scores differ in length: {len(base)} base, {len(tuned)} tuned")
    if not len(base):
        raise ValueError("no examples to compare")
    b, t = np.asarray(base, dtype=np.float64), np.asarray(tuned, dtype=np.float64)
    whole_b, whole_t = float(statistic(b[None])[0]), float(statistic(t[None])[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(b), size=(resamples, len(b)))
    # In blocks of resamples: all at once is resamples x n x columns floats (GBs at 10^5).
    blocks = np.array_split(picks, -(-resamples // max(1, 2**22 // max(1, b.size))))
    differences = np.concatenate([statistic(t[p]) - statistic(b[p]) for p in blocks])
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return Delta(whole_b, whole_t, whole_t - whole_b, float(low), float(high), len(b))


_ROLLING: dict[str, Statistic] = {"word_perplexity": word_perplexity,
                                  "bits_per_byte": bits_per_byte}  # fmt: skip
_COLUMNS = ("loglikelihood", "words", "bytes")


def compare_task(base: TaskRun, tuned: TaskRun, metric: str, **bootstrap: Any) -> Delta:
    """One metric of one task, base vs tuned, example by example."""
    if metric in _ROLLING:
        rows = [[[s.scores[c] for c in _COLUMNS] for s in run.samples] for run in (base, tuned)]
        return paired_bootstrap(*rows, statistic=_ROLLING[metric], **bootstrap)
    b, t = ([s.scores[metric] for s in run.samples] for run in (base, tuned))
    return paired_bootstrap(b, t, **bootstrap)


# --- the verdict ----------------------------------------------------------------------------------


class Policy(_Frozen):
    """When a tuned model is promoted."""

    #: The domain metric that must improve beyond its interval.
    domain_metric: DomainMetric = "domain/rougeL"
    #: How far each general task (ARC) may fall, in points of its metric (0.02 = 2 points).
    #: As with the gain, a fall counts only when its interval says so: the whole interval
    #: below -max_general_drop. (One question of a 40-question subset is 2.5 points.)
    max_general_drop: float = Field(0.02, ge=0)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str


def decide(domain: Delta, general: Mapping[str, Delta], policy: Policy) -> Verdict:
    """Promote when the domain score improves beyond its interval and no general task falls
    beyond its interval by more than the policy allows; otherwise reject, saying why."""
    problems = []
    higher_is_better = policy.domain_metric.split("/")[1] not in LOWER_IS_BETTER
    if not domain.improved(higher_is_better):
        problems.append(
            f"{policy.domain_metric} did not improve beyond its interval "
            f"({domain.delta:+.4f}, 95% CI [{domain.low:+.4f}, {domain.high:+.4f}])"
        )
    for task, delta in sorted(general.items()):
        if delta.high < -policy.max_general_drop:
            problems.append(
                f"{task} fell by {-delta.delta:.4f} ({delta.base:.4f} → {delta.tuned:.4f}, "
                f"95% CI [{delta.low:+.4f}, {delta.high:+.4f}]), more than the "
                f"{policy.max_general_drop:.4f} allowed"
            )
    if problems:
        return Verdict(False, "; ".join(problems))
    falls = ", ".join(f"{task} {d.delta:+.4f}" for task, d in sorted(general.items()))
    change = "improved" if higher_is_better else "fell"
    return Verdict(
        True,
        f"{policy.domain_metric} {change} by {abs(domain.delta):.4f} "
        f"(95% CI [{domain.low:+.4f}, {domain.high:+.4f}])" + (f"; {falls}" if falls else ""),
    )


def extremes(base: Sequence[float], tuned: Sequence[float], n: int) -> tuple[list[int], list[int]]:
    """The indices of the `n` examples most improved and the `n` most degraded (tuned - base),
    largest change first; among equal changes, the earlier example first."""
    change = np.asarray(tuned, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    improved = [int(i) for i in np.argsort(-change, kind="stable")[:n] if change[i] > 0]
    degraded = [int(i) for i in np.argsort(change, kind="stable")[:n] if change[i] < 0]
    return improved, degraded


# --- everything a report says -------------------------------------------------------------------

DOMAIN_TASK = "distillery_domain"


@dataclass(frozen=True)
class Assessment:
    scores: dict[str, TaskScore]
    verdict: Verdict
    improved: list[Example]
    degraded: list[Example]
    documents: list[DocumentRow]
    review: list[Example]  # every domain example, for the review sheet


def assess(
    comparison: Comparison, policy: Policy, *, examples: int = 10, **bootstrap: Any
) -> Assessment:
    """Every metric of every task compared, the verdict, the `examples` most improved and most
    degraded domain answers, and the domain score per held-out document."""
    deltas = {
        score_name(task, metric): compare_task(base, comparison.tuned[task], metric, **bootstrap)
        for task, base in comparison.base.items()
        for metric in base.metrics
    }
    scores = {name: d.score(name.split("/")[1]) for name, d in deltas.items()}
    general = {n: d for n, d in deltas.items()
               if n.endswith(f"/{GENERAL_METRIC}") and n not in DOMAIN_METRICS}  # fmt: skip
    if policy.domain_metric in deltas:
        verdict = decide(deltas[policy.domain_metric], general, policy)
    elif DOMAIN_TASK not in comparison.base:
        verdict = Verdict(False, f"no {policy.domain_metric} to judge by: the checkpoint's "
                                 "dataset has no held-out pairs")  # fmt: skip
    else:
        why = ("the judge gave no readable verdict" if policy.domain_metric.startswith("judge/")
               else "it was not measured")  # fmt: skip
        verdict = Verdict(False, f"no {policy.domain_metric} to judge by: {why}")
    if DOMAIN_TASK not in comparison.base:
        return Assessment(scores, verdict, [], [], [], [])
    metric = policy.domain_metric.split("/")[1]
    metric = metric if policy.domain_metric.startswith("domain/") else "rougeL"
    base, tuned = comparison.base[DOMAIN_TASK].samples, comparison.tuned[DOMAIN_TASK].samples
    up, down = extremes([s.scores[metric] for s in base], [s.scores[metric] for s in tuned],
                        examples)  # fmt: skip

    def example(i: int) -> Example:
        return Example(
            document=base[i].doc.get("document", ""), prompt=base[i].doc["prompt"],
            reference=base[i].doc["reference"], base=base[i].output or "",
            tuned=tuned[i].output or "", base_score=base[i].scores[metric],
            tuned_score=tuned[i].scores[metric],
        )  # fmt: skip

    by_document: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(base):
        by_document[sample.doc.get("document", "")].append(i)
    documents = [
        DocumentRow(document=name, n=len(picks),
                    base=float(np.mean([base[i].scores[metric] for i in picks])),
                    tuned=float(np.mean([tuned[i].scores[metric] for i in picks])))
        for name, picks in sorted(by_document.items())
    ]  # fmt: skip
    everything = [example(i) for i in range(len(base))]
    return Assessment(scores, verdict, [everything[i] for i in up],
                      [everything[i] for i in down], documents, everything)  # fmt: skip
