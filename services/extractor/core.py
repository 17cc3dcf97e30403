"""The extractor's pure part: pages of raw PDF text in, clean section-aware chunks out.

Cleaning, in order: Unicode NFKC (which also expands the ligatures ﬁ ﬂ ﬃ), over-long "words"
(base64, garbage) dropped, the arXiv margin
stamp removed, running headers, footers and page numbers removed (lines that recur at the top
or bottom of many pages), words hyphenated across lines joined (unless the document spells the
compound with a hyphen elsewhere), section headings found, the references dropped. Chunking
keeps each chunk inside one section, under a token budget, with an overlap, and records the
pages it came from. No PDF library, broker or file here: `pdf.py` and `main.py` do that.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

# --- lines ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    text: str
    page: int | None  # 1-based; None where the source has no pages (HTML)


_STAMP = re.compile(
    r"^arXiv:(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?\s+\[[^\]]+\]\s+\d{1,2}\s+\w{3}\s+\d{4}$"
)
_PAGE_NUMBER = re.compile(r"^(page\s+)?(\d{1,4}|[ivxlc]{1,6})(\s*(/|of)\s*\d{1,4})?$", re.I)
#: Lines at each end of a page where running headers, footers and page numbers live.
_EDGE = 3


#: No word is this long: base64, hex dumps, a content stream's garbage. Dropped, they cannot
#: swell a chunk (counted as one approximate token) past a message's size limit.
_OVERLONG = re.compile(r"\S{200,}")


def tidy(text: str) -> str:
    """NFKC (ligatures expanded), whitespace collapsed, over-long "words" dropped."""
    text = unicodedata.normalize("NFKC", text)
    if len(text) >= 200:
        text = _OVERLONG.sub(" ", text)
    return " ".join(text.split())


def clean_pages(pages: list[str]) -> list[Line]:
    """The document's lines, page by page, without what is not its text."""
    raw = [[tidy(line) for line in page.splitlines()] for page in pages]
    raw = [[line for line in page if line] for page in raw]
    running = _running_lines(raw)
    lines = []
    for number, page in enumerate(raw, start=1):
        for i, text in enumerate(page):
            at_edge = i < _EDGE or i >= len(page) - _EDGE
            if _STAMP.match(text):
                continue
            if at_edge and _PAGE_NUMBER.match(text):
                continue
            # Page 1 keeps them: its title is often what later pages repeat as their header.
            if at_edge and number > 1 and _shape(text) in running:
                continue
            lines.append(Line(text, number))
    return _join_hyphenated(lines)


def _shape(text: str) -> str:
    """A line with its numbers blanked: "Page 3 of 12" and "Page 4 of 12" are one header."""
    return re.sub(r"\d+", "#", text.casefold())


def _running_lines(pages: list[list[str]]) -> set[str]:
    """Shapes of the lines that recur at the edges of many pages: headers and footers."""
    if len(pages) < 3:
        return set()
    seen: Counter[str] = Counter()
    for page in pages:
        seen.update({_shape(t) for t in page[:_EDGE] + page[-_EDGE:]})
    threshold = max(3, len(pages) // 2)
    return {shape for shape, n in seen.items() if n >= threshold}


_BROKEN = re.compile(r"(\w[\w-]*)-$")  # the whole token: "state-of-the-" gives "state-of-the"
_WORD = re.compile(r"[\w-]+")


def _join_hyphenated(lines: list[Line]) -> list[Line]:
    """`pa-` + `rameters` → `parameters`; `state-of-the-` + `art` keeps its hyphen when the
    document writes `state-of-the-art` on one line somewhere."""
    hyphenated = {w.casefold() for line in lines for w in _WORD.findall(line.text) if "-" in w}
    out = list(lines)
    for i in range(len(out) - 1):
        end = _BROKEN.search(out[i].text)
        head, _, rest = out[i + 1].text.partition(" ")
        if not end or not head or not (head[0].islower() or end.group(1).isupper()):
            continue
        word = re.match(r"\w+", head)
        if word is None:
            continue
        left, right = end.group(1), word.group(0)
        keep = f"{left}-{right}".casefold() in hyphenated
        joined = f"{left}-{right}" if keep else left + right
        out[i] = Line(out[i].text[: end.start()] + joined + head[word.end() :], out[i].page)
        out[i + 1] = Line(rest, out[i + 1].page)
    return [line for line in out if line.text]


# --- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    title: str | None  # None: the text before the first heading (title, authors)
    lines: list[Line]


# Unnumbered headings, only the distinctive ones: "Method" or "Results" alone on a line is
# more often a table's column header.
_NAMED = re.compile(
    r"^(abstract|introduction|related work|background|conclusions?|limitations|"
    r"broader impacts?|ethics statement|acknowledge?ments|references|bibliography|appendix|"
    r"appendices|supplementary material)$",
    re.I,
)
_TITLE = r"([A-Z][\w ,:;&'’()/?+*.-]{1,70})"
_NUMBERED = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+" + _TITLE + "$")
_LETTERED = re.compile(r"^([A-H](?:\.\d{1,2}){0,2})\.?\s+" + _TITLE + "$")
_REFERENCES = re.compile(r"^(references|bibliography)$", re.I)
#: IEEE style puts the abstract on its heading's line: "Abstract—Large language models ...".
_INLINE_ABSTRACT = re.compile(r"^(abstract)\s*[—–:.-]\s*(\S.*)$", re.I)
#: An author's initial ("A. Rusu, K. Milan") marks a reference entry, not a heading.
_INITIAL = re.compile(r"\b[A-Z]\.\s")


def heading(text: str, after_references: bool, next_line: str = "") -> str | None:
    """The section title if the line is a heading: "Abstract", "3.1 Method", "A Proofs"
    (lettered ones only once the references are behind). A numbered line whose text runs on
    into a lower-case next line is a list item, not a heading."""
    if _NAMED.match(text):
        return text.title() if text.isupper() else text
    m = _NUMBERED.match(text) or (_LETTERED.match(text) if after_references else None)
    if m is None or len(m.group(2).split()) > 10 or m.group(2).rstrip()[-1] in ".:,;-":
        return None
    if _INITIAL.search(m.group(2)):
        return None
    return None if next_line[:1].islower() else text


def split_sections(lines: list[Line], drop_references: bool = True) -> list[Section]:
    sections = [Section(None, [])]
    in_references = after_references = False
    for i, line in enumerate(lines):
        if (inline := _INLINE_ABSTRACT.match(line.text)) and len(sections) == 1:
            sections.append(Section("Abstract", [Line(inline.group(2), line.page)]))
            continue
        following = lines[i + 1].text if i + 1 < len(lines) else ""
        title = heading(line.text, after_references, following)
        if title is not None:
            in_references = bool(_REFERENCES.match(line.text))
            after_references = after_references or in_references
            sections.append(Section(title, []))
        if in_references and drop_references:
            continue
        if title is None:
            sections[-1].lines.append(line)
    return [s for s in sections if s.lines]


# --- chunks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str
    section: str | None
    pages: tuple[int, int] | None  # first and last, None without pages (HTML)
    n_tokens: int


_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


def approx_tokens(text: str) -> int:
    """Words and punctuation marks: close to what a BPE tokenizer counts for English prose,
    and thousands of times cheaper. The base model's tokenizer can be passed instead."""
    return len(_TOKEN.findall(text))


def chunk_sections(
    sections: list[Section],
    max_tokens: int = 512,
    overlap: int = 64,
    count: Callable[[str], int] = approx_tokens,
) -> list[Chunk]:
    """Sentences packed into chunks of at most `max_tokens` (a longer "sentence", a table or
    an equation run, is cut between words), never across sections; each chunk repeats up to
    `overlap` tokens of the one before."""
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, {max_tokens}), got {overlap}")
    chunks = []
    for section in sections:
        text, page_at = _joined(section.lines)
        window: list[tuple[int, int, int]] = []  # (start, end, tokens) of sentences
        for start, end, n in _pieces(text, max_tokens, count):
            if window and sum(t for *_, t in window) + n > max_tokens:
                chunks.append(_chunk(text, window, section.title, page_at, count))
                window = _tail(window, overlap)
                while window and sum(t for *_, t in window) + n > max_tokens:
                    window.pop(0)  # the overlap gives way to a long sentence
            window.append((start, end, n))
        if window:
            chunks.append(_chunk(text, window, section.title, page_at, count))
    return chunks


def _joined(lines: list[Line]) -> tuple[str, Callable[[int], int | None]]:
    """The section's text and a map from a character offset to its page."""
    starts, pages, parts, offset = [], [], [], 0
    for line in lines:
        starts.append(offset)
        pages.append(line.page)
        parts.append(line.text)
        offset += len(line.text) + 1
    return " ".join(parts), lambda at: pages[bisect.bisect_right(starts, at) - 1]


def _sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if b > a]


def _pieces(text: str, max_tokens: int, count: Callable[[str], int]) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of each sentence, the ones over budget cut between words."""
    out = []
    for start, end in _sentences(text):
        n = count(text[start:end])
        if n <= max_tokens:
            out.append((start, end, n))
            continue
        piece_start, piece_tokens = start, 0
        for word in re.finditer(r"\S+", text[start:end]):
            w = count(word.group())
            if piece_tokens and piece_tokens + w > max_tokens:
                out.append((piece_start, start + word.start() - 1, piece_tokens))
                piece_start, piece_tokens = start + word.start(), 0
            piece_tokens += w
        out.append((piece_start, end, piece_tokens))
    return out


def _tail(window: list[tuple[int, int, int]], overlap: int) -> list[tuple[int, int, int]]:
    kept: list[tuple[int, int, int]] = []
    for sentence in reversed(window):
        if sum(t for *_, t in kept) + sentence[2] > overlap:
            break
        kept.insert(0, sentence)
    return kept


def _chunk(
    text: str,
    window: list[tuple[int, int, int]],
    section: str | None,
    page_at: Callable[[int], int | None],
    count: Callable[[str], int],
) -> Chunk:
    start, end = window[0][0], window[-1][1]
    body = text[start:end]
    first, last = page_at(start), page_at(end - 1)
    pages = (first, last) if first is not None and last is not None else None
    return Chunk(body, section, pages, count(body))
