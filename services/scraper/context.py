"""What every source needs: the fetcher, the browser, the blob store and the ledger of what
has been published already (so a replayed or resumed run fetches nothing twice)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from pipeline.blobstore import BlobStore
from pipeline.errors import BadInput, PipelineError
from pipeline.messages import RawDoc, SourceInfo, doc_id_of
from services.scraper.browser import Browser, Page
from services.scraper.config import ScraperSettings
from services.scraper.core import PDF, Policy
from services.scraper.fetch import Fetcher
from services.scraper.metrics import ScraperMetrics

log = logging.getLogger("scraper")

_SUFFIX = {PDF: ".pdf", "text/html": ".html"}


class LedgerEntry(BaseModel):
    """A fetched item: the document it gave (None: nothing to publish) and, for a web page,
    its links, so a resumed crawl goes on without fetching the page again."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    doc: RawDoc | None = None
    links: tuple[str, ...] = ()


@dataclass
class Context:
    settings: ScraperSettings
    fetcher: Fetcher
    browser: Browser
    store: BlobStore
    metrics: ScraperMetrics

    async def known(self, key: str) -> LedgerEntry | None:
        """What the ledger holds for `key` ("arxiv/2106.09685v2", "run/R/url/https://...")."""
        try:
            raw = await asyncio.to_thread(self.store.get, self.store.uri(self._name(key)))
        except BadInput:
            return None
        return LedgerEntry.model_validate_json(raw)

    async def remember(self, key: str, entry: LedgerEntry) -> None:
        data = entry.model_dump_json().encode()
        await asyncio.to_thread(self.store.put_as, self._name(key), data)

    @staticmethod
    def _name(key: str) -> str:
        return f"scraper/ledger/{hashlib.sha256(key.encode()).hexdigest()}.json"

    async def publish(
        self,
        body: bytes,
        content_type: str,
        source: SourceInfo,
        run_id: str,
        abstract: str | None = None,
    ) -> RawDoc:
        """Store the bytes (content-addressed) and describe them as a raw-docs message."""
        uri = await asyncio.to_thread(self.store.put, body, suffix=_SUFFIX.get(content_type, ""))
        return RawDoc(
            doc_id=doc_id_of(body),
            uri=uri,
            content_type=content_type,
            size=len(body),
            source=source,
            run_id=run_id,
            abstract=abstract,
        )

    def skipped(self, what: str, error: PipelineError) -> None:
        """A paper, page or file the run goes on without."""
        log.warning("skipped %s: %s", what, error, extra={"reason": error.reason})
        self.metrics.skipped(error.reason)

    async def render(self, url: str, policy: Policy) -> Page:
        """Open `url` in the browser once the fetcher's checks pass (robots, politeness); the
        browser's own requests, redirects included, go through its policy proxy."""
        await self.fetcher.admit(url, policy)
        return await asyncio.to_thread(self.browser.render, url, policy)
