"""The trainer's own Prometheus metrics: pairs stored, snapshots and what became of them, and
the run in progress (step, loss, tokens/s, ETA), beside the worker loop's on one endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.metrics import NAMESPACE


class TrainerMetrics:
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["service"], namespace=NAMESPACE, registry=registry)

        self._pairs = Counter(
            "trainer_pairs_stored",
            "Pairs stored in the dataset store (replays not counted)",
            ["service"],
            namespace=NAMESPACE,
            registry=registry,
        ).labels(service)
        self._snapshots = Counter(
            "trainer_snapshots",
            "Snapshots taken, by outcome (trained, refused, failed, empty)",
            ["service", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.step = gauge("trainer_step", "Optimizer steps done in the run in progress").labels(
            service
        )
        self.total_steps = gauge(
            "trainer_total_steps", "Steps the run in progress will take"
        ).labels(service)
        self.loss = gauge("trainer_loss", "Training loss at the last logging step").labels(service)
        self.tokens_per_s = gauge(
            "trainer_tokens_per_second", "Non-padding tokens trained on per second"
        ).labels(service)
        self.eta_s = gauge("trainer_eta_seconds", "Seconds left in the run in progress").labels(
            service
        )
        self._service = service

    def pair_stored(self) -> None:
        self._pairs.inc()

    def snapshot(self, outcome: str) -> None:
        self._snapshots.labels(self._service, outcome).inc()
