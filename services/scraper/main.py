"""Wiring: settings, the fetcher, the browser and the blob store, and the worker loop.

`handle` streams each document to raw-docs as soon as it is stored, so the extractor starts on
the first paper while the scraper fetches the next.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry

from pipeline.blobstore import open_store
from pipeline.messages import ArxivSource, RawDoc, SiteSource, SourceRequest
from pipeline.settings import load
from pipeline.worker import run_service
from services.scraper import arxiv, folder, site
from services.scraper.browser import Browser
from services.scraper.config import ScraperSettings
from services.scraper.context import Context
from services.scraper.fetch import Fetcher
from services.scraper.metrics import ScraperMetrics


def make_context(settings: ScraperSettings, registry: CollectorRegistry) -> Context:
    metrics = ScraperMetrics(settings.service_name, registry)
    return Context(
        settings=settings,
        fetcher=Fetcher(settings, metrics),
        browser=Browser(
            settings.chromium_path,
            settings.chromedriver_path,
            settings.agent,
            settings.render_timeout_s,
        ),
        store=open_store(settings.blobs),
        metrics=metrics,
    )


def make_handler(ctx: Context) -> Callable[[SourceRequest], AsyncIterator[RawDoc]]:
    async def handle(request: SourceRequest) -> AsyncIterator[RawDoc]:
        source = request.source
        docs: AsyncIterator[RawDoc]
        if isinstance(source, ArxivSource):
            docs = arxiv.scrape(ctx, source, request.run_id)
        elif isinstance(source, SiteSource):
            docs = site.scrape(ctx, source, request.run_id)
        else:
            docs = folder.scrape(ctx, source, request.run_id)
        async for doc in docs:
            ctx.metrics.published(doc.source.kind)
            yield doc

    return handle


def main() -> None:
    settings = load(ScraperSettings)
    if not settings.contact:
        logging.getLogger("scraper").warning(
            "SCRAPER_CONTACT is empty: set an e-mail address for the User-Agent, as arXiv and "
            "site owners ask of crawlers"
        )
    registry = CollectorRegistry()
    ctx = make_context(settings, registry)
    try:
        run_service(settings, SourceRequest, make_handler(ctx), registry=registry)
    finally:
        # The browser is a separate process tree; the HTTP connections close with this one.
        ctx.browser.close()
