"""The scraper's own Prometheus metrics, served on the worker loop's endpoint beside its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from pipeline.metrics import NAMESPACE


class ScraperMetrics:
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["service", *labels], namespace=NAMESPACE, registry=registry)

        self._published = counter("scraper_documents", "Documents published, by source", "kind")
        self._skipped = counter("scraper_skipped", "Papers, pages or files skipped", "reason")
        self._responses = counter("scraper_responses", "HTTP responses, by status class", "status")
        self._bytes = counter("scraper_bytes", "Bytes downloaded").labels(service)

    def published(self, kind: str) -> None:
        self._published.labels(self.service, kind).inc()

    def skipped(self, reason: str) -> None:
        self._skipped.labels(self.service, reason).inc()

    def response(self, status: int, size: int) -> None:
        self._responses.labels(self.service, f"{status // 100}xx").inc()
        self._bytes.inc(size)
