"""The synthesizer's own Prometheus metrics: requests, tokens and cost, pairs and why triples
were rejected, served on the worker loop's endpoint beside its own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.metrics import NAMESPACE
from services.synthesizer.llm import Usage


class SynthesizerMetrics:
    def __init__(self, service: str, registry: CollectorRegistry, provider: str, model: str):
        self.service = service

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["service", *labels], namespace=NAMESPACE, registry=registry)

        self._requests = counter(
            "synthesizer_requests",
            "Requests to the provider, by outcome (ok, rate_limited, http_500, ...)",
            "provider",
            "model",
            "outcome",
        )
        self._provider = (provider, model)
        tokens = counter("synthesizer_tokens", "Tokens used, prompt or completion", "kind")
        self._prompt_tokens = tokens.labels(service, "prompt")
        self._completion_tokens = tokens.labels(service, "completion")
        self._cost = counter("synthesizer_cost_usd", "Dollars spent, at the price table").labels(
            service
        )
        self._chunks = counter("synthesizer_chunks", "Chunks handled, by outcome", "outcome")
        self._pairs = counter("synthesizer_pairs", "Pairs published", "task")
        self._rejected = counter(
            "synthesizer_rejected",
            "Triples or answers not published, by reason (filter or parse failure)",
            "reason",
        )
        self._seconds = Histogram(
            "synthesizer_request_seconds",
            "Seconds per request to the provider, answered or not",
            ["service"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        ).labels(service)
        self._registry = registry

    def request(self, outcome: str, seconds: float) -> None:
        self._requests.labels(self.service, *self._provider, outcome).inc()
        self._seconds.observe(seconds)

    def used(self, usage: Usage) -> None:
        self._prompt_tokens.inc(usage.prompt_tokens)
        self._completion_tokens.inc(usage.completion_tokens)
        self._cost.inc(usage.cost_usd)

    def chunk(self, outcome: str) -> None:
        self._chunks.labels(self.service, outcome).inc()

    def pair(self, task: str) -> None:
        self._pairs.labels(self.service, task).inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.service, reason).inc()

    def waiting(self, seconds: Callable[[], float]) -> None:
        """Report the rate limiter's total wait, read when scraped."""
        Gauge(
            "synthesizer_rate_wait_seconds",
            "Seconds requests have waited for the rate limiter in total",
            ["service"],
            namespace=NAMESPACE,
            registry=self._registry,
        ).labels(self.service).set_function(seconds)
