"""Wiring: settings, the worker processes and the blob store, and the worker loop.

`handle` reads a document's bytes from the blob store, has a worker process extract it (under
the time and memory limits) and returns its chunks; the loop publishes them and commits. Every
document ends in chunks or in the DLQ with a reason, and a one-line summary in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from pipeline.blobstore import BlobStore, open_store
from pipeline.errors import BadInput, PipelineError
from pipeline.messages import ParsedChunk, RawDoc, chunk_id_of, doc_id_of
from pipeline.settings import load
from pipeline.worker import run_service
from services.extractor.config import ExtractorSettings
from services.extractor.extract import Extraction
from services.extractor.metrics import ExtractorMetrics
from services.extractor.pool import Extractors

log = logging.getLogger("extractor")


def make_handler(
    settings: ExtractorSettings,
    extractors: Extractors,
    store: BlobStore,
    metrics: ExtractorMetrics,
) -> Callable[[RawDoc], Awaitable[list[ParsedChunk]]]:
    async def handle(doc: RawDoc) -> list[ParsedChunk]:
        start = time.perf_counter()
        try:
            result = await _extract(doc)
        except PipelineError as exc:
            seconds = time.perf_counter() - start
            if isinstance(exc, BadInput):
                metrics.failed(exc.reason, seconds)
            _summary(doc, seconds, reason=exc.reason, error=str(exc))
            raise
        seconds = time.perf_counter() - start
        metrics.extracted(result, seconds)
        _summary(doc, seconds, result=result)
        return [
            ParsedChunk(
                chunk_id=chunk_id_of(doc.doc_id, i),
                doc_id=doc.doc_id,
                index=i,
                total=len(result.chunks),
                text=chunk.text,
                section=chunk.section,
                pages=chunk.pages,
                n_tokens=chunk.n_tokens,
                source=doc.source,
                run_id=doc.run_id,
            )
            for i, chunk in enumerate(result.chunks)
        ]

    async def _extract(doc: RawDoc) -> Extraction:
        if doc.size > settings.max_bytes:
            raise BadInput(
                f"{doc.size} bytes, more than EXTRACTOR_MAX_BYTES={settings.max_bytes}",
                reason="too_large",
            )
        data = await asyncio.to_thread(store.get, doc.uri)
        if doc_id_of(data) != doc.doc_id:
            raise BadInput(
                f"the blob at {doc.uri} is not document {doc.doc_id}", reason="blob_mismatch"
            )
        return await extractors.extract(data, doc.content_type)

    return handle


def _summary(
    doc: RawDoc,
    seconds: float,
    *,
    result: Extraction | None = None,
    reason: str | None = None,
    error: str | None = None,
) -> None:
    fields = {
        "doc_id": doc.doc_id,
        "url": doc.source.url,
        "content_type": doc.content_type,
        "seconds": round(seconds, 3),
        "reason": reason,
    }
    if result is not None:
        fields |= {
            "pages": result.pages,
            "pages_without_text": result.pages_without_text,
            "chars": result.chars,
            "chunks": len(result.chunks),
            "sections": result.sections,
        }
        log.info("extracted %s: %d chunks", doc.source.url, len(result.chunks), extra=fields)
    else:
        log.warning("not extracted %s: %s", doc.source.url, error, extra=fields)


def main() -> None:
    settings = load(ExtractorSettings)
    registry = CollectorRegistry()
    extractors = Extractors(
        settings.concurrency,
        settings.memory_limit_mb * 1024 * 1024,
        settings.timeout_s,
        settings.options,
    )
    try:
        run_service(
            settings,
            RawDoc,
            make_handler(
                settings,
                extractors,
                open_store(settings.blobs),
                ExtractorMetrics(settings.service_name, registry),
            ),
            registry=registry,
        )
    finally:
        extractors.close()
