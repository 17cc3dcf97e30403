"""HTML to sections: trafilatura finds the main content, the page's own headings title it.

trafilatura (2.x) is very good at dropping menus, footers and sidebars, but on some real pages
(the consulting blog posts in the test data, whose article sits beside a table of contents) it
falls back to a path that drops every heading. So the headings are not taken from its output:
each block it keeps is found again in the page's text, and the last h1–h6 before it titles its
section. A block that cannot be found (trafilatura rewrote it) stays in the current section.
"""

from __future__ import annotations

import trafilatura
from lxml import etree
from trafilatura.settings import Document
from trafilatura.utils import load_html

from pipeline.errors import BadInput
from services.extractor.core import Line, Section, tidy

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_INVISIBLE = {"script", "style", "noscript", "template", "head"}
#: Characters of a block's start looked up in the page: enough to be unique, short enough to
#: survive trafilatura's rewriting of what follows (inline markup, trimmed link text).
_KEY = 48


def read_html(data: bytes) -> list[Section]:
    """The page's main content as sections. BadInput `no_content` when there is none."""
    tree = load_html(data)
    doc = None
    if tree is not None:
        doc = trafilatura.bare_extraction(
            tree, include_tables=True, include_comments=False, with_metadata=False
        )
    blocks = _blocks(doc.body) if isinstance(doc, Document) and doc.body is not None else []
    if tree is None or not blocks:
        raise BadInput("no main content found in the HTML", reason="no_content")
    stream, headings = _page_text(tree)
    sections = [Section(None, [])]
    cursor, h = 0, 0
    for block in blocks:
        at = stream.find(block[:_KEY].casefold(), cursor)
        if at >= 0:
            cursor = at
            title = None
            while h < len(headings) and headings[h][0] <= at:
                title = headings[h][1]
                h += 1
            if title is not None and title != sections[-1].title:
                sections.append(Section(title, []))
        sections[-1].lines.append(Line(block, None))
    return [s for s in sections if s.lines]


def _blocks(body: etree._Element) -> list[str]:
    """Paragraphs, list items, table rows and quotes of trafilatura's output, in order; its
    own headings (when it keeps them) are skipped, the page's are used instead."""
    out = []
    for child in body:
        if child.tag == "head":
            continue
        parts = [item for item in child if item.tag in ("item", "row")] or [child]
        out += [text for part in parts if (text := tidy(" ".join(part.itertext())))]
    return out


def _page_text(tree: etree._Element) -> tuple[str, list[tuple[int, str]]]:
    """The page's visible text, normalised and case-folded, with the offset of each heading."""
    parts: list[str] = []
    headings: list[tuple[int, str]] = []
    length = 0

    def add(text: str | None) -> None:
        nonlocal length
        if text and (normal := tidy(text)):
            parts.append(normal.casefold())
            length += len(normal) + 1

    hidden = 0  # depth inside script, style and the like
    for event, el in etree.iterwalk(tree, events=("start", "end")):
        tag = el.tag if isinstance(el.tag, str) else ""  # "" for comments
        if event == "start":
            hidden += tag in _INVISIBLE
            if hidden == 0 and tag in _HEADINGS and (title := tidy(" ".join(el.itertext()))):
                headings.append((length, title))
            if hidden == 0 and tag:
                add(el.text)
        else:
            hidden -= tag in _INVISIBLE
            if hidden == 0:
                add(el.tail)  # the tail follows the element, in its parent
    return " ".join(parts), headings
