"""Web sites: breadth-first from a start URL within its registered domain, HTML pages (and the
PDFs they link) published as they are found. Pages are fetched plainly; one that turns out to
be an empty shell built by JavaScript is rendered in the browser instead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from pipeline.errors import BadInput, Retryable
from pipeline.messages import RawDoc, SiteSource, SourceInfo
from services.scraper import core
from services.scraper.context import Context, LedgerEntry

log = logging.getLogger("scraper.site")

#: Requests a crawl may spend per document it is asked for.
FETCHES_PER_PAGE = 10


async def scrape(ctx: Context, source: SiteSource, run_id: str) -> AsyncIterator[RawDoc]:
    start = core.canonical_url(source.start_url)
    if start is None:
        raise BadInput(f"{source.start_url!r} is not an http(s) URL", reason="bad_url")
    policy = core.Policy.for_urls([start, *source.allow_hosts], source.allow_private)
    seen = {start}
    level = [start]
    published: set[str] = set()  # doc ids: the same page under two URLs is one document
    # Dead links, duplicates and soft 404s cost requests but give no document: a crawler
    # trap must not cost unbounded requests for a handful of pages.
    budget = FETCHES_PER_PAGE * source.max_pages
    for depth in range(source.max_depth + 1):
        following: list[str] = []
        fetched = 0
        while level and len(published) < source.max_pages and budget > 0:
            # No more pages at once than documents still wanted; a dead link frees its
            # place for the next link of the level.
            room = min(source.max_pages - len(published), budget)
            batch, level = level[:room], level[room:]
            budget -= len(batch)
            # The start page must work: if it cannot be had (refused address, robots, 404),
            # the request itself is bad and goes to the DLQ with the reason.
            entries = await asyncio.gather(
                *(_page(ctx, policy, run_id, url, strict=depth == 0) for url in batch)
            )
            fetched += len(entries)
            for entry in entries:
                if entry.doc is not None and entry.doc.doc_id not in published:
                    published.add(entry.doc.doc_id)
                    yield entry.doc
                for link in entry.links:
                    if link not in seen and _in_scope(policy, link):
                        seen.add(link)
                        following.append(link)
        log.info(
            "depth %d: %d pages fetched, %d documents so far, %d links to follow",
            depth,
            fetched,
            len(published),
            len(following),
        )
        if not following or len(published) >= source.max_pages:
            break
        level = following


def _in_scope(policy: core.Policy, url: str) -> bool:
    try:
        policy.check_url(url)
    except BadInput:
        return False
    return True


async def _page(
    ctx: Context, policy: core.Policy, run_id: str, url: str, *, strict: bool
) -> LedgerEntry:
    key = f"run/{run_id}/url/{url}"
    if (done := await ctx.known(key)) is not None:
        return done
    try:
        entry = await _fetch(ctx, policy, run_id, url)
    except BadInput as exc:
        if strict:
            raise
        # A dead link, a disallowed or oversized page: noted, and the crawl goes on.
        ctx.skipped(url, exc)
        entry = LedgerEntry()
    except Retryable as exc:
        if strict:
            raise
        ctx.skipped(url, exc)  # not in the ledger: the same run id again retries it
        return LedgerEntry()
    await ctx.remember(key, entry)
    return entry


async def _fetch(ctx: Context, policy: core.Policy, run_id: str, url: str) -> LedgerEntry:
    response = await ctx.fetcher.get(url, policy)
    kind = core.sniff(response.body[:2048])
    if kind == core.PDF:
        info = SourceInfo(kind="web", url=response.url)
        return LedgerEntry(doc=await ctx.publish(response.body, core.PDF, info, run_id))
    if kind != core.HTML and response.content_type != core.HTML:
        return LedgerEntry()  # neither a page nor a PDF: nothing to publish or follow
    body = response.body
    if core.needs_javascript(body):
        body = (await ctx.render(response.url, policy)).html.encode("utf-8")
    page = core.page_links(body, response.url)
    # A canonical URL is the page's own word: taken only within the source's hosts.
    canonical = page.canonical if page.canonical and _in_scope(policy, page.canonical) else None
    info = SourceInfo(kind="web", url=canonical or response.url, title=page.title)
    doc = await ctx.publish(body, core.HTML, info, run_id)
    return LedgerEntry(doc=doc, links=tuple(page.links))
