"""The extractor's own Prometheus metrics, served on the worker loop's endpoint beside its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from pipeline.metrics import NAMESPACE
from services.extractor.extract import Extraction


class ExtractorMetrics:
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["service", *labels], namespace=NAMESPACE, registry=registry)

        self._documents = counter(
            "extractor_documents", "Documents, by outcome (ok or the DLQ reason)", "outcome"
        )
        self._pages = counter("extractor_pages", "PDF pages extracted").labels(service)
        self._chars = counter("extractor_chars", "Characters kept after cleaning").labels(service)
        self._chunks = counter("extractor_chunks", "Chunks published").labels(service)
        self._sections = counter("extractor_sections", "Sections found").labels(service)
        self._seconds = Histogram(
            "extractor_document_seconds",
            "Seconds per document: reading its bytes and extracting them",
            ["service"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        ).labels(service)

    def extracted(self, result: Extraction, seconds: float) -> None:
        self._documents.labels(self.service, "ok").inc()
        self._pages.inc(result.pages or 0)
        self._chars.inc(result.chars)
        self._chunks.inc(len(result.chunks))
        self._sections.inc(result.sections)
        self._seconds.observe(seconds)

    def failed(self, reason: str, seconds: float) -> None:
        self._documents.labels(self.service, reason).inc()
        self._seconds.observe(seconds)
