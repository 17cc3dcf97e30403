"""The scraper's pure modules: arxiv_pages.py (arXiv's page markup) and core.py (URL rules,
the fetch policy, sniffing, page links).

arXiv pages come from the look-alike in tests/support/arxiv_site.py (real paper metadata) and
from hand-written snippets in arXiv's own markup; nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.errors import BadInput
from services.scraper import arxiv_pages, core
from tests.support.arxiv_site import (
    BAD_PAPERS,
    CC_BY,
    LICENSE,
    REAL_PAPERS,
    ROBOTS,
    ArxivSite,
    Paper,
    _listing_entry,
    _page,
    _search_item,
)

pytestmark = pytest.mark.unit

ARXIV = "https://arxiv.org"
LORA = next(p for p in REAL_PAPERS if p.arxiv_id == "2106.09685")


@pytest.fixture(scope="module")
def site() -> Iterator[ArxivSite]:
    """The look-alike's page generator, never started: its socket is bound but not served."""
    site = ArxivSite(pdfs=Path("/nonexistent"), papers=list(REAL_PAPERS))
    yield site
    # Not site.__exit__(): shutdown() waits for a serve loop that was never started.
    site._server.server_close()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --- arXiv identifiers and URLs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ident", "version"),
    [
        ("2106.09685v2", "2106.09685", "2"),
        ("2411.14405", "2411.14405", None),
        ("1412.6980v9", "1412.6980", "9"),  # four-digit numbers before 2015
        ("hep-th/9901001v1", "hep-th/9901001", "1"),
        ("math/0309136", "math/0309136", None),
    ],
)
def test_arxiv_id_splits_identifier_and_version(text: str, ident: str, version: str | None):
    m = arxiv_pages.ARXIV_ID.fullmatch(text)
    assert m is not None and (m.group(1), m.group(2)) == (ident, version)


def test_arxiv_urls():
    assert arxiv_pages.listing_url(ARXIV + "/", "cs.CL", "recent", 50) == (
        "https://arxiv.org/list/cs.CL/recent?skip=0&show=50"
    )
    assert (
        arxiv_pages.abs_url(ARXIV + "/", "hep-th/9901001") == "https://arxiv.org/abs/hep-th/9901001"
    )
    newest = arxiv_pages.search_url(ARXIV, "low rank adaptation", 25, newest_first=True)
    assert newest.startswith("https://arxiv.org/search/?")
    assert query_of(newest) == {
        "query": "low rank adaptation",
        "searchtype": "all",
        "size": "25",
        "order": "-announced_date_first",
    }
    assert "order" not in query_of(arxiv_pages.search_url(ARXIV, "lora", 25, newest_first=False))


# --- parse_listing ---------------------------------------------------------------------------

LIST_URL = ARXIV + "/list/cs.CL/recent"
MARCO_DT = """<dt>
  <a name='item1'>[1]</a>
  <a href ="/abs/2411.14405" title="Abstract" id="2411.14405">
    arXiv:2411.14405
  </a>
  [<a href="/pdf/2411.14405" title="Download PDF" id="pdf-2411.14405">pdf</a>,
   <a href="https://arxiv.org/html/2411.14405v1" title="View HTML">html</a>,
   <a href="/format/2411.14405" title="Other formats">other</a>]
</dt>
<dd>
  <div class='meta'>
    <div class='list-title mathjax'><span class='descriptor'>Title:</span>
      Marco-o1: Towards Open Reasoning Models for Open-Ended Solutions
    </div>
    <div class='list-authors'><a href="https://arxiv.org/a/zhao_y_1" rel="nofollow">Yu Zhao</a>,
      <a href="https://arxiv.org/a/yin_h_1" rel="nofollow">Huifeng Yin</a>,
      <a href="https://arxiv.org/a/zeng_b_1" rel="nofollow">Bo Zeng</a></div>
    <div class='list-comments mathjax'><span class='descriptor'>Comments:</span> 8 pages</div>
    <div class='list-subjects'><span class='descriptor'>Subjects:</span>
      <span class="primary-subject">Computation and Language (cs.CL)</span>;
      Artificial Intelligence (cs.AI)
    </div>
  </div>
</dd>"""
OLD_STYLE_DT = """<dt>
  <a name='item2'>[2]</a>
  <a href ="/abs/hep-th/9901001" title="Abstract" id="hep-th/9901001">arXiv:hep-th/9901001</a>
  (cross-list from hep-th)
</dt>
<dd>
  <div class='meta'>
    <div class='list-title mathjax'><span class='descriptor'>Title:</span>
      An Entry With an Old-Style Identifier
    </div>
    <div class='list-authors'><a href="https://arxiv.org/a/tester_a_1">A. Tester</a></div>
    <div class='list-subjects'><span class='descriptor'>Subjects:</span>
      <span class="primary-subject">High Energy Physics - Theory (hep-th)</span>;
      Mathematical Physics (math-ph); Machine Learning (stat.ML)
    </div>
  </div>
</dd>"""


def recent_page(skip: int, *sections: tuple[str, str], total: int = 312, show: int = 50) -> str:
    """A /list/CAT/recent page in arxiv-browse's markup (list_macros.html): paging links, the
    more/fewer links (which keep the current skip) and one <dl id='articles'> per day."""
    pages = " ".join(
        f"<span>{s + 1}-{min(s + show, total)}</span>"
        if s == skip
        else f'<a href=/list/cs.CL/recent?skip={s}&amp;show={show} rel="nofollow">'
        f"{s + 1}-{min(s + show, total)}</a>"
        for s in range(0, total, show)
    )
    divs = (
        f"<div class='paging'>Total of {total} entries : {pages}</div>"
        "<div class='morefewer'>Showing up to 50 entries per page: "
        f"<a href=/list/cs.CL/recent?skip={skip}&amp;show=25 rel='nofollow'>fewer</a> | "
        f"<a href=/list/cs.CL/recent?skip={skip}&amp;show=100 rel='nofollow'>more</a></div>"
    )
    days = "".join(f"<dl id='articles'><h3>{day}</h3>{items}</dl>" for day, items in sections)
    return _page(
        "Computation and Language",
        f"<div id='content-inner'><div id='dlpage'><h1>Computation and Language</h1>"
        f"{divs}{days}{divs}</div></div>",
    )


FRIDAY = "Fri, 22 Nov 2024 (showing first 50 of 312 entries )"


def test_listing_in_arxiv_markup():
    html = recent_page(50, (FRIDAY, MARCO_DT + OLD_STYLE_DT))
    page = arxiv_pages.parse_listing(html, LIST_URL + "?skip=50&show=50")
    marco, old = page.entries
    assert marco == arxiv_pages.ListingEntry(
        arxiv_id="2411.14405",
        title="Marco-o1: Towards Open Reasoning Models for Open-Ended Solutions",
        authors=("Yu Zhao", "Huifeng Yin", "Bo Zeng"),
        categories=("cs.CL", "cs.AI"),
        date_hint=date(2024, 11, 22),
    )
    assert old == arxiv_pages.ListingEntry(
        arxiv_id="hep-th/9901001",
        title="An Entry With an Old-Style Identifier",
        authors=("A. Tester",),
        categories=("hep-th", "math-ph", "stat.ML"),
        date_hint=date(2024, 11, 22),
    )
    # skip=0 is behind us, and more/fewer keep skip=50: the next page is the smallest later one.
    assert page.next_url == "https://arxiv.org/list/cs.CL/recent?skip=100&show=50"


@pytest.mark.parametrize(
    ("url", "skip", "next_url"),
    [
        (LIST_URL, 0, LIST_URL + "?skip=50&show=50"),  # no skip in the URL: the first page
        (LIST_URL + "?skip=0&show=50", 0, LIST_URL + "?skip=50&show=50"),
        (LIST_URL + "?skip=250&show=50", 250, LIST_URL + "?skip=300&show=50"),
        (LIST_URL + "?skip=300&show=50", 300, None),  # the last page
    ],
)
def test_listing_next_page(url: str, skip: int, next_url: str | None):
    assert (
        arxiv_pages.parse_listing(recent_page(skip, (FRIDAY, MARCO_DT)), url).next_url == next_url
    )


def test_listing_reads_every_day_section():
    html = recent_page(
        0, (FRIDAY, MARCO_DT), ("Thu, 21 Nov 2024 (showing 1 of 312 entries )", OLD_STYLE_DT)
    )
    page = arxiv_pages.parse_listing(html, LIST_URL + "?skip=0&show=50")
    assert [(e.arxiv_id, e.date_hint) for e in page.entries] == [
        ("2411.14405", date(2024, 11, 22)),
        ("hep-th/9901001", date(2024, 11, 21)),
    ]


def test_listing_generated_entry_matches_the_paper():
    page = arxiv_pages.parse_listing(
        _page("cs.CL", f"<dl id='articles'>{_listing_entry(1, LORA)}</dl>"), LIST_URL
    )
    (entry,) = page.entries
    assert entry.arxiv_id == "2106.09685"
    assert entry.title == LORA.title
    assert entry.authors == LORA.authors and len(entry.authors) == 8
    assert entry.categories == ("cs.CL", "cs.AI", "cs.LG")
    assert entry.date_hint is None, "no day heading above it"
    assert page.next_url is None


def test_listing_pages_walk_every_paper_newest_first(site: ArxivSite):
    """Following next_url page by page lists each cs.CL paper once, under its day heading."""
    url: str | None = LIST_URL + "?skip=0&show=4"
    seen: list[arxiv_pages.ListingEntry] = []
    while url is not None:
        page = arxiv_pages.parse_listing(
            site.listing("cs.CL", "recent", int(query_of(url)["skip"]), 4), url
        )
        seen += page.entries
        url = page.next_url
        assert len(seen) <= 12, "paging never ends"
    expected = [p for p in site.newest_first() if "cs.CL" in p.categories]
    assert [e.arxiv_id for e in seen] == [p.arxiv_id for p in expected]
    assert [e.date_hint for e in seen] == [p.published for p in expected]
    assert [e.title for e in seen] == [p.title for p in expected]


# --- parse_search ----------------------------------------------------------------------------

SEARCH_URL = ARXIV + "/search/?query=open+reasoning&searchtype=all&size=50"
SEARCH_PAGINATION = """<nav class="pagination is-small is-centered breathe-horizontal">
  <a href="" class="pagination-previous is-invisible">Previous</a>
  <a href="/search/?query=open+reasoning&amp;searchtype=all&amp;size=50&amp;start=50"
     class="pagination-next">Next</a>
  <ul class="pagination-list">
    <li><a href="/search/?query=open+reasoning&amp;searchtype=all&amp;size=50&amp;start=0"
           class="pagination-link is-current">1</a></li>
    <li><a href="/search/?query=open+reasoning&amp;searchtype=all&amp;size=50&amp;start=50"
           class="pagination-link">2</a></li>
  </ul>
</nav>"""
# What search-macros.html writes on the last page: the Next link stays, with an empty href.
SEARCH_LAST_PAGINATION = """<nav class="pagination is-small is-centered breathe-horizontal">
  <a href="/search/?query=open+reasoning&amp;searchtype=all&amp;size=50&amp;start=0"
     class="pagination-previous">Previous</a>
  <a href=""
     class="pagination-next is-invisible">Next</a>
  <ul class="pagination-list">
    <li><a href="/search/?query=open+reasoning&amp;searchtype=all&amp;size=50&amp;start=0"
           class="pagination-link">1</a></li>
    <li><a href="/search/?query=open+reasoning&amp;searchtype=all&amp;size=50&amp;start=50"
           class="pagination-link is-current">2</a></li>
  </ul>
</nav>"""
SEARCH_TAGS = """<div class="tags is-inline-block">
  <span class="tag is-small is-link tooltip is-tooltip-top"
        data-tooltip="Computation and Language">cs.CL</span>
  <span class="tag is-small is-grey tooltip is-tooltip-top"
        data-tooltip="Artificial Intelligence">cs.AI</span>
</div>"""
SEARCH_DOI = """<div class="is-inline-block" style="margin-left: 0.5rem">
  <div class="tags has-addons">
    <span class="tag is-dark is-size-7">doi</span>
    <span class="tag is-light is-size-7"><a class="" href="https://doi.org/10.1000/xyz123">
      10.1000/xyz123 <i class="fa fa-external-link" aria-hidden="true"></i></a></span>
  </div>
</div>"""


def search_page(pagination: str = SEARCH_PAGINATION, doi: str = "") -> str:
    """One result in arxiv-search's markup (search-macros.html), with its pagination nav."""
    return f"""<!DOCTYPE html><html><head><title>Search | arXiv e-print repository</title></head>
<body><main><div class="content">{pagination}
<ol class="breathe-horizontal" start="1">
<li class="arxiv-result">
  <div class="is-marginless">
    <p class="list-title is-inline-block">
      <a href="https://arxiv.org/abs/2411.14405">arXiv:2411.14405</a>
      <span>&nbsp;[<a href="https://arxiv.org/pdf/2411.14405">pdf</a>]&nbsp;</span>
    </p>
    {SEARCH_TAGS}{doi}
  </div>
  <p class="title is-5 mathjax">
    Marco-o1: Towards Open Reasoning Models for Open-Ended Solutions
  </p>
  <p class="authors">
    <span class="has-text-black-bis has-text-weight-semibold">Authors:</span>
    <a href="/search/?searchtype=author&amp;query=Zhao%2C+Y">Yu Zhao</a>,
    <a href="/search/?searchtype=author&amp;query=Yin%2C+H">Huifeng Yin</a>
  </p>
  <p class="abstract mathjax">
    <span class="has-text-black-bis has-text-weight-semibold">Abstract</span>:
    <span class="abstract-short has-text-grey-dark mathjax" style="display: inline;">
      Currently OpenAI o1 sparks&hellip;
      <a class="is-size-7" style="white-space: nowrap;">&#9661; More</a>
    </span>
    <span class="abstract-full has-text-grey-dark mathjax" style="display: none;">
      Currently OpenAI o1 sparks a surge of interest in the study of large reasoning models.
      <a class="is-size-7" style="white-space: nowrap;">&#9651; Less</a>
    </span>
  </p>
  <p class="is-size-7"><span class="has-text-black-bis has-text-weight-semibold">Submitted</span>
    25 November, 2024; <span class="has-text-black-bis has-text-weight-semibold">v1</span>
    submitted 21 November, 2024;
    <span class="has-text-black-bis has-text-weight-semibold">originally announced</span>
    November 2024.
  </p>
</li>
</ol></div></main></body></html>"""


def test_search_result_in_arxiv_markup():
    page = arxiv_pages.parse_search(search_page(), SEARCH_URL)
    assert page.entries == [
        arxiv_pages.ListingEntry(
            arxiv_id="2411.14405",
            title="Marco-o1: Towards Open Reasoning Models for Open-Ended Solutions",
            authors=("Yu Zhao", "Huifeng Yin"),
            categories=("cs.CL", "cs.AI"),
            abstract="Currently OpenAI o1 sparks a surge of interest in the study of large "
            "reasoning models.",
            # The latest submission: never before the first, which is all a hint promises.
            date_hint=date(2024, 11, 25),
        )
    ]
    assert page.next_url == (
        "https://arxiv.org/search/?query=open+reasoning&searchtype=all&size=50&start=50"
    )


def test_search_with_one_page_has_no_next():
    assert arxiv_pages.parse_search(search_page(pagination=""), SEARCH_URL).next_url is None


def test_search_last_page_has_no_next():
    page = arxiv_pages.parse_search(search_page(SEARCH_LAST_PAGINATION), SEARCH_URL + "&start=50")
    assert page.next_url is None


def test_search_doi_badge_is_not_a_category():
    (entry,) = arxiv_pages.parse_search(search_page(doi=SEARCH_DOI), SEARCH_URL).entries
    assert entry.categories == ("cs.CL", "cs.AI")


def test_search_generated_pages(site: ArxivSite):
    url = ARXIV + "/search/?query=language+models&searchtype=all&size=2"
    first = arxiv_pages.parse_search(site.search("language models", 0, 2, newest=True), url)
    expected = site.newest_first(
        [p for p in site.papers if "language models" in f"{p.title} {p.abstract}".lower()]
    )
    assert [e.arxiv_id for e in first.entries] == [p.arxiv_id for p in expected[:2]]
    assert [e.date_hint for e in first.entries] == [p.published for p in expected[:2]]
    moe = first.entries[0]
    assert moe.title == "A Survey on Mixture of Experts in Large Language Models"
    assert moe.categories == ("cs.LG", "cs.CL")
    assert moe.abstract.startswith("Large language models (LLMs) have garnered")
    assert "Less" not in moe.abstract
    assert first.next_url is not None and first.next_url.startswith(ARXIV + "/search/?")
    assert query_of(first.next_url)["start"] == "2"
    last_start = (len(expected) - 1) // 2 * 2
    last = arxiv_pages.parse_search(site.search("language models", last_start, 2, newest=True), url)
    assert last.entries and last.next_url is None


def test_search_generated_item_matches_the_paper():
    (entry,) = arxiv_pages.parse_search(
        _page("Search", f"<ol>{_search_item(LORA)}</ol>"), SEARCH_URL
    ).entries
    assert entry == arxiv_pages.ListingEntry(
        arxiv_id="2106.09685",
        title="LoRA: Low-Rank Adaptation of Large Language Models",
        authors=LORA.authors,
        categories=("cs.CL", "cs.AI", "cs.LG"),
        abstract=LORA.abstract,
        date_hint=date(2021, 6, 17),  # "Submitted 17 June, 2021;"
    )


def test_search_skips_items_without_an_abstract_link():
    html = _page("Search", '<ol><li class="arxiv-result"><p class="title">No link</p></li></ol>')
    assert arxiv_pages.parse_search(html, SEARCH_URL).entries == []


# --- parse_abstract --------------------------------------------------------------------------

LORA_ABS = """<!DOCTYPE html><html lang="en"><head>
<title>[2106.09685] LoRA: Low-Rank Adaptation of Large Language Models</title>
<meta name="citation_title" content="LoRA: Low-Rank Adaptation of Large Language Models" />
<meta name="citation_author" content="Hu, Edward J." />
<meta name="citation_author" content="Shen, Yelong" />
<meta name="citation_date" content="2021/06/17" />
<meta name="citation_online_date" content="2021/10/16" />
<meta name="citation_pdf_url" content="http://arxiv.org/pdf/2106.09685" />
<meta name="citation_arxiv_id" content="2106.09685" />
</head><body><div id="abs">
<div class="dateline">[Submitted on 17 Jun 2021 (<a href="https://arxiv.org/abs/2106.09685v1">v1</a>),
  last revised 16 Oct 2021 (this version, v2)]</div>
<h1 class="title mathjax"><span class="descriptor">Title:</span>LoRA: Low-Rank Adaptation of
  Large Language Models</h1>
<div class="authors"><span class="descriptor">Authors:</span>
  <a href="https://arxiv.org/search/cs?searchtype=author&amp;query=Hu,+E+J">Edward J. Hu</a>,
  <a href="https://arxiv.org/search/cs?searchtype=author&amp;query=Shen,+Y">Yelong Shen</a></div>
<blockquote class="abstract mathjax"><span class="descriptor">Abstract:</span>An important
  paradigm of natural language processing consists of large-scale pre-training on general
  domain data and adaptation to particular tasks or domains.</blockquote>
<div class="metatable"><table summary="Additional metadata"><tr>
  <td class="tablecell label">Subjects:</td>
  <td class="tablecell subjects"><span class="primary-subject">Computation and Language
    (cs.CL)</span>; Artificial Intelligence (cs.AI); Machine Learning (cs.LG)</td>
</tr></table></div>
</div>
<div class="submission-history"><h2>Submission history</h2> From: Edward J. Hu
  [<a href="/show-email/0/2106.09685">view email</a>]<br/>
  <strong><a href="/abs/2106.09685v1">[v1]</a></strong>
  Thu, 17 Jun 2021 12:00:00 UTC (1,000 KB)<br/>
  <strong>[v2]</strong> Sat, 16 Oct 2021 12:00:00 UTC (1,000 KB)<br/>
</div>
<div class="abs-license"><a href="http://arxiv.org/licenses/nonexclusive-distrib/1.0/"
  title="Rights to this article">view license</a></div>
</body></html>"""


def test_abstract_in_arxiv_markup():
    paper = arxiv_pages.parse_abstract(LORA_ABS, ARXIV + "/abs/2106.09685")
    assert paper == arxiv_pages.ArxivPaper(
        arxiv_id="2106.09685",
        version=2,
        title="LoRA: Low-Rank Adaptation of Large Language Models",
        authors=("Edward J. Hu", "Yelong Shen"),
        abstract="An important paradigm of natural language processing consists of large-scale "
        "pre-training on general domain data and adaptation to particular tasks or domains.",
        categories=("cs.CL", "cs.AI", "cs.LG"),
        published=date(2021, 6, 17),  # v1, not the revision of 16 Oct
        license=LICENSE,
        pdf_url="https://arxiv.org/pdf/2106.09685v2",
    )
    assert paper.versioned_id == "2106.09685v2"


@pytest.mark.parametrize("paper", REAL_PAPERS + BAD_PAPERS, ids=lambda p: p.vid)
def test_abstract_generated_pages(site: ArxivSite, paper: Paper):
    parsed = arxiv_pages.parse_abstract(
        site.abstract(paper), f"http://127.0.0.1:8123/abs/{paper.arxiv_id}"
    )
    assert (parsed.arxiv_id, parsed.version) == (paper.arxiv_id, paper.version)
    assert parsed.title == paper.title
    assert parsed.authors == paper.authors
    assert parsed.abstract == paper.abstract
    assert parsed.categories == paper.categories
    assert parsed.published == paper.published
    assert parsed.license == paper.license
    assert parsed.pdf_url == f"http://127.0.0.1:8123/pdf/{paper.vid}"


def test_abstract_of_a_single_version_paper():
    """A v1-only page has no "this version" in its dateline; the history says v1."""
    html = _page(
        "Marco-o1",
        '<div class="dateline">[Submitted on 21 Nov 2024]</div>'
        '<h1 class="title mathjax"><span class="descriptor">Title:</span>Marco-o1</h1>'
        '<div class="submission-history"><strong>[v1]</strong> Thu, 21 Nov 2024</div>'
        f'<div class="abs-license"><a href="{CC_BY}">view license</a></div>',
        '<meta name="citation_arxiv_id" content="2411.14405"/>',
    )
    paper = arxiv_pages.parse_abstract(html, ARXIV + "/abs/2411.14405")
    assert (paper.versioned_id, paper.title) == ("2411.14405v1", "Marco-o1")
    assert paper.published == date(2024, 11, 21)
    assert paper.license == CC_BY
    assert paper.pdf_url == "https://arxiv.org/pdf/2411.14405v1"


def test_abstract_old_style_id_from_the_url():
    """No citation_arxiv_id, no history: the id and version come from the URL, the day from
    citation_date, the authors from citation_author."""
    html = _page(
        "hep-th/9901001",
        "",
        '<meta name="citation_title" content="An   Old-Style\n Paper"/>'
        '<meta name="citation_author" content="Tester, A."/>'
        '<meta name="citation_date" content="1999/01/04"/>',
    )
    paper = arxiv_pages.parse_abstract(html, ARXIV + "/abs/hep-th/9901001v3")
    assert (paper.arxiv_id, paper.version) == ("hep-th/9901001", 3)
    assert paper.title == "An Old-Style Paper"
    assert paper.authors == ("Tester, A.",)
    assert paper.published == date(1999, 1, 4)
    assert paper.license is None
    assert paper.pdf_url == "https://arxiv.org/pdf/hep-th/9901001v3"


@pytest.mark.parametrize(
    ("html", "url", "reason"),
    [
        (_page("Not found", "<h1>Not found</h1>"), ARXIV + "/abs/", "not_an_abstract_page"),
        (
            _page("No date", "<h1>Hi</h1>", '<meta name="citation_arxiv_id" content="2106.09685">'),
            ARXIV + "/abs/2106.09685",
            "no_date",
        ),
    ],
    ids=["no-id", "no-date"],
)
def test_abstract_page_that_says_too_little(html: str, url: str, reason: str):
    with pytest.raises(BadInput) as caught:
        arxiv_pages.parse_abstract(html, url)
    assert caught.value.reason == reason
    assert url in str(caught.value)


# --- matches_keywords ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (None, True),
        ("", True),
        ("lora", True),  # "LoRA:" matches at a word start, case-insensitive
        ("LOW-RANK language", True),
        ("adaptation LoRA", True),  # order does not matter
        ("ora", False),  # inside a word, not at its start
        ("lora diffusion", False),  # every word must appear
        ("adapt", True),  # a prefix of a word
    ],
)
def test_matches_keywords(query: str | None, expected: bool):
    assert arxiv_pages.matches_keywords(query, LORA.title, LORA.abstract) is expected


def test_matches_keywords_searches_all_texts():
    assert arxiv_pages.matches_keywords("lora pre-training", LORA.title, LORA.abstract)
    assert not arxiv_pages.matches_keywords("pre-training", LORA.title)


# --- canonical_url and is_asset --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTPS://Example.COM/Path", "https://example.com/Path"),  # the path keeps its case
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a#section-2", "https://example.com/a"),
        (
            "https://example.com/a?utm_source=x&id=7&utm_medium=y&fbclid=z&gclid=g&page=2",
            "https://example.com/a?id=7&page=2",
        ),
        ("https://example.com/a/./b/../c/", "https://example.com/a/c/"),
        ("https://example.com/../../a", "https://example.com/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("https://user:secret@example.com/a", "https://example.com/a"),
    ],
)
def test_canonical_url(url: str, canonical: str):
    assert core.canonical_url(url) == canonical


@pytest.mark.parametrize(
    ("link", "joined"),
    [
        ("b.html", "https://example.com/docs/b.html"),
        ("../up.html", "https://example.com/up.html"),
        ("./same/", "https://example.com/docs/same/"),
        ("/root", "https://example.com/root"),
        ("//cdn.example.org/x", "https://cdn.example.org/x"),
        ("?page=2&utm_campaign=c", "https://example.com/docs/a.html?page=2"),
        ("#top", "https://example.com/docs/a.html"),
        ("HTTP://Other.org", "http://other.org/"),
    ],
)
def test_canonical_url_joins_relative_links(link: str, joined: str):
    assert core.canonical_url(link, "https://example.com/docs/a.html") == joined


@pytest.mark.parametrize(
    "url",
    [
        "mailto:someone@example.com",
        "javascript:void(0)",
        "ftp://example.com/file.txt",
        "file:///etc/passwd",
        "data:text/html,hi",
        "https://example.com:99999/",
        "https://example.com:http/",
        "http://:80/no-host",
    ],
)
def test_canonical_url_refuses_non_http_and_malformed(url: str):
    assert core.canonical_url(url, "https://example.com/") is None


@pytest.mark.parametrize("path", ["/a/b/..", "/a/."])
def test_canonical_url_trailing_dot_segment_keeps_the_slash(path: str):
    assert core.canonical_url("https://example.com" + path) == "https://example.com/a/"


@pytest.mark.parametrize(
    ("url", "asset"),
    [
        ("https://example.com/static/site.css", True),
        ("https://example.com/img/Logo.PNG", True),
        ("https://example.com/app.js?v=3", True),
        ("https://example.com/fonts/inter.woff2", True),
        ("https://example.com/dist/bundle.tar.gz", True),
        ("https://example.com/guide.html", False),
        ("https://example.com/paper.pdf", False),
        ("https://example.com/docs/intro", False),
        ("https://example.com/", False),
        ("https://example.com/v1.2/", False),
    ],
)
def test_is_asset(url: str, asset: bool):
    assert core.is_asset(url) is asset


# --- registered_domain -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("www.example.co.uk", "example.co.uk"),
        ("a.b.pattersonconsultingtn.com", "pattersonconsultingtn.com"),
        ("Blog.Example.COM", "example.com"),
        ("export.arxiv.org", "arxiv.org"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
    ],
)
def test_registered_domain(host: str, domain: str):
    assert core.registered_domain(host) == domain


# --- Policy ----------------------------------------------------------------------------------

POLICY = core.Policy.for_urls(["https://www.example.com/x"])


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://blog.example.com/", "blog.example.com"),
        ("http://EXAMPLE.com/a", "example.com"),
        ("https://www.example.com:8443/x", "www.example.com"),
    ],
)
def test_policy_allows_hosts_under_the_source_domain(url: str, host: str):
    assert POLICY.domains == frozenset({"example.com"})
    assert POLICY.check_url(url) == host


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://evil.com/", "host_not_allowed"),
        ("https://example.com.evil.com/", "host_not_allowed"),
        ("https://notexample.com/", "host_not_allowed"),
        ("https:///path-only", "host_not_allowed"),
        ("ftp://www.example.com/file", "blocked_scheme"),
        ("file:///etc/passwd", "blocked_scheme"),
        ("gopher://www.example.com/", "blocked_scheme"),
    ],
)
def test_policy_refuses_other_hosts_and_schemes(url: str, reason: str):
    with pytest.raises(BadInput) as caught:
        POLICY.check_url(url)
    assert caught.value.reason == reason
    assert url in str(caught.value)


def test_policy_for_several_urls_and_bare_hosts():
    policy = core.Policy.for_urls(["https://arxiv.org/list/cs.CL/recent", "export.arxiv.org"])
    assert policy.domains == frozenset({"arxiv.org"})
    assert policy.check_url("https://export.arxiv.org/abs/2106.09685") == "export.arxiv.org"


def test_policy_does_not_span_a_shared_hosting_suffix():
    policy = core.Policy.for_urls(["https://alice.github.io/blog/"])
    with pytest.raises(BadInput):
        policy.check_url("https://mallory.github.io/")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",  # noqa: S104 - an address to refuse, not one to bind
        "224.0.0.1",
        "::1",
        "fc00::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 spelling of 127.0.0.1
        "2002:7f00:1::1",  # 6to4 spelling of 127.0.0.1
    ],
)
def test_policy_refuses_private_addresses(address: str):
    with pytest.raises(BadInput) as caught:
        POLICY.check_addresses("https://www.example.com/", ["93.184.216.34", address])
    assert caught.value.reason == "private_address"
    assert address in str(caught.value)


def test_policy_accepts_public_addresses():
    public = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert POLICY.check_addresses("https://www.example.com/", public) is None


def test_policy_allow_private_refuses_nothing():
    policy = core.Policy.for_urls(["http://127.0.0.1:8000/"], allow_private=True)
    assert policy.domains == frozenset({"127.0.0.1"})
    assert policy.check_url("http://127.0.0.1:8000/abs/1") == "127.0.0.1"
    private = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"]
    assert policy.check_addresses("http://127.0.0.1:8000/", private) is None


# --- sniff and expect_pdf --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", core.PDF),
        (b"\x00" * 500 + b"junk %PDF-1.4\n", core.PDF),  # anywhere in the first 1024 bytes
        (b"\x00" * 1024 + b"%PDF-1.4\n", None),  # but no further
        (b"<!DOCTYPE html><html><head>", core.HTML),
        (b"<!doctype HTML>", core.HTML),
        (b"\xef\xbb\xbf \r\n\t<html lang='en'>", core.HTML),
        (b"<!-- served by nginx --><html><body>", core.HTML),
        (b"<?xml version='1.0'?>\n<html xmlns='http://www.w3.org/1999/xhtml'>", core.HTML),
        (b"<body>Service unavailable</body>", core.HTML),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None),
        (bytes(range(256)), None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, kind: str | None):
    assert core.sniff(head) == kind


def test_expect_pdf_accepts_a_pdf():
    assert core.expect_pdf("https://arxiv.org/pdf/2106.09685v2", b"%PDF-1.5\n%\xd0\xd4") is None


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (_page("Error", "<h1>Service temporarily unavailable</h1>").encode(), "an HTML page"),
        (b"\x89PNG\r\n\x1a\n", "not a PDF"),
    ],
)
def test_expect_pdf_refuses_anything_else(head: bytes, said: str):
    url = "https://arxiv.org/pdf/2405.00001v1"
    with pytest.raises(BadInput) as caught:
        core.expect_pdf(url, head)
    assert caught.value.reason == "not_a_pdf"
    assert str(caught.value) == f"{url}: expected a PDF, got {said} (no %PDF- header)"


# --- page_links ------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html><head>
<title>
  Getting Started
</title>
<link rel="canonical" href="/docs/start?utm_source=feed">
<link rel="stylesheet" href="/static/site.css">
</head><body>
<a href="#install">Install</a>
<a href="#usage">Usage</a>
<a href="next.html">Next</a>
<a href="../blog/">Blog</a>
<a href="./next.html#top">Next again</a>
<a href="https://Other.example.org/ref?fbclid=1">Elsewhere</a>
<a href="/img/diagram.png">Diagram</a>
<a href="/static/app.js">Script</a>
<a href="/login" rel="nofollow">Log in</a>
<a href="/signup" rel="noopener nofollow">Sign up</a>
<a href="mailto:docs@example.com">Mail</a>
<a href="javascript:void(0)">Menu</a>
<a>No href</a>
</body></html>"""


def test_page_links():
    found = core.page_links(PAGE, "https://example.com/docs/start")
    assert found.title == "Getting Started"
    assert found.canonical == "https://example.com/docs/start"
    assert found.links == [
        "https://example.com/docs/start",  # the two #fragments, once
        "https://example.com/docs/next.html",
        "https://example.com/blog/",
        "https://other.example.org/ref",
    ]


def test_page_links_resolve_against_base_href():
    html = b"""<html><head><base href="/v2/guide/"><title>Guide</title></head><body>
    <a href="intro.html">Intro</a><a href="../api/">API</a><a href="/abs">Root</a></body></html>"""
    found = core.page_links(html, "https://docs.example.com/anything/page")
    assert found.links == [
        "https://docs.example.com/v2/guide/intro.html",
        "https://docs.example.com/v2/api/",
        "https://docs.example.com/abs",
    ]
    assert found.canonical is None


def test_page_links_of_a_page_without_title_or_links():
    assert core.page_links("<p>plain</p>", "https://example.com/") == core.PageLinks(
        title=None, canonical=None, links=[]
    )


# --- needs_javascript ------------------------------------------------------------------------

# About 320 characters of text: past the 200 that mark an empty shell.
ARTICLE = "Low-rank adaptation freezes the pre-trained weights and trains small matrices. " * 4


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            '<html><body><div id="root"></div><script src=app.js></script></body></html>',
            True,
        ),
        (
            "<html><body><noscript>You need to enable JavaScript to run this app.</noscript>"
            '<div id="app"></div><script>window.boot()</script></body></html>',
            True,
        ),
        (
            f"<html><head><script src=analytics.js></script></head><body><article>{ARTICLE}"
            "</article><script>highlight()</script></body></html>",
            False,
        ),
        ("<html><body><p>Short, but served whole.</p></body></html>", False),
    ],
    ids=["empty-root", "noscript-only", "content-with-scripts", "no-script"],
)
def test_needs_javascript(html: str, expected: bool):
    assert core.needs_javascript(html) is expected


# --- retry_after_seconds ---------------------------------------------------------------------

NOW = datetime(2024, 11, 21, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Thu, 21 Nov 2024 12:00:30 GMT", 30.0),
        ("Thursday, 21-Nov-24 12:01:00 GMT", 60.0),  # RFC 850, obsolete but allowed
        ("Wed, 20 Nov 2024 12:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None):
    assert core.retry_after_seconds(value, NOW) == seconds


def test_retry_after_seconds_asctime_date():
    assert core.retry_after_seconds("Thu Nov 21 12:00:30 2024", NOW) == 30.0


# --- robots_rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("agent", ["*", "distillery", "Googlebot"])
def test_robots_disallow_applies_to_every_agent(agent: str):
    rules = core.robots_rules("User-agent: *\nDisallow: /pdf/\n")
    assert not rules.can_fetch(agent, "https://arxiv.org/pdf/2106.09685v2")
    assert rules.can_fetch(agent, "https://arxiv.org/abs/2106.09685")


def test_robots_rules_of_the_look_alike():
    rules = core.robots_rules(ROBOTS)  # "Disallow: /pdf/2405.00003" for every agent
    assert not rules.can_fetch("distillery", "http://127.0.0.1:1/pdf/2405.00003v1")
    assert rules.can_fetch("distillery", "http://127.0.0.1:1/pdf/2106.09685v2")


@pytest.mark.parametrize("robots_txt", [None, ""])
def test_no_robots_txt_allows_everything(robots_txt: str | None):
    rules = core.robots_rules(robots_txt)
    assert rules.can_fetch("distillery", "https://example.com/pdf/anything")
    assert rules.can_fetch("*", "https://example.com/")


def test_abstract_with_a_link_reads_as_prose():
    html = (
        '<html><head><meta name="citation_arxiv_id" content="2106.09685"/></head><body>'
        '<div class="dateline">[Submitted on 17 Jun 2021 (v1)]</div>'
        '<blockquote class="abstract mathjax"><span class="descriptor">Abstract:</span> We '
        'release a package at <a href="https://github.com/microsoft/LoRA">this https URL</a>.'
        "</blockquote></body></html>"
    )
    paper = arxiv_pages.parse_abstract(html, ARXIV + "/abs/2106.09685")
    assert paper.abstract == "We release a package at this https URL."


ERROR_PAGE = "<html><head><title>503</title></head><body><h1>Rate limited</h1></body></html>"


def test_an_error_page_is_not_taken_for_an_empty_last_listing():
    assert not arxiv_pages.parse_listing(ERROR_PAGE, ARXIV + "/list/cs.CL/recent").recognised
    assert not arxiv_pages.parse_search(ERROR_PAGE, SEARCH_URL).recognised


def test_a_search_with_no_results_is_recognised_as_such():
    page = arxiv_pages.parse_search(
        "<html><body><main><p class='is-size-4 has-text-warning'>Sorry, your query for all: "
        "xyzzy produced no results.</p></main></body></html>",
        SEARCH_URL,
    )
    assert page.recognised and page.entries == [] and page.next_url is None


def test_generated_listing_and_search_pages_are_recognised(site: ArxivSite):
    assert arxiv_pages.parse_listing(
        site.listing("cs.CL", "recent", 0, 4), ARXIV + "/list/"
    ).recognised
    assert arxiv_pages.parse_search(site.search("zzzz", 0, 4, newest=False), SEARCH_URL).recognised
