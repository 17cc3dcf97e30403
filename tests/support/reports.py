"""A made-up evaluation report for the report's tests: every kind of row, and text that
would run as script if it were not escaped."""

from __future__ import annotations

from pipeline.messages import TaskScore
from services.evaluator.report import DocumentRow, Example, Report

HOSTILE = "<script>alert('x')</script>, \"quoted\"\nsecond line"


def sample_example(i: int, text: str = "an answer") -> Example:
    return Example(
        document=f"paper {i}", prompt=f"question {i}: {HOSTILE}", reference="ref",
        base="base says", tuned=text, base_score=0.1, tuned_score=0.1 + i / 10,
    )  # fmt: skip


def sample_report(**update: object) -> Report:
    fields: dict[str, object] = dict(
        checkpoint_id="ckpt-1", run_id="run-1", base_model="stories260K",
        adapter_uri="file:///blobs/checkpoints/ckpt-1/adapter", dataset_id="ds-1",
        domain_metric="domain/rougeL", verdict="promote", reason="domain/rougeL improved",
        scores={
            "domain/rougeL": TaskScore(metric="rougeL", base=0.05, tuned=0.12, delta=0.07,
                                       ci_low=0.03, ci_high=0.1),
            "arc_easy/acc": TaskScore(metric="acc", base=0.25, tuned=0.2, delta=-0.05,
                                      ci_low=-0.09, ci_high=-0.01),
            "perplexity/bits_per_byte": TaskScore(metric="bits_per_byte", base=2.0, tuned=1.5,
                                                  delta=-0.5, ci_low=-0.6, ci_high=-0.4,
                                                  higher_is_better=False),
            "arc_challenge/acc": TaskScore(metric="acc", base=0.2, tuned=0.21, delta=0.01),
        },
        improved=[sample_example(1), sample_example(2)], degraded=[], documents=[
            DocumentRow(document="paper 1", n=3, base=0.1, tuned=0.2)],
    )  # fmt: skip
    return Report.model_validate(fields | update)
