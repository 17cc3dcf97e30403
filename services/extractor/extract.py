"""One document, bytes in, chunks and a summary out: the job a worker process runs.

No broker or blob store here, so the same function serves the service's process pool, the
tests and the benchmark.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from pipeline.errors import BadInput
from services.extractor import core
from services.extractor.html import read_html
from services.extractor.pdf import read_pdf

PDF = "application/pdf"
HTML = "text/html"


@dataclass(frozen=True)
class Options:
    passwords: tuple[str, ...] = ()
    drop_references: bool = True
    max_tokens: int = 512
    overlap: int = 64
    max_pages: int = 2000
    #: A tokenizer.json, or a model directory holding one; None counts approximately.
    tokenizer: str | None = None


@dataclass(frozen=True)
class Extraction:
    chunks: list[core.Chunk]
    pages: int | None  # None for HTML
    #: Pages with no text layer (scanned) in a PDF that has text elsewhere.
    pages_without_text: int
    chars: int
    sections: int


def extract(data: bytes, content_type: str, options: Options) -> Extraction:
    """Raises BadInput with the reason the document cannot give chunks."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind == PDF:
            pages = read_pdf(data, options.passwords, options.max_pages)
            lines = core.clean_pages(pages)
            sections = core.split_sections(lines, options.drop_references)
            n_pages: int | None = len(pages)
            blank = sum(not page.strip() for page in pages)
        elif kind in (HTML, "application/xhtml+xml"):
            sections = read_html(data)
            n_pages, blank = None, 0
        else:
            raise BadInput(f"no extractor for content type {content_type!r}", reason="unsupported")
        chunks = core.chunk_sections(
            sections, options.max_tokens, options.overlap, counter(options.tokenizer)
        )
    except MemoryError:
        # The worker's address-space limit: the file needs more than a worker may have.
        raise BadInput(
            "the document needs more memory than a worker has", reason="too_large"
        ) from None
    if not chunks:
        raise BadInput("the document has no text left after cleaning", reason="no_content")
    return Extraction(
        chunks=chunks,
        pages=n_pages,
        pages_without_text=blank,
        chars=sum(len(line.text) for s in sections for line in s.lines),
        sections=sum(s.title is not None for s in sections),
    )


@functools.cache
def counter(tokenizer: str | None) -> Callable[[str], int]:
    """Token counts: approximate, or the given tokenizer's (loaded once per process)."""
    if tokenizer is None:
        return core.approx_tokens
    path = Path(tokenizer)
    loaded = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    return lambda text: len(loaded.encode(text, add_special_tokens=False).ids)
