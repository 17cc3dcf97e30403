"""The inference service's own Prometheus metrics: requests by method and status code, their
latency and time to first token, tokens generated, requests in flight; beside the worker
loop's on one endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.metrics import NAMESPACE

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class InferenceMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self._requests = Counter(
            "inference_requests", "Requests answered, by method and status code",
            ["service", "method", "code"], namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self._seconds = Histogram(
            "inference_request_seconds", "Seconds from a request to its last token, by method",
            ["service", "method"], namespace=NAMESPACE, registry=registry, buckets=_LATENCY,
        )  # fmt: skip
        self.first_token = Histogram(
            "inference_first_token_seconds", "Seconds from a request to its first text",
            ["service"], namespace=NAMESPACE, registry=registry, buckets=_LATENCY,
        ).labels(service)  # fmt: skip
        self.tokens = Counter(
            "inference_tokens", "Completion tokens generated", ["service", "model"],
            namespace=NAMESPACE, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "inference_in_flight", "Requests being answered now", ["service"],
            namespace=NAMESPACE, registry=registry,
        ).labels(service)  # fmt: skip
        self.service = service

    def answered(self, method: str, code: str, seconds: float) -> None:
        self._requests.labels(self.service, method, code).inc()
        self._seconds.labels(self.service, method).observe(seconds)
