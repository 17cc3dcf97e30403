"""The scraper's pure decisions: URL rules, the host policy, sniffing, pages' links.

No network, browser or Kafka here; `site.py`, `fetch.py` and `proxy.py` do the I/O and ask this
module what to make of what they got. What arXiv's own pages say is read in `arxiv_pages.py`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

# --- HTML through lxml: with BeautifulSoup, parsing was the scraper's bottleneck -------------

_UTF8 = lxml.html.HTMLParser(encoding="utf-8")


def parse_html(html: str | bytes) -> HtmlElement:
    """A document from bytes (their declared charset honoured) or text; never fails."""
    data, parser = (html.encode("utf-8"), _UTF8) if isinstance(html, str) else (html, None)
    try:
        return lxml.html.document_fromstring(data, parser=parser)
    except ParserError:  # nothing but whitespace or comments
        return lxml.html.document_fromstring(b"<html><body></body></html>")


def select_one(node: HtmlElement, css: str) -> HtmlElement | None:
    found = node.cssselect(css)
    return found[0] if found else None


def words(node: HtmlElement | None) -> str:
    """The node's text, its pieces joined by single spaces."""
    return "" if node is None else " ".join(" ".join(node.itertext()).split())


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)\]])")


def prose(node: HtmlElement | None) -> str:
    """Prose: like `words`, without arXiv's "Title:", "Authors:" labels, and without the
    space that joining pieces leaves before punctuation ("this https URL ." after a link)."""
    if node is None:
        return ""
    for descriptor in node.cssselect(".descriptor"):
        descriptor.drop_tree()  # keeps the text that follows it
    return _SPACE_BEFORE_PUNCT.sub(r"\1", words(node))


def names(nodes: list[HtmlElement]) -> tuple[str, ...]:
    return tuple(words(n) for n in nodes)


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
    doc = parse_html(html)
    base_tag = select_one(doc, "base[href]")
    base = urljoin(url, base_tag.get("href", "")) if base_tag is not None else url
    canonical_tag = select_one(doc, 'link[rel="canonical"][href]')
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
    title = words(select_one(doc, "title"))
    return PageLinks(title=title or None, canonical=canonical, links=list(links))


def needs_javascript(html: str | bytes) -> bool:
    """A page whose body is an empty shell filled in by scripts (a single-page app)."""
    doc = parse_html(html)
    if not doc.cssselect("script"):
        return False
    body = doc.find("body")
    body = doc if body is None else body
    for node in list(body.iter("script", "style", "noscript", "template")):
        node.drop_tree()
    return len(words(body)) < 200


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
