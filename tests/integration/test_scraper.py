"""The scraper service end to end: a subprocess on the real broker, real headless Chromium,
an arXiv look-alike serving the real papers and the real pages of a consulting site, all on
127.0.0.1."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from pipeline.blobstore import FileBlobStore
from pipeline.messages import ArxivSource, FolderSource, SiteSource
from pipeline.settings import KafkaSettings
from tests.support.arxiv_site import BAD_PAPERS, LICENSE, REAL_PAPERS, ArxivSite
from tests.support.scraper_rig import ScraperRig
from tests.support.static_site import Route, StaticSite

pytestmark = pytest.mark.integration

CAP = 5 * 1024 * 1024  # above the largest real paper (3.6 MB)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vids(papers) -> set[str]:  # noqa: ANN001
    return {p.vid for p in papers}


@pytest.fixture(scope="module")
def arxiv(test_data) -> Iterator[ArxivSite]:
    with ArxivSite(test_data / "data" / "pdfs", huge_bytes=128 * 1024 * 1024) as site:
        yield site


@pytest.fixture(scope="module")
def scraper(broker, arxiv, tmp_path_factory) -> Iterator[ScraperRig]:
    home = tmp_path_factory.mktemp("scraper")
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    env = {
        "SCRAPER_ARXIV_BASE_URL": arxiv.url,
        "SCRAPER_ARXIV_PAGE_SIZE": "4",  # 14 papers: pagination over 4 pages
        "SCRAPER_MAX_BYTES": str(CAP),
        "SCRAPER_MAX_ATTEMPTS": "2",  # a request the worker loop retries, then dead-letters
        "SCRAPER_BACKOFF_INITIAL_S": "0.1",
    }
    with ScraperRig(kafka, home / "blobs", home / "scraper.log", **env) as rig:
        yield rig


class Requests:
    """What a site was asked for during one block."""

    def __init__(self, counter: Counter[str]) -> None:
        self.counter = counter

    def __enter__(self) -> Counter[str]:
        self.before = Counter(self.counter)
        self.delta: Counter[str] = Counter()
        return self.delta

    def __exit__(self, *exc: object) -> None:
        self.delta.update(self.counter - self.before)


# --- arXiv ------------------------------------------------------------------------------------


def test_listing_publishes_exactly_the_categorys_papers_with_their_metadata(
    scraper, arxiv, test_data
):
    with Requests(arxiv.requests) as asked:
        out = scraper.run(ArxivSource(category="cs.CL", allow_private=True))

    in_listing = [p for p in REAL_PAPERS if "cs.CL" in p.categories]
    assert out.ids() == vids(in_listing)  # all pages followed, the bad papers left out
    assert len(out.docs) == len(in_listing)
    assert out.dead == []  # a bad paper is skipped; the request itself is fine
    assert asked["/list/cs.CL/recent"] == 3  # 12 entries, 4 a page

    lora = next(d for d in out.docs if d.source.external_id == "2106.09685v2")
    pdf = test_data / "data" / "pdfs" / "2106.09685v2_lora.pdf"
    assert lora.doc_id == sha256(pdf) and lora.size == pdf.stat().st_size
    assert lora.content_type == "application/pdf"
    assert FileBlobStore(scraper.blobs).get(lora.uri) == pdf.read_bytes()
    src = lora.source
    assert (src.kind, src.url) == ("arxiv", f"{arxiv.url}/abs/2106.09685v2")
    assert src.title == "LoRA: Low-Rank Adaptation of Large Language Models"
    assert src.authors[:2] == ("Edward J. Hu", "Yelong Shen") and len(src.authors) == 8
    assert src.published == date(2021, 6, 17)
    assert src.categories == ("cs.CL", "cs.AI", "cs.LG")
    assert src.license == LICENSE
    assert lora.abstract and lora.abstract.startswith("An important paradigm")


def test_bad_papers_are_refused_each_for_its_reason(scraper, arxiv):
    reasons = ("not_a_pdf", "too_large", "robots_disallowed")
    skipped = "distillery_scraper_skipped_total"
    before = {r: scraper.metric(skipped, reason=r) for r in reasons}
    with Requests(arxiv.requests) as asked:
        out = scraper.run(ArxivSource(category="cs.CL", since=date(2024, 5, 1), allow_private=True))
    assert out.ids() == {"2407.06204v2"}
    assert {r: scraper.metric(skipped, reason=r) - before[r] for r in reasons} == dict.fromkeys(
        reasons, 1.0
    )
    html_page, huge, robots = BAD_PAPERS
    assert asked[f"/pdf/{html_page.vid}"] == 1  # fetched, sniffed, rejected: not a PDF
    assert asked[f"/pdf/{huge.vid}"] == 1  # aborted at the cap while streaming
    assert arxiv.huge_sent and arxiv.huge_sent[-1] < arxiv.huge_bytes / 4
    assert asked[f"/abs/{robots.arxiv_id}"] == 1
    assert arxiv.requests[f"/pdf/{robots.vid}"] == 0  # robots.txt disallows it: never asked


def test_an_error_page_mid_walk_is_retried_then_dead_lettered_not_taken_as_the_end(scraper, arxiv):
    arxiv.broken.add("/list/cs.CL/recent?skip=4&show=4")
    try:
        out = scraper.run(ArxivSource(category="cs.CL", allow_private=True))
    finally:
        arxiv.broken.clear()
    [dead] = out.dead
    assert (dead.reason, dead.attempts) == ("unexpected_page", 2)
    assert "not an arXiv listing" in dead.error
    # What page 1 gave was published (and again on the retry: the same ids, harmless).
    assert out.ids() == {"2407.06204v2"}


def test_date_filter_stops_at_the_first_page_wholly_before_since(scraper, arxiv):
    since = date(2023, 5, 1)
    with Requests(arxiv.requests) as asked:
        out = scraper.run(ArxivSource(category="cs.CL", since=since, allow_private=True))
    assert out.ids() == {"2407.06204v2", "2310.03025v1", "2308.08155v2", "2305.15717v1"}
    # Listing dates rule out older papers without a request; page 3 is the first that is
    # entirely older, and page 4 is never asked for.
    older = [p for p in REAL_PAPERS if p.published < since]
    assert not any(asked[f"/abs/{p.arxiv_id}"] for p in older)
    assert asked["/list/cs.CL/recent"] == 3


def test_max_papers_takes_the_first_that_pass_in_listing_order(scraper):
    out = scraper.run(ArxivSource(category="cs.CL", max_papers=2, allow_private=True))
    assert out.ids() == {"2407.06204v2", "2310.03025v1"}  # the bad papers between are skipped


def test_keywords_filter_a_listing(scraper):
    out = scraper.run(ArxivSource(category="cs.CL", query="instruction", allow_private=True))
    assert out.ids() == {"2203.02155v1"}


def test_search_follows_next_pages(scraper, arxiv):
    with Requests(arxiv.requests) as asked:
        out = scraper.run(ArxivSource(query="language models", allow_private=True))
    hits = [
        p
        for p in REAL_PAPERS
        if all(w in f"{p.title} {p.abstract}".lower() for w in ("language", "models"))
    ]
    assert len(hits) > 4  # more than one page of results
    assert out.ids() == vids(hits)
    assert asked["/search/"] == -(-len(hits) // 4)


def test_a_paper_fetched_before_is_not_downloaded_again(scraper, arxiv):
    first = scraper.run(ArxivSource(category="cs.CL", query="LoRA", allow_private=True))
    with Requests(arxiv.requests) as asked:
        again = scraper.run(ArxivSource(category="cs.CL", query="LoRA", allow_private=True))
    assert first.ids() == again.ids() == {"2106.09685v2"}
    assert {d.doc_id for d in first.docs} == {d.doc_id for d in again.docs}
    assert not any(path.startswith("/pdf/") for path in asked)  # from the ledger


# --- web sites --------------------------------------------------------------------------------

CONSULTING_PAGES = {
    "index.html",
    "about.html",
    "contact_us.html",
    "generative_ai.html",
    "blog/blog_index.html",
    "blog/evolution_of_retrieval_augmented_generation_jan_2024.html",
    "blog/natural_language_ux_with_llms_jan_2024.html",
}


@pytest.fixture(scope="module")
def consulting(test_data) -> Iterator[StaticSite]:
    robots = Route(content_type="text/plain", body=b"User-agent: *\nDisallow: /about.html\n")
    with StaticSite(test_data / "data" / "web" / "pattersonconsulting") as site:
        site.routes["/robots.txt"] = robots
        yield site


def test_site_crawl_publishes_the_reachable_pages_robots_allow(scraper, consulting, test_data):
    out = scraper.run(SiteSource(start_url=f"{consulting.url}/index.html", allow_private=True))
    # strategy_services.html is linked from no page; about.html is disallowed by robots.txt.
    expected = {f"{consulting.url}/{page}" for page in CONSULTING_PAGES - {"about.html"}}
    assert out.ids() == expected
    assert consulting.requests["/about.html"] == 0
    assert all(d.content_type == "text/html" and d.source.kind == "web" for d in out.docs)
    root = test_data / "data" / "web" / "pattersonconsulting"
    for doc in out.docs:
        page = root / doc.source.url.removeprefix(consulting.url + "/")
        assert doc.doc_id == sha256(page)  # the bytes as served, not a re-serialised DOM
    titles = {d.source.title for d in out.docs}
    assert "Patterson Consulting - Contact Us" in titles


def test_a_page_that_keeps_failing_is_skipped_and_the_crawl_goes_on(scraper, consulting):
    consulting.routes["/contact_us.html"] = Route(status=500)
    try:
        out = scraper.run(SiteSource(start_url=f"{consulting.url}/index.html", allow_private=True))
    finally:
        del consulting.routes["/contact_us.html"]
    expected = CONSULTING_PAGES - {"about.html", "contact_us.html"}
    assert out.ids() == {f"{consulting.url}/{page}" for page in expected}
    assert out.dead == []


def test_site_crawl_fills_max_pages_past_dead_links(scraper, consulting):
    # Most of the home page's links are dead here (pages not copied): the crawl keeps taking
    # links until it has its five documents, and takes no more.
    out = scraper.run(
        SiteSource(start_url=f"{consulting.url}/index.html", max_pages=5, allow_private=True)
    )
    assert len(out.docs) == 5
    assert f"{consulting.url}/index.html" in out.ids()
    assert out.ids() <= {f"{consulting.url}/{page}" for page in CONSULTING_PAGES}


@pytest.fixture
def small_site(tmp_path, test_data) -> Iterator[StaticSite]:
    """A page built by JavaScript, a linked PDF, an image, a redirect off the site."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(test_data / "data" / "pdfs" / "2106.09685v2_lora.pdf", root / "paper.pdf")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for name in ("other.html", "elsewhere.html", "internal.html"):
        (root / name).write_text("<html><body><p>must not be fetched</p></body></html>")
    with StaticSite(root) as site:
        (root / "index.html").write_text(
            "<!doctype html><html><head><title>Home</title></head><body><h1>Home</h1>"
            '<a href="app.html">app</a> <a href="paper.pdf">paper</a> '
            '<a href="logo.png">logo</a> <a href="/moved">moved</a> '
            '<a href="probe.html">probe</a> <a href="leave.html">leave</a> '
            f'<a href="http://localhost:{site.port}/other.html">other host</a> '
            '<a href="mailto:someone@example.com">mail</a></body></html>'
        )
        (root / "app.html").write_text(
            "<!doctype html><html><head><title>App</title></head><body><div id='root'></div>"
            "<script>document.getElementById('root').innerHTML = '<h1>Rendered by "
            "JavaScript</h1><p>' + 'Only a browser sees this paragraph. '.repeat(12) + '</p>';"
            "</script></body></html>"
        )
        # Scripts that reach for another host: an XHR, and a navigation away.
        other = f"http://localhost:{site.port}"
        (root / "probe.html").write_text(
            "<!doctype html><html><head><title>Probe</title></head><body><div id='out'></div>"
            f"<script>fetch('{other}/internal.html').then(r => r.text()).catch(e => 'blocked')"
            ".then(t => { document.getElementById('out').innerHTML = '<p>' + "
            "'The page finished its script. '.repeat(12) + '</p>'; });</script></body></html>"
        )
        (root / "leave.html").write_text(
            "<!doctype html><html><head><title>Leave</title></head><body>"
            f"<script>location.href = '{other}/elsewhere.html';</script></body></html>"
        )
        site.routes["/moved"] = Route(
            status=302, headers=(("Location", f"http://localhost:{site.port}/elsewhere.html"),)
        )
        yield site


def test_site_renders_javascript_pages_and_keeps_to_its_hosts(scraper, small_site):
    out = scraper.run(SiteSource(start_url=f"{small_site.url}/index.html", allow_private=True))
    by_url = {d.source.url: d for d in out.docs}
    pages = ("index.html", "app.html", "paper.pdf", "probe.html")
    assert set(by_url) == {f"{small_site.url}/{p}" for p in pages}
    app = FileBlobStore(scraper.blobs).get(by_url[f"{small_site.url}/app.html"].uri)
    assert b"Rendered by JavaScript" in app  # the DOM after the script ran
    assert by_url[f"{small_site.url}/paper.pdf"].content_type == "application/pdf"
    assert small_site.requests["/logo.png"] == 0  # an asset: never fetched
    assert small_site.requests["/moved"] == 1  # followed once, its redirect refused:
    assert small_site.requests["/elsewhere.html"] == 0  # localhost is another host
    assert small_site.requests["/other.html"] == 0
    # The browser's own requests go through the source's policy too: the probe's XHR to
    # another host never left, the page that navigated away was not published.
    assert small_site.requests["/internal.html"] == 0
    assert small_site.requests["/probe.html"] == 2  # fetched, then rendered
    assert f"{small_site.url}/leave.html" not in by_url


def test_private_address_refused_unless_the_source_allows_it(scraper, small_site):
    out = scraper.run(SiteSource(start_url=f"http://localhost:{small_site.port}/index.html"))
    assert out.docs == []
    [dead] = out.dead
    assert dead.reason == "private_address"
    assert "127.0.0.1" in dead.error or "::1" in dead.error
    assert sum(small_site.requests.values()) == 0  # refused before any connection


# --- local folders ----------------------------------------------------------------------------


def test_folder_publishes_every_pdf_by_content(scraper, test_data):
    pdfs = test_data / "data" / "pdfs"
    out = scraper.run(FolderSource(path=str(pdfs)))
    files = sorted(pdfs.glob("*.pdf"))
    assert len(files) == 13
    assert {d.doc_id for d in out.docs} == {sha256(f) for f in files}
    assert {d.source.url for d in out.docs} == {f.as_uri() for f in files}
    assert all(d.source.kind == "local" and d.content_type == "application/pdf" for d in out.docs)


def test_folder_checks_content_and_depth(scraper, tmp_path, test_data):
    folder = tmp_path / "docs"
    (folder / "nested").mkdir(parents=True)
    page = test_data / "data" / "web" / "pattersonconsulting" / "about.html"
    shutil.copy(page, folder / "about.html")
    (folder / "report.pdf").write_text("<html><body>an error page saved as .pdf</body></html>")
    shutil.copy(test_data / "data" / "pdfs" / "2302.13971v1_llama.pdf", folder / "nested" / "a.pdf")
    (folder / "notes.txt").write_text("not a document type the scraper takes")

    flat = scraper.run(FolderSource(path=str(folder), recursive=False))
    assert [(d.source.url, d.content_type) for d in flat.docs] == [
        ((folder / "about.html").as_uri(), "text/html")
    ]
    deep = scraper.run(FolderSource(path=str(folder)))
    assert {d.source.url for d in deep.docs} == {
        (folder / "about.html").as_uri(),
        (folder / "nested" / "a.pdf").as_uri(),
    }


def test_missing_folder_goes_to_the_dlq_with_its_reason(scraper, tmp_path):
    out = scraper.run(FolderSource(path=str(tmp_path / "nope")))
    [dead] = out.dead
    assert dead.reason == "no_such_folder"
    assert "does not exist" in dead.error
