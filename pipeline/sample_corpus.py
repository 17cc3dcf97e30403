"""The demo's corpus on a machine without the shared papers: this project's own documents
(the README, docs/, each service's README), each rendered as an HTML page and as a PDF, so
that both of the extractor's paths run."""

from __future__ import annotations

import html
from pathlib import Path

from fpdf import FPDF
from markdown_it import MarkdownIt

from pipeline.embedded import REPO_ROOT

# A Unicode font where Debian puts it; without one, the PDF core fonts' Latin-1 (the arrows,
# dashes and symbols of the docs spelt in ASCII).
_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
_ASCII = str.maketrans({"→": "->", "←": "<-", "≤": "<=", "≥": ">=", "—": "-", "–": "-",
                        "…": "...", "“": '"', "”": '"', "‘": "'", "’": "'", "×": "x",
                        "≈": "~"})  # fmt: skip


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """The Markdown documents that make the corpus, in a stable order."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md")),
             *sorted((root / "services").glob("*/README.md"))]  # fmt: skip
    return [p for p in found if p.is_file()]


def render(out: Path, root: Path = REPO_ROOT) -> list[Path]:
    """Each document as `<name>.html` and `<name>.pdf` in `out` (made if missing); the paths
    written. Names come from the document's path (`services-trainer-README`)."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = MarkdownIt("commonmark").enable("table")
    written = []
    for doc in documents(root):
        name = "-".join(doc.relative_to(root).with_suffix("").parts)
        text = doc.read_text(encoding="utf-8")
        title = next((line.lstrip("# ").strip() for line in text.splitlines()
                      if line.startswith("#")), name)  # fmt: skip
        body = markdown.render(text)
        page = out / f"{name}.html"
        page.write_text(
            f"<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title></head>\n<body><article>\n{body}</article>"
            "</body></html>\n",
            encoding="utf-8",
        )
        pdf = out / f"{name}.pdf"
        _pdf(title, text, pdf)
        written += [page, pdf]
    return written


def _pdf(title: str, markdown: str, path: Path) -> None:
    """The document's text, a paragraph per block, headings in bold: what an extractor reads
    from a PDF is its text layer, so layout beyond that is left out."""
    pdf = FPDF(format="A4")
    pdf.set_title(title)
    family = "Helvetica"
    if _FONT.is_file():
        pdf.add_font("DejaVu", "", str(_FONT))
        pdf.add_font("DejaVu", "B", str(_FONT))  # the regular face, for headings too
        family = "DejaVu"
    pdf.add_page()
    for block in markdown.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        if family == "Helvetica":
            block = block.translate(_ASCII).encode("latin-1", "replace").decode("latin-1")
        heading = block.startswith("#") and "\n" not in block
        pdf.set_font(family, "B" if heading else "", 14 if heading else 10)
        text = block.lstrip("# ") if heading else " ".join(block.split())
        pdf.multi_cell(0, 6 if heading else 5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    pdf.output(str(path))
