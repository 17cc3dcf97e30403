"""arXiv: listing or search pages in the browser (with pagination), then each paper's abstract
page and PDF over HTTP, several at once, up to `max_papers` that pass the filters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from functools import partial

from pipeline.errors import BadInput, Retryable
from pipeline.messages import ArxivSource, RawDoc, SourceInfo
from services.scraper import arxiv_pages, core
from services.scraper.context import Context, LedgerEntry

log = logging.getLogger("scraper.arxiv")


async def scrape(ctx: Context, source: ArxivSource, run_id: str) -> AsyncIterator[RawDoc]:
    settings = ctx.settings
    base = settings.arxiv_base_url
    policy = core.Policy.for_urls([base], source.allow_private)
    if source.category:
        url: str | None = arxiv_pages.listing_url(
            base, source.category, source.listing, settings.arxiv_page_size
        )
    else:  # the message model requires a query when there is no category
        url = arxiv_pages.search_url(
            base, source.query or "", settings.arxiv_page_size, newest_first=bool(source.since)
        )
    published, seen, pages = 0, set[str](), set[str]()
    while url and url not in pages and published < source.max_papers:
        pages.add(url)  # a page that links back to one already read ends the walk
        page = await ctx.render(url, policy)
        parse = arxiv_pages.parse_listing if source.category else arxiv_pages.parse_search
        listing = parse(page.html, page.url)
        if not listing.recognised:
            raise Retryable(
                f"{page.url}: not an arXiv listing (an error or rate-limit page?)",
                reason="unexpected_page",
            )
        fresh = [e for e in listing.entries if e.arxiv_id not in seen]
        seen.update(e.arxiv_id for e in fresh)
        in_range = [e for e in fresh if not _too_old(e, source)]
        log.info(
            "%s: %d papers listed, %d new, %d in the date range",
            page.url,
            len(listing.entries),
            len(fresh),
            len(in_range),
        )
        wanted = (partial(_paper, ctx, source, policy, run_id, e) for e in in_range)
        async for doc in _first(source.max_papers - published, wanted):
            published += 1
            log.info("published %d/%d: %s", published, source.max_papers, doc.source.external_id)
            yield doc
        if fresh and not in_range:
            break  # listings run newest first: every later page is older still
        url = listing.next_url


def _too_old(entry: arxiv_pages.ListingEntry, source: ArxivSource) -> bool:
    return bool(source.since and entry.date_hint and entry.date_hint < source.since)


async def _first(
    n: int, jobs: Iterable[Callable[[], Coroutine[None, None, RawDoc | None]]]
) -> AsyncIterator[RawDoc]:
    """Run jobs concurrently, never more than could still be needed, and yield the first `n`
    documents (a job that yields None, filtered out, frees its place for the next)."""
    pending: set[asyncio.Task[RawDoc | None]] = set()
    queue = iter(jobs)
    accepted = 0
    try:
        while True:
            while accepted + len(pending) < n and (job := next(queue, None)) is not None:
                pending.add(asyncio.create_task(job()))
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                doc = task.result()
                if doc is not None and accepted < n:
                    accepted += 1
                    yield doc
    finally:
        for task in pending:
            task.cancel()


async def _paper(
    ctx: Context,
    source: ArxivSource,
    policy: core.Policy,
    run_id: str,
    entry: arxiv_pages.ListingEntry,
) -> RawDoc | None:
    """One paper: abstract page, filters, PDF. None when it is filtered out or unusable."""
    run_key = f"run/{run_id}/arxiv/{entry.arxiv_id}"
    if (done := await ctx.known(run_key)) is not None:
        return done.doc  # this run already decided on this paper (a resumed run)
    base = ctx.settings.arxiv_base_url
    try:
        response = await ctx.fetcher.get(arxiv_pages.abs_url(base, entry.arxiv_id), policy)
        paper = arxiv_pages.parse_abstract(response.body.decode("utf-8", "replace"), response.url)
        if source.since and paper.published < source.since:
            doc = None
        elif source.category and not arxiv_pages.matches_keywords(
            source.query, paper.title, paper.abstract
        ):
            doc = None
        else:
            doc = await _pdf(ctx, paper, policy, run_id)
    except BadInput as exc:
        # This paper cannot be had (robots, too large, not a PDF...): the run goes on, and a
        # resumed run does not ask again.
        ctx.skipped(entry.arxiv_id, exc)
        doc = None
    except Retryable as exc:
        # Still failing after the fetcher's retries: the run goes on without it; not in the
        # ledger, so running the same run id again retries it.
        ctx.skipped(entry.arxiv_id, exc)
        return None
    await ctx.remember(run_key, LedgerEntry(doc=doc))
    return doc


async def _pdf(
    ctx: Context, paper: arxiv_pages.ArxivPaper, policy: core.Policy, run_id: str
) -> RawDoc:
    """The paper's PDF: from the ledger when this version was fetched before, else downloaded."""
    version_key = f"arxiv/{paper.versioned_id}"
    if (known := await ctx.known(version_key)) is not None and known.doc is not None:
        return known.doc.model_copy(update={"run_id": run_id})
    response = await ctx.fetcher.get(paper.pdf_url, policy)
    core.expect_pdf(response.url, response.body[:1024])
    info = SourceInfo(
        kind="arxiv",
        url=arxiv_pages.abs_url(ctx.settings.arxiv_base_url, paper.versioned_id),
        title=paper.title,
        authors=paper.authors,
        published=paper.published,
        license=paper.license,
        external_id=paper.versioned_id,
        categories=paper.categories,
    )
    doc = await ctx.publish(response.body, core.PDF, info, run_id, abstract=paper.abstract)
    await ctx.remember(version_key, LedgerEntry(doc=doc))
    return doc
