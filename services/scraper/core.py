"""The scraper's pure decisions: arXiv page parsing, URL rules, safety, sniffing, filters.

No network, browser or Kafka here; `arxiv.py`, `site.py` and `fetch.py` do the I/O and ask this
module what to make of what they got.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import lxml.html
import tldextract
from lxml.etree import ParserError
from lxml.html import HtmlElement

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


# --- HTML through lxml: with BeautifulSoup, parsing was the scraper's bottleneck -------------

_UTF8 = lxml.html.HTMLParser(encoding="utf-8")


def _parse(html: str | bytes) -> HtmlElement:
    """A document from bytes (their declared charset honoured) or text; never fails."""
    data, parser = (html.encode("utf-8"), _UTF8) if isinstance(html, str) else (html, None)
    try:
        return lxml.html.document_fromstring(data, parser=parser)
    except ParserError:  # nothing but whitespace or comments
        return lxml.html.document_fromstring(b"<html><body></body></html>")


def _one(node: HtmlElement, css: str) -> HtmlElement | None:
    found = node.cssselect(css)
    return found[0] if found else None


def _words(node: HtmlElement | None) -> str:
    """The node's text, its pieces joined by single spaces."""
    return "" if node is None else " ".join(" ".join(node.itertext()).split())


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)\]])")


def _text(node: HtmlElement | None) -> str:
    """Prose: like `_words`, without arXiv's "Title:", "Authors:" labels, and without the
    space that joining pieces leaves before punctuation ("this https URL ." after a link)."""
    if node is None:
        return ""
    for descriptor in node.cssselect(".descriptor"):
        descriptor.drop_tree()  # keeps the text that follows it
    return _SPACE_BEFORE_PUNCT.sub(r"\1", _words(node))


def _names(nodes: list[HtmlElement]) -> tuple[str, ...]:
    return tuple(_words(n) for n in nodes)


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
    doc = _parse(html)
    entries: list[ListingEntry] = []
    day: date | None = None
    # A listing has one <dl id="articles"> per day, each after its day heading.
    for node in doc.iter("h3", "dt", "dd"):
        if node.tag == "h3":
            day = _day(_words(node))
        elif node.tag == "dt":
            link = _one(node, 'a[href*="/abs/"]')
            m = ARXIV_ID.search(link.get("href", "")) if link is not None else None
            if m:
                entries.append(ListingEntry(arxiv_id=m.group(1), date_hint=day))
        elif entries and not entries[-1].title:
            entries[-1] = ListingEntry(
                arxiv_id=entries[-1].arxiv_id,
                title=_text(_one(node, ".list-title")),
                authors=_names(node.cssselect(".list-authors a")),
                categories=_categories(_text(_one(node, ".list-subjects"))),
                abstract=_text(_one(node, "p.mathjax")),
                date_hint=entries[-1].date_hint,
            )
    recognised = bool(doc.cssselect("#dlpage, dl#articles, .paging"))
    return ListingPage(entries, _next_page(doc, url), recognised)


def _next_page(doc: HtmlElement, url: str) -> str | None:
    """The page after this one: arXiv pages with `skip` (listings) or `start` (search)."""
    nxt = _one(doc, "a.pagination-next[href]")
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
    doc = _parse(html)
    entries = []
    for item in doc.cssselect("li.arxiv-result"):
        link = _one(item, '.list-title a[href*="/abs/"]')
        m = ARXIV_ID.search(link.get("href", "")) if link is not None else None
        if not m:
            continue
        full = _one(item, ".abstract-full")
        if full is not None:
            for less in full.cssselect("a"):
                less.drop_tree()  # "△ Less"
        submitted = _SUBMITTED.search(_words(_one(item, "p.is-size-7")))
        hint = None
        if submitted:
            hint = datetime.strptime(" ".join(submitted.groups()), "%d %B %Y").date()
        entries.append(
            ListingEntry(
                arxiv_id=m.group(1),
                title=_text(_one(item, "p.title")),
                authors=_names(item.cssselect("p.authors a")),
                # Category tags; a DOI badge is a tag too, in a group "with addons".
                categories=_names(item.cssselect(".tags:not(.has-addons) .tag")),
                abstract=_text(full),
                date_hint=hint,
            )
        )
    no_results = "produced no results" in _words(_one(doc, "main, body"))
    recognised = bool(entries) or no_results or bool(doc.cssselect("ol.breathe-horizontal"))
    return ListingPage(entries, _next_page(doc, url), recognised)


def parse_abstract(html: str, url: str) -> ArxivPaper:
    """An /abs/ID page: citation meta tags, the dateline and the submission history."""
    doc = _parse(html)

    def meta(name: str) -> list[str]:
        return [t.get("content", "") for t in doc.cssselect(f'meta[name="{name}"][content]')]

    ident = (meta("citation_arxiv_id") or [""])[0]
    m = ARXIV_ID.fullmatch(ident) or ARXIV_ID.search(url)
    if not m:
        raise BadInput(f"{url}: no arXiv id on the abstract page", reason="not_an_abstract_page")
    dateline = _words(_one(doc, ".dateline"))
    versions = [int(v) for v in re.findall(r"\[v(\d+)\]", _words(_one(doc, ".submission-history")))]
    this = re.search(r"this version, v(\d+)", dateline)
    version = int(this.group(1)) if this else (max(versions) if versions else int(m.group(2) or 1))
    published = _first_submission(dateline, meta("citation_date"))
    if published is None:
        raise BadInput(f"{url}: no submission date on the abstract page", reason="no_date")
    license_link = _one(doc, ".abs-license a[href]")
    title = (meta("citation_title") or [_text(_one(doc, "h1.title"))])[0]
    authors = _names(doc.cssselect(".authors a"))
    return ArxivPaper(
        arxiv_id=m.group(1),
        version=version,
        title=" ".join(title.split()),
        authors=authors or tuple(meta("citation_author")),
        abstract=_text(_one(doc, "blockquote.abstract")),
        categories=_categories(_text(_one(doc, ".subjects"))),
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
    """RFC 3986 dot-segment removal: /a/b/../c -> /a/c, and /a/b/.. -> /a/ (a directory)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def is_asset(url: str) -> bool:
    """A link to a stylesheet, script, image, media or archive: never a document to crawl."""
    return PurePosixPath(urlsplit(url).path).suffix.lower() in ASSET_EXTENSIONS


# The list bundled with tldextract (no download), with its private part: alice.github.io is
# one site and bob.github.io another.
_extract = tldextract.TLDExtract(
    suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
)


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
            if not _public(ip):
                raise BadInput(
                    f"{url}: resolves to the private or reserved address {address}; "
                    "the source does not allow private addresses",
                    reason="private_address",
                )


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 spellings of an IPv4 address (mapped, 6to4, NAT64) are as public as it is.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return _public(embedded)
    return True


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
    doc = _parse(html)
    base_tag = _one(doc, "base[href]")
    base = urljoin(url, base_tag.get("href", "")) if base_tag is not None else url
    canonical_tag = _one(doc, 'link[rel="canonical"][href]')
    canonical = (
        canonical_url(canonical_tag.get("href", ""), base) if canonical_tag is not None else None
    )
    links: dict[str, None] = {}
    for a in doc.cssselect("a[href]"):
        if "nofollow" in a.get("rel", "").lower().split():
            continue
        target = canonical_url(a.get("href", ""), base)
        if target and not is_asset(target):
            links[target] = None
    title = _words(_one(doc, "title"))
    return PageLinks(title=title or None, canonical=canonical, links=list(links))


def needs_javascript(html: str | bytes) -> bool:
    """A page whose body is an empty shell filled in by scripts (a single-page app)."""
    doc = _parse(html)
    if not doc.cssselect("script"):
        return False
    body = doc.find("body")
    body = doc if body is None else body
    for node in list(body.iter("script", "style", "noscript", "template")):
        node.drop_tree()
    return len(_words(body)) < 200


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
    if when.tzinfo is None:  # asctime and "-0000" dates: HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def robots_rules(robots_txt: str | None) -> RobotFileParser:
    """A site's robots.txt rules; None (no robots.txt) allows everything."""
    parser = RobotFileParser()
    parser.parse((robots_txt or "").splitlines())
    return parser
