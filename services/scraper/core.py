"""The scraper's pure decisions: arXiv page parsing, URL rules, safety, sniffing, filters.

No network, browser or Kafka here; `arxiv.py`, `site.py` and `fetch.py` do the I/O and ask this
module what to make of what they got.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import tldextract
from bs4 import BeautifulSoup, Tag

from pipeline.errors import BadInput

# --- arXiv ------------------------------------------------------------------------------------

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


def _text(node: Tag | None) -> str:
    if node is None:
        return ""
    for descriptor in node.select(".descriptor"):
        descriptor.extract()  # "Title:", "Authors:" labels
    return " ".join(node.get_text(" ").split())


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
    soup = BeautifulSoup(html, "lxml")
    entries: list[ListingEntry] = []
    day: date | None = None
    articles = soup.select_one("dl#articles") or soup
    for node in articles.find_all(["h3", "dt", "dd"]):
        if node.name == "h3":
            day = _day(node.get_text(" "))
        elif node.name == "dt":
            link = node.select_one('a[href*="/abs/"]')
            m = ARXIV_ID.search(str(link["href"])) if link else None
            if m:
                entries.append(ListingEntry(arxiv_id=m.group(1), date_hint=day))
        elif entries and not entries[-1].title:
            authors = tuple(a.get_text(" ", strip=True) for a in node.select(".list-authors a"))
            entries[-1] = ListingEntry(
                arxiv_id=entries[-1].arxiv_id,
                title=_text(node.select_one(".list-title")),
                authors=authors,
                categories=_categories(_text(node.select_one(".list-subjects"))),
                abstract=_text(node.select_one("p.mathjax")),
                date_hint=entries[-1].date_hint,
            )
    return ListingPage(entries, _next_page(soup, url))


def _next_page(soup: BeautifulSoup, url: str) -> str | None:
    """The page after this one: arXiv pages with `skip` (listings) or `start` (search)."""
    nxt = soup.select_one("a.pagination-next[href]")
    if nxt is not None:
        return urljoin(url, str(nxt["href"]))
    param = "skip"
    here = int(dict(parse_qsl(urlsplit(url).query)).get(param, "0"))
    later = []
    for a in soup.select(".paging a[href], nav.pagination a[href]"):
        target = urljoin(url, str(a["href"]))
        skip = dict(parse_qsl(urlsplit(target).query)).get(param)
        if skip is not None and skip.isdigit() and int(skip) > here:
            later.append((int(skip), target))
    return min(later)[1] if later else None


def parse_search(html: str, url: str) -> ListingPage:
    """A /search/ results page: <li class="arxiv-result"> items and a "Next" link."""
    soup = BeautifulSoup(html, "lxml")
    entries = []
    for item in soup.select("li.arxiv-result"):
        link = item.select_one('.list-title a[href*="/abs/"]')
        m = ARXIV_ID.search(str(link["href"])) if link else None
        if not m:
            continue
        full = item.select_one(".abstract-full")
        if full is not None:
            for less in full.select("a"):
                less.extract()  # "△ Less"
        dates = item.select_one("p.is-size-7")
        submitted = _SUBMITTED.search(dates.get_text(" ")) if dates else None
        hint = None
        if submitted:
            hint = datetime.strptime(" ".join(submitted.groups()), "%d %B %Y").date()
        entries.append(
            ListingEntry(
                arxiv_id=m.group(1),
                title=_text(item.select_one("p.title")),
                authors=tuple(a.get_text(" ", strip=True) for a in item.select("p.authors a")),
                categories=tuple(t.get_text(strip=True) for t in item.select(".tags .tag")),
                abstract=_text(full),
                date_hint=hint,
            )
        )
    return ListingPage(entries, _next_page(soup, url))


def parse_abstract(html: str, url: str) -> ArxivPaper:
    """An /abs/ID page: citation meta tags, the dateline and the submission history."""
    soup = BeautifulSoup(html, "lxml")

    def meta(name: str) -> list[str]:
        return [str(t["content"]) for t in soup.select(f'meta[name="{name}"][content]')]

    ident = (meta("citation_arxiv_id") or [""])[0]
    m = ARXIV_ID.fullmatch(ident) or ARXIV_ID.search(url)
    if not m:
        raise BadInput(f"{url}: no arXiv id on the abstract page", reason="not_an_abstract_page")
    history = soup.select_one(".submission-history")
    versions = [int(v) for v in re.findall(r"\[v(\d+)\]", history.get_text(" ") if history else "")]
    this = re.search(r"this version, v(\d+)", soup.get_text(" "))
    version = int(this.group(1)) if this else (max(versions) if versions else int(m.group(2) or 1))
    published = _first_submission(soup, meta("citation_date"))
    if published is None:
        raise BadInput(f"{url}: no submission date on the abstract page", reason="no_date")
    license_link = soup.select_one(".abs-license a[href]")
    title = (meta("citation_title") or [_text(soup.select_one("h1.title"))])[0]
    authors = tuple(a.get_text(" ", strip=True) for a in soup.select(".authors a"))
    return ArxivPaper(
        arxiv_id=m.group(1),
        version=version,
        title=" ".join(title.split()),
        authors=authors or tuple(meta("citation_author")),
        abstract=_text(soup.select_one("blockquote.abstract")),
        categories=_categories(_text(soup.select_one(".subjects"))),
        published=published,
        license=str(license_link["href"]) if license_link else None,
        # The exact version, so the bytes match the metadata even if a v3 appears meanwhile.
        pdf_url=urljoin(url, f"/pdf/{m.group(1)}v{version}"),
    )


def _first_submission(soup: BeautifulSoup, citation_dates: list[str]) -> date | None:
    dateline = soup.select_one(".dateline")
    if dateline is not None:
        day = _day(dateline.get_text(" "))  # "[Submitted on 17 Jun 2021 (v1), last revised ...]"
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


# --- URLs -------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRACKING = re.compile(r"^(utm_\w+|fbclid|gclid|mc_eid|mc_cid)$")
ASSET_EXTENSIONS = frozenset(
    ".css .js .mjs .map .json .xml .rss .atom .png .jpg .jpeg .gif .svg .webp .ico .bmp .tif "
    ".tiff .woff .woff2 .ttf .otf .eot .mp3 .mp4 .m4a .wav .ogg .webm .mov .avi .zip .gz .tgz "
    ".bz2 .xz .7z .rar .tar .exe .dmg .iso .bin .apk .doc .docx .xls .xlsx .ppt .pptx".split()
)


def canonical_url(url: str, base: str | None = None) -> str | None:
    """The one spelling of a URL: absolute, lower-case scheme and host, no default port, no
    fragment, no tracking parameters, dot segments resolved. None for non-http(s) links."""
    absolute = urljoin(base, url.strip()) if base else url.strip()
    parts = urlsplit(absolute)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return None
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _resolve_dots(parts.path or "/")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, True) if not _TRACKING.match(k)])
    return urlunsplit((scheme, netloc, path, query, ""))


def _resolve_dots(path: str) -> str:
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    return "/" + "/".join(out)


def is_asset(url: str) -> bool:
    """A link to a stylesheet, script, image, media or archive: never a document to crawl."""
    return PurePosixPath(urlsplit(url).path).suffix.lower() in ASSET_EXTENSIONS


_extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # bundled list, offline


@lru_cache(maxsize=4096)
def registered_domain(host: str) -> str:
    """example.co.uk for www.example.co.uk; an IP address or a single label stays as it is."""
    host = host.lower().strip("[]")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return _extract(host).top_domain_under_public_suffix or host


@dataclass(frozen=True)
class Policy:
    """Where one source may fetch from."""

    domains: frozenset[str]  # registered domains; any host under them is allowed
    allow_private: bool = False

    @classmethod
    def for_urls(cls, urls: Iterable[str], allow_private: bool = False) -> Policy:
        hosts = (urlsplit(u).hostname or u for u in urls)
        return cls(frozenset(registered_domain(h) for h in hosts), allow_private)

    def check_url(self, url: str) -> str:
        """The URL's host if the scheme and host are allowed; else BadInput saying why."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise BadInput(f"{url}: only http and https are fetched", reason="blocked_scheme")
        host = (parts.hostname or "").lower()
        if not host or registered_domain(host) not in self.domains:
            raise BadInput(
                f"{url}: host {host!r} is not in this source's allow-list "
                f"({', '.join(sorted(self.domains))})",
                reason="host_not_allowed",
            )
        return host

    def check_addresses(self, url: str, addresses: Iterable[str]) -> None:
        """Refuse a host that resolves to any non-public address, unless the source allows."""
        if self.allow_private:
            return
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise BadInput(
                    f"{url}: resolves to the private or reserved address {address}; "
                    "the source does not allow private addresses",
                    reason="private_address",
                )


# --- pages and bytes --------------------------------------------------------------------------

PDF = "application/pdf"
HTML = "text/html"


def sniff(head: bytes) -> str | None:
    """What the first bytes say the content is: PDF, HTML, or None for anything else."""
    # The PDF spec lets readers accept the header anywhere in the first 1024 bytes.
    if b"%PDF-" in head[:1024]:
        return PDF
    text = head[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
        text.startswith(b"<") and b"<html" in text
    ):
        return HTML
    return None


def expect_pdf(url: str, head: bytes) -> None:
    kind = sniff(head)
    if kind != PDF:
        what = "an HTML page" if kind == HTML else "not a PDF"
        raise BadInput(f"{url}: expected a PDF, got {what} (no %PDF- header)", reason="not_a_pdf")


@dataclass(frozen=True)
class PageLinks:
    title: str | None
    canonical: str | None
    links: list[str] = field(default_factory=list)


def page_links(html: str | bytes, url: str) -> PageLinks:
    """Title, declared canonical URL and the canonical form of every http(s) link on a page."""
    soup = BeautifulSoup(html, "lxml")
    base_tag = soup.select_one("base[href]")
    base = urljoin(url, str(base_tag["href"])) if base_tag else url
    canonical_tag = soup.select_one('link[rel="canonical"][href]')
    canonical = canonical_url(str(canonical_tag["href"]), base) if canonical_tag else None
    links: dict[str, None] = {}
    for a in soup.select("a[href]"):
        if "nofollow" in (a.get("rel") or []):
            continue
        target = canonical_url(str(a["href"]), base)
        if target and not is_asset(target):
            links[target] = None
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    return PageLinks(title=title or None, canonical=canonical, links=list(links))


def needs_javascript(html: str | bytes) -> bool:
    """A page whose body is an empty shell filled in by scripts (a single-page app)."""
    soup = BeautifulSoup(html, "lxml")
    if not soup.find("script"):
        return False
    body = soup.body or soup
    for node in body.find_all(["script", "style", "noscript", "template"]):
        node.extract()
    return len(" ".join(body.get_text(" ").split())) < 200


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds to wait: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def robots_rules(robots_txt: str | None) -> RobotFileParser:
    """A site's robots.txt rules; None (no robots.txt) allows everything."""
    parser = RobotFileParser()
    parser.parse((robots_txt or "").splitlines())
    return parser
