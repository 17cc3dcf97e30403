"""The evaluator's own Prometheus metrics: verdicts, how long an evaluation takes, and the
latest checkpoint's scores, beside the worker loop's on one endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.messages import TaskScore
from pipeline.metrics import NAMESPACE


class EvaluatorMetrics:
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self._verdicts = Counter(
            "evaluator_verdicts",
            "Checkpoints evaluated, by verdict (promote, reject)",
            ["service", "verdict"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._seconds = Histogram(
            "evaluator_seconds",
            "Seconds one checkpoint's evaluation took (both models, every task)",
            ["service"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
        ).labels(service)
        self._score = Gauge(
            "evaluator_score",
            "The last evaluated checkpoint's scores, by score and model (base, tuned)",
            ["service", "score", "model"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._service = service

    def evaluated(self, verdict: str, seconds: float, scores: dict[str, TaskScore]) -> None:
        self._verdicts.labels(self._service, verdict).inc()
        self._seconds.observe(seconds)
        for name, score in scores.items():
            self._score.labels(self._service, name, "base").set(score.base)
            self._score.labels(self._service, name, "tuned").set(score.tuned)
