"""What arXiv's pages say, read from their markup: listing and search pages (entries and the
next page), abstract pages (a paper's version, dates, licence, categories). Pure: the browser
and the fetcher bring the pages (`arxiv.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from lxml.html import HtmlElement

from pipeline.errors import BadInput
from services.scraper.core import names, parse_html, prose, select_one, words

#: New-style (2106.09685) and old-style (hep-th/9901001) identifiers, with an optional version.
ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z.-]*/\d{7})(?:v(\d+))?")
_CATEGORY = re.compile(r"\(([a-z-]+(?:\.[A-Za-z-]+)?)\)")
_DAY = re.compile(r"(\d{1,2}) (\w{3})\w* (\d{4})")
_SUBMITTED = re.compile(r"Submitted\s+(\d{1,2}) (\w+),? (\d{4})")


@dataclass(frozen=True)
class ListingEntry:
    """One paper as a listing or search page shows it."""

    arxiv_id: str  # without version
    title: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    abstract: str = ""
    #: A day the paper was listed or last revised: never before its first submission, so a
    #: hint older than `since` rules the paper out without fetching anything.
    date_hint: date | None = None


@dataclass(frozen=True)
class ListingPage:
    entries: list[ListingEntry]
    next_url: str | None
    #: The page has arXiv's listing or search markup. The browser does not see HTTP statuses,
    #: so an error or rate-limit page would otherwise read as an empty, final page.
    recognised: bool = True


@dataclass(frozen=True)
class ArxivPaper:
    """What an abstract page (/abs/ID) says of a paper."""

    arxiv_id: str
    version: int
    title: str
    authors: tuple[str, ...]
    abstract: str
    categories: tuple[str, ...]
    published: date  # first version's submission day
    license: str | None
    pdf_url: str

    @property
    def versioned_id(self) -> str:
        return f"{self.arxiv_id}v{self.version}"


def _day(text: str) -> date | None:
    m = _DAY.search(text)
    if not m:
        return None
    try:
        return datetime.strptime(" ".join(m.groups()), "%d %b %Y").date()
    except ValueError:
        return None


def _categories(text: str) -> tuple[str, ...]:
    return tuple(_CATEGORY.findall(text))


def listing_url(base: str, category: str, listing: str, page_size: int) -> str:
    return f"{base.rstrip('/')}/list/{category}/{listing}?skip=0&show={page_size}"


def search_url(base: str, query: str, page_size: int, newest_first: bool) -> str:
    params = {"query": query, "searchtype": "all", "size": str(page_size)}
    if newest_first:
        params["order"] = "-announced_date_first"
    return f"{base.rstrip('/')}/search/?{urlencode(params)}"


def abs_url(base: str, arxiv_id: str) -> str:
    return f"{base.rstrip('/')}/abs/{arxiv_id}"


def parse_listing(html: str, url: str) -> ListingPage:
    """A /list/CATEGORY/... page: <dt>/<dd> pairs under day headings, paging links."""
    doc = parse_html(html)
    entries: list[ListingEntry] = []
    day: date | None = None
    # A listing has one <dl id="articles"> per day, each after its day heading.
    for node in doc.iter("h3", "dt", "dd"):
        if node.tag == "h3":
            day = _day(words(node))
        elif node.tag == "dt":
            link = select_one(node, 'a[href*="/abs/"]')
            m = ARXIV_ID.search(link.get("href", "")) if link is not None else None
            if m:
                entries.append(ListingEntry(arxiv_id=m.group(1), date_hint=day))
        elif entries and not entries[-1].title:
            entries[-1] = ListingEntry(
                arxiv_id=entries[-1].arxiv_id,
                title=prose(select_one(node, ".list-title")),
                authors=names(node.cssselect(".list-authors a")),
                categories=_categories(prose(select_one(node, ".list-subjects"))),
                abstract=prose(select_one(node, "p.mathjax")),
                date_hint=entries[-1].date_hint,
            )
    recognised = bool(doc.cssselect("#dlpage, dl#articles, .paging"))
    return ListingPage(entries, _next_page(doc, url), recognised)


def _next_page(doc: HtmlElement, url: str) -> str | None:
    """The page after this one: arXiv pages with `skip` (listings) or `start` (search)."""
    nxt = select_one(doc, "a.pagination-next[href]")
    if nxt is not None:
        # On the last page arXiv keeps the link, empty and hidden.
        href = nxt.get("href", "").strip()
        hidden = "is-invisible" in nxt.get("class", "").split()
        return None if hidden or not href else urljoin(url, href)
    param = "skip"
    here = int(dict(parse_qsl(urlsplit(url).query)).get(param, "0"))
    later = []
    for a in doc.cssselect(".paging a[href], nav.pagination a[href]"):
        target = urljoin(url, a.get("href", ""))
        skip = dict(parse_qsl(urlsplit(target).query)).get(param)
        if skip is not None and skip.isdigit() and int(skip) > here:
            later.append((int(skip), target))
    return min(later)[1] if later else None


def parse_search(html: str, url: str) -> ListingPage:
    """A /search/ results page: <li class="arxiv-result"> items and a "Next" link."""
    doc = parse_html(html)
    entries = []
    for item in doc.cssselect("li.arxiv-result"):
        link = select_one(item, '.list-title a[href*="/abs/"]')
        m = ARXIV_ID.search(link.get("href", "")) if link is not None else None
        if not m:
            continue
        full = select_one(item, ".abstract-full")
        if full is not None:
            for less in full.cssselect("a"):
                less.drop_tree()  # "△ Less"
        submitted = _SUBMITTED.search(words(select_one(item, "p.is-size-7")))
        hint = None
        if submitted:
            hint = datetime.strptime(" ".join(submitted.groups()), "%d %B %Y").date()
        entries.append(
            ListingEntry(
                arxiv_id=m.group(1),
                title=prose(select_one(item, "p.title")),
                authors=names(item.cssselect("p.authors a")),
                # Category tags; a DOI badge is a tag too, in a group "with addons".
                categories=names(item.cssselect(".tags:not(.has-addons) .tag")),
                abstract=prose(full),
                date_hint=hint,
            )
        )
    no_results = "produced no results" in words(select_one(doc, "main, body"))
    recognised = bool(entries) or no_results or bool(doc.cssselect("ol.breathe-horizontal"))
    return ListingPage(entries, _next_page(doc, url), recognised)


def parse_abstract(html: str, url: str) -> ArxivPaper:
    """An /abs/ID page: citation meta tags, the dateline and the submission history."""
    doc = parse_html(html)

    def meta(name: str) -> list[str]:
        return [t.get("content", "") for t in doc.cssselect(f'meta[name="{name}"][content]')]

    ident = (meta("citation_arxiv_id") or [""])[0]
    m = ARXIV_ID.fullmatch(ident) or ARXIV_ID.search(url)
    if not m:
        raise BadInput(f"{url}: no arXiv id on the abstract page", reason="not_an_abstract_page")
    dateline = words(select_one(doc, ".dateline"))
    versions = [
        int(v) for v in re.findall(r"\[v(\d+)\]", words(select_one(doc, ".submission-history")))
    ]
    this = re.search(r"this version, v(\d+)", dateline)
    version = int(this.group(1)) if this else (max(versions) if versions else int(m.group(2) or 1))
    published = _first_submission(dateline, meta("citation_date"))
    if published is None:
        raise BadInput(f"{url}: no submission date on the abstract page", reason="no_date")
    license_link = select_one(doc, ".abs-license a[href]")
    title = (meta("citation_title") or [prose(select_one(doc, "h1.title"))])[0]
    authors = names(doc.cssselect(".authors a"))
    return ArxivPaper(
        arxiv_id=m.group(1),
        version=version,
        title=" ".join(title.split()),
        authors=authors or tuple(meta("citation_author")),
        abstract=prose(select_one(doc, "blockquote.abstract")),
        categories=_categories(prose(select_one(doc, ".subjects"))),
        published=published,
        license=license_link.get("href") if license_link is not None else None,
        # The exact version, so the bytes match the metadata even if a v3 appears meanwhile.
        pdf_url=urljoin(url, f"/pdf/{m.group(1)}v{version}"),
    )


def _first_submission(dateline: str, citation_dates: list[str]) -> date | None:
    day = _day(dateline)  # "[Submitted on 17 Jun 2021 (v1), last revised ...]"
    if day:
        return day
    for value in citation_dates:  # "2021/06/17"
        try:
            return datetime.strptime(value, "%Y/%m/%d").date()
        except ValueError:
            continue
    return None


def matches_keywords(query: str | None, *texts: str) -> bool:
    """Every word of `query` appears in the texts (case-insensitive); no query matches all."""
    if not query:
        return True
    haystack = " ".join(texts).casefold()
    return all(re.search(rf"\b{re.escape(w)}", haystack) for w in query.casefold().split())
