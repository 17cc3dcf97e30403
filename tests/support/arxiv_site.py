"""A local arXiv look-alike for scraper tests and benchmarks, on 127.0.0.1.

It serves what the scraper reads of arXiv, in arXiv's own markup: listing pages
(/list/CAT/recent?skip=&show=, day headings, paging links), search results (/search/?query=,
"Next" link), abstract pages (/abs/ID with citation meta tags, dateline, submission history,
licence link) and PDFs (/pdf/IDvN, the real papers of $DISTILLERY_TEST_DATA/data/pdfs). It
records every request, can add latency to every response, and serves a few bad papers on
purpose (an HTML error page as a PDF, an oversized PDF, a PDF robots.txt disallows).
"""

from __future__ import annotations

import html
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.static_site import Server

LICENSE = "http://arxiv.org/licenses/nonexclusive-distrib/1.0/"
CC_BY = "http://creativecommons.org/licenses/by/4.0/"


@dataclass(frozen=True)
class Paper:
    arxiv_id: str
    version: int
    title: str
    authors: tuple[str, ...]
    abstract: str
    categories: tuple[str, ...]  # primary first
    published: date  # v1
    license: str = LICENSE
    file: str | None = None  # under data/pdfs
    #: "html" serves an error page at the PDF URL; "huge" streams `huge_bytes` of PDF.
    trouble: str | None = None

    @property
    def vid(self) -> str:
        return f"{self.arxiv_id}v{self.version}"


def _p(ident: str, title: str, authors: str, first: str, cats: str, day: str, **kw) -> Paper:
    arxiv_id, _, version = ident.partition("v")
    return Paper(
        arxiv_id,
        int(version),
        title,
        tuple(a.strip() for a in authors.split(",")),
        first,
        tuple(cats.split()),
        date.fromisoformat(day),
        **kw,
    )


#: The real papers of data/pdfs with their arXiv metadata (first sentence of each abstract).
REAL_PAPERS = [
    _p(
        "2407.06204v2",
        "A Survey on Mixture of Experts in Large Language Models",
        "Weilin Cai, Juyong Jiang, Fan Wang, Jing Tang, Sunghun Kim, Jiayi Huang",
        "Large language models (LLMs) have garnered unprecedented advancements across diverse "
        "fields, ranging from natural language processing to computer vision and beyond.",
        "cs.LG cs.CL",
        "2024-06-26",
        license=CC_BY,
        file="2407.06204v2_moe_survey.pdf",
    ),
    _p(
        "2310.03025v1",
        "Retrieval meets Long Context Large Language Models",
        "Peng Xu, Wei Ping, Xianchao Wu, Lawrence McAfee, Chen Zhu, Zihan Liu, Bryan Catanzaro",
        "Extending the context window of large language models (LLMs) is getting popular "
        "recently, while the solution of augmenting LLMs with retrieval has existed for years.",
        "cs.CL cs.AI cs.IR cs.LG",
        "2023-10-04",
        file="2310.03025v1_retrieval_meets_long_context.pdf",
    ),
    _p(
        "2308.08155v2",
        "AutoGen: Enabling Next-Gen LLM Applications via Multi-Agent Conversation",
        "Qingyun Wu, Gagan Bansal, Jieyu Zhang, Yiran Wu, Beibin Li, Erkang Zhu, Li Jiang, "
        "Chi Wang",
        "AutoGen is an open-source framework that allows developers to build LLM applications "
        "via multiple agents that can converse with each other to accomplish tasks.",
        "cs.AI cs.CL",
        "2023-08-16",
        license=CC_BY,
        file="2308.08155v2_autogen.pdf",
    ),
    _p(
        "2305.15717v1",
        "The False Promise of Imitating Proprietary LLMs",
        "Arnav Gudibande, Eric Wallace, Charlie Snell, Xinyang Geng, Hao Liu, Pieter Abbeel, "
        "Sergey Levine, Dawn Song",
        "An emerging method to cheaply improve a weaker language model is to finetune it on "
        "outputs from a stronger model, such as a proprietary system like ChatGPT.",
        "cs.CL",
        "2023-05-25",
        license=CC_BY,
        file="2305.15717v1_false_promise_imitating_llms.pdf",
    ),
    _p(
        "2305.14314v1",
        "QLoRA: Efficient Finetuning of Quantized LLMs",
        "Tim Dettmers, Artidoro Pagnoni, Ari Holtzman, Luke Zettlemoyer",
        "We present QLoRA, an efficient finetuning approach that reduces memory usage enough "
        "to finetune a 65B parameter model on a single 48GB GPU while preserving full 16-bit "
        "finetuning task performance.",
        "cs.LG",
        "2023-05-23",
        file="2305.14314v1_qlora.pdf",
    ),
    _p(
        "2302.13971v1",
        "LLaMA: Open and Efficient Foundation Language Models",
        "Hugo Touvron, Thibaut Lavril, Gautier Izacard, Xavier Martinet, Marie-Anne Lachaux",
        "We introduce LLaMA, a collection of foundation language models ranging from 7B to "
        "65B parameters.",
        "cs.CL",
        "2023-02-27",
        file="2302.13971v1_llama.pdf",
    ),
    _p(
        "2205.14135v2",
        "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
        "Tri Dao, Daniel Y. Fu, Stefano Ermon, Atri Rudra, Christopher Ré",
        "Transformers are slow and memory-hungry on long sequences, since the time and memory "
        "complexity of self-attention are quadratic in sequence length.",
        "cs.LG",
        "2022-05-27",
        file="2205.14135v2_flashattention.pdf",
    ),
    _p(
        "2203.02155v1",
        "Training language models to follow instructions with human feedback",
        "Long Ouyang, Jeff Wu, Xu Jiang, Diogo Almeida, Carroll L. Wainwright, Pamela Mishkin",
        "Making language models bigger does not inherently make them better at following a "
        "user's intent.",
        "cs.CL cs.AI cs.LG",
        "2022-03-04",
        file="2203.02155v1_instructgpt.pdf",
    ),
    _p(
        "2109.01652v5",
        "Finetuned Language Models Are Zero-Shot Learners",
        "Jason Wei, Maarten Bosma, Vincent Y. Zhao, Kelvin Guu, Adams Wei Yu, Brian Lester",
        "This paper explores a simple method for improving the zero-shot learning abilities "
        "of language models.",
        "cs.CL",
        "2021-09-03",
        file="2109.01652v5_flan.pdf",
    ),
    _p(
        "2106.09685v2",
        "LoRA: Low-Rank Adaptation of Large Language Models",
        "Edward J. Hu, Yelong Shen, Phillip Wallis, Zeyuan Allen-Zhu, Yuanzhi Li, Shean Wang, "
        "Lu Wang, Weizhu Chen",
        "An important paradigm of natural language processing consists of large-scale "
        "pre-training on general domain data and adaptation to particular tasks or domains.",
        "cs.CL cs.AI cs.LG",
        "2021-06-17",
        file="2106.09685v2_lora.pdf",
    ),
    _p(
        "1902.00751v2",
        "Parameter-Efficient Transfer Learning for NLP",
        "Neil Houlsby, Andrei Giurgiu, Stanislaw Jastrzebski, Bruna Morrone, Quentin de "
        "Laroussilhe, Andrea Gesmundo, Mona Attariyan, Sylvain Gelly",
        "Fine-tuning large pre-trained models is an effective transfer mechanism in NLP.",
        "cs.LG cs.CL stat.ML",
        "2019-02-02",
        file="1902.00751v2_adapters_peft.pdf",
    ),
]

#: Papers that must not be published, each for its own reason.
BAD_PAPERS = [
    _p(
        "2405.00001v1",
        "Error Pages Served as Papers",
        "A. Tester",
        "A paper whose PDF link answers with an HTML error page.",
        "cs.CL",
        "2024-05-01",
        trouble="html",
    ),
    _p(
        "2405.00002v1",
        "An Enormous Appendix",
        "A. Tester",
        "A paper whose PDF is larger than the size cap.",
        "cs.CL",
        "2024-05-02",
        trouble="huge",
    ),
    _p(
        "2405.00003v1",
        "Disallowed by Robots",
        "A. Tester",
        "A paper whose PDF robots.txt disallows.",
        "cs.CL",
        "2024-05-03",
        file="2302.13971v1_llama.pdf",
    ),
]
ROBOTS = "User-agent: *\nDisallow: /pdf/2405.00003\n"


@dataclass
class ArxivSite:
    """The look-alike on a free port of 127.0.0.1; use as a context manager."""

    pdfs: Path
    papers: list[Paper] = field(default_factory=lambda: [*REAL_PAPERS, *BAD_PAPERS])
    latency_s: float = 0.0
    huge_bytes: int = 8 * 1024 * 1024
    robots: str = ROBOTS
    #: Bytes appended to each PDF so that equal files under different ids stay distinct.
    salt_pdfs: bool = False
    requests: Counter[str] = field(default_factory=Counter)
    #: "path?query" strings answered with a 503 error page (a rate limit, an outage).
    broken: set[str] = field(default_factory=set)
    #: Bytes of the oversized PDF written before each client hung up.
    huge_sent: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.log: list[tuple[float, str]] = []
        self._by_id = {p.arxiv_id: p for p in self.papers}
        self._server = Server(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ArxivSite:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1
            self.log.append((time.monotonic(), path))

    def paper(self, arxiv_id: str) -> Paper | None:
        return self._by_id.get(arxiv_id)

    def pdf_bytes(self, paper: Paper) -> bytes:
        assert paper.file is not None
        data = (self.pdfs / paper.file).read_bytes()
        return data + f"\n% {paper.vid}\n".encode() if self.salt_pdfs else data

    # --- pages ---------------------------------------------------------------------------

    def newest_first(self, papers: list[Paper] | None = None) -> list[Paper]:
        return sorted(papers or self.papers, key=lambda p: (p.published, p.arxiv_id), reverse=True)

    def listing(self, category: str, listing: str, skip: int, show: int) -> str:
        papers = [p for p in self.newest_first() if category in p.categories or category == "all"]
        window = papers[skip : skip + show]
        rows, day = [], None
        for i, p in enumerate(window, start=skip + 1):
            if p.published != day:
                day = p.published
                rows.append(f"<h3>{day:%a, %d %b %Y} (showing entries)</h3>")
            rows.append(_listing_entry(i, p))
        pages = " | ".join(
            f"<a href=/list/{category}/{listing}?skip={s}&amp;show={show}>{s + 1}-"
            f"{min(s + show, len(papers))}</a>"
            if s != skip
            else f"<span>{s + 1}-{min(s + show, len(papers))}</span>"
            for s in range(0, len(papers), show)
        )
        return _page(
            f"{category} recent submissions",
            f"<div id='dlpage'><h1>{category}</h1><div class='paging'>Total of {len(papers)} "
            f"entries : {pages}</div><dl id='articles'>{''.join(rows)}</dl></div>",
        )

    def search(self, query: str, start: int, size: int, newest: bool) -> str:
        words = query.lower().split()
        hits = [
            p for p in self.papers if all(w in f"{p.title} {p.abstract}".lower() for w in words)
        ]
        if newest:
            hits = self.newest_first(hits) if hits else []
        window = hits[start : start + size]
        items = "".join(_search_item(p) for p in window)
        nxt = ""
        if start + size < len(hits):
            params = urlencode(
                {
                    "query": query,
                    "searchtype": "all",
                    "size": size,
                    "start": start + size,
                    **({"order": "-announced_date_first"} if newest else {}),
                }
            )
            nxt = f'<a href="/search/?{params}" class="pagination-next">Next</a>'
        return _page(
            "Search",
            f'<h1 class="title">Showing {start + 1}&ndash;{start + len(window)} of {len(hits)} '
            f'results</h1><nav class="pagination">{nxt}</nav>'
            f'<ol class="breathe-horizontal" start="{start + 1}">{items}</ol>',
        )

    def abstract(self, p: Paper) -> str:
        authors = ", ".join(
            f'<a href="/a/{html.escape(a)}">{html.escape(a)}</a>' for a in p.authors
        )
        subjects = "; ".join(
            f'<span class="primary-subject">{c} ({c})</span>' if i == 0 else f"{c} ({c})"
            for i, c in enumerate(p.categories)
        )
        history = "".join(
            f'<strong><a href="/abs/{p.arxiv_id}v{v}">[v{v}]</a></strong> '
            f"{p.published:%a, %d %b %Y} 12:00:00 UTC (1,000 KB)<br/>"
            for v in range(1, p.version + 1)
        )
        revised = f", last revised (this version, v{p.version})" if p.version > 1 else ""
        head = (
            f'<meta name="citation_title" content="{html.escape(p.title)}"/>'
            + "".join(
                f'<meta name="citation_author" content="{html.escape(a)}"/>' for a in p.authors
            )
            + f'<meta name="citation_date" content="{p.published:%Y/%m/%d}"/>'
            f'<meta name="citation_pdf_url" content="/pdf/{p.arxiv_id}"/>'
            f'<meta name="citation_arxiv_id" content="{p.arxiv_id}"/>'
        )
        return _page(
            p.title,
            f'<h1 class="title mathjax"><span class="descriptor">Title:</span>'
            f"{html.escape(p.title)}</h1>"
            f'<div class="authors"><span class="descriptor">Authors:</span>{authors}</div>'
            f'<div class="dateline">[Submitted on {p.published:%d %b %Y} (v1){revised}]</div>'
            f'<blockquote class="abstract mathjax"><span class="descriptor">Abstract:</span>'
            f"{html.escape(p.abstract)}</blockquote>"
            f'<table><tr><td class="tablecell subjects">{subjects}</td></tr></table>'
            f'<div class="submission-history"><h2>Submission history</h2>{history}</div>'
            f'<div class="full-text"><a href="/pdf/{p.vid}" class="abs-button download-pdf">'
            f'View PDF</a></div><div class="abs-license"><a href="{p.license}" '
            f'title="Rights to this article">view license</a></div>',
            head,
        )


def _page(title: str, body: str, head: str = "") -> str:
    return (
        f"<!DOCTYPE html><html lang='en'><head><title>{html.escape(title)}</title>{head}"
        f"</head><body>{body}</body></html>"
    )


def _listing_entry(i: int, p: Paper) -> str:
    authors = ", ".join(f'<a href="/a/{html.escape(a)}">{html.escape(a)}</a>' for a in p.authors)
    subjects = "; ".join(
        f'<span class="primary-subject">{c} ({c})</span>' if k == 0 else f"{c} ({c})"
        for k, c in enumerate(p.categories)
    )
    return (
        f'<dt><a name=\'item{i}\'>[{i}]</a> <a href="/abs/{p.arxiv_id}" title="Abstract" '
        f'id="{p.arxiv_id}">arXiv:{p.arxiv_id}</a> [<a href="/pdf/{p.arxiv_id}" '
        f'title="Download PDF" id="pdf-{p.arxiv_id}">pdf</a>]</dt>'
        f"<dd><div class='meta'><div class='list-title mathjax'><span class='descriptor'>"
        f"Title:</span> {html.escape(p.title)}</div><div class='list-authors'>{authors}</div>"
        f"<div class='list-subjects'><span class='descriptor'>Subjects:</span> {subjects}</div>"
        f"</div></dd>"
    )


def _search_item(p: Paper) -> str:
    authors = ", ".join(f'<a href="/a/{html.escape(a)}">{html.escape(a)}</a>' for a in p.authors)
    tags = "".join(f'<span class="tag is-small">{c}</span>' for c in p.categories)
    return (
        f'<li class="arxiv-result"><div class="is-marginless"><p class="list-title '
        f'is-inline-block"><a href="/abs/{p.arxiv_id}">arXiv:{p.arxiv_id}</a> <span>[<a '
        f'href="/pdf/{p.arxiv_id}">pdf</a>]</span></p><div class="tags is-inline-block">{tags}'
        f'</div></div><p class="title is-5 mathjax">{html.escape(p.title)}</p><p class="authors">'
        f'<span class="search-hit">Authors:</span> {authors}</p><p class="abstract mathjax">'
        f'<span class="abstract-full">{html.escape(p.abstract)} <a class="is-size-7">△ Less</a>'
        f'</span></p><p class="is-size-7"><span>Submitted</span> {p.published.day} '
        f"{p.published:%B}, {p.published.year}; <span>originally announced</span> "
        f"{p.published:%B %Y}.</p></li>"
    )


def _handler(site: ArxivSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that gave up (a capped download, a killed scraper)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            parts = urlsplit(self.path)
            site.record(parts.path)
            if site.latency_s:
                time.sleep(site.latency_s)
            if f"{parts.path}?{parts.query}" in site.broken:
                page = _page("503", "<h1>Service Unavailable</h1><p>Slow down.</p>")
                return self._send(503, "text/html", page.encode())
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            segments = parts.path.strip("/").split("/")
            if parts.path == "/robots.txt":
                return self._send(200, "text/plain", site.robots.encode())
            if segments[0] == "list" and len(segments) == 3:
                page = site.listing(
                    segments[1], segments[2], int(query.get("skip", 0)), int(query.get("show", 50))
                )
                return self._send(200, "text/html", page.encode())
            if segments[0] == "search":
                page = site.search(
                    query.get("query", ""),
                    int(query.get("start", 0)),
                    int(query.get("size", 50)),
                    "order" in query,
                )
                return self._send(200, "text/html", page.encode())
            if segments[0] in ("abs", "pdf") and len(segments) == 2:
                paper = site.paper(segments[1].split("v")[0])
                if paper is not None:
                    return self._paper(segments[0], paper)
            self._send(404, "text/html", _page("Not found", "<h1>Not found</h1>").encode())

        def _paper(self, kind: str, paper: Paper) -> None:
            if kind == "abs":
                return self._send(200, "text/html", site.abstract(paper).encode())
            if paper.trouble == "html":
                error = _page("Error", "<h1>Service temporarily unavailable</h1>").encode()
                return self._send(200, "application/pdf", error)
            if paper.trouble == "huge":
                return self._stream_huge()
            self._send(200, "application/pdf", site.pdf_bytes(paper))

        def _stream_huge(self) -> None:
            # No Content-Length: the cap must be enforced on the bytes as they arrive.
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"%PDF-1.7\n" + b"0" * (64 * 1024 - 9)
            sent = 0
            try:
                for _ in range(site.huge_bytes // len(block)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    sent += len(block)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
            site.huge_sent.append(sent)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
