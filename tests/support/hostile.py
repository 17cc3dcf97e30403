"""A corpus of hostile documents, generated: each with the outcome the extractor must reach.

PDFs are written object by object (`pdf()`), so a test can break exactly one thing: a
cross-reference table, a stream's length, a page tree that loops. Nothing here is random
without a seed, so a failure reproduces.
"""

from __future__ import annotations

import io
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pypdf import PdfWriter

PDF = "application/pdf"
HTML = "text/html"


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    content_type: str
    #: The DLQ reason, or None where the right outcome is chunks (a file pypdf can repair).
    reason: str | None


def pdf(
    objects: list[bytes], *, root: int = 1, xref: bool = True, header: bytes = b"%PDF-1.7"
) -> bytes:
    """A PDF of the given object bodies (numbered from 1) with a correct cross-reference table,
    unless `xref` is False."""
    out = io.BytesIO()
    out.write(header + b"\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    start = out.tell()
    if xref:
        out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
        out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\n" % (len(objects) + 1, root))
    out.write(b"startxref\n%d\n%%%%EOF\n" % start)
    return out.getvalue()


def stream(data: bytes, extra: bytes = b"", *, compress: bool = False) -> bytes:
    if compress:
        data = zlib.compress(data, 9)
        extra += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(data), extra, data)


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
PAGE = (
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
    b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
)


def text_pdf(pages: list[str], *, content: Callable[[str], bytes] | None = None) -> bytes:
    """A plain, valid PDF with one line of Helvetica text per page."""
    content = content or (lambda text: stream(b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode()))
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        FONT,
    ]
    for i, text in enumerate(pages):
        objects.append(PAGE % (5 + 2 * i))
        objects.append(content(text))
    return pdf(objects)


SENTENCE = "Low-rank adaptation trains small matrices beside the frozen weights of a large model."


def _encrypted(password: str, algorithm: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf([SENTENCE])))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _page_tree_loop() -> bytes:
    # The page tree's only kid is the tree itself.
    return pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"])


def _reference_cycle() -> bytes:
    # The content stream's Length is an indirect object that refers to itself, in a chain.
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length 5 0 R >>\nstream\nBT ET\nendstream",
            b"6 0 R",
            b"5 0 R",
        ]
    )


def _deep_nesting(depth: int) -> bytes:
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /Deep %s%s >>" % (b"[" * depth, b"]" * depth),
            b"<< /Type /Pages /Kids [] /Count 0 >>",
        ]
    )


def _bomb() -> bytes:
    # 1 GiB of zeros in a ~1 MiB Flate stream, as a page's content.
    zeros = zlib.compressobj(9)
    block = bytes(1 << 20)
    data = b"".join(zeros.compress(block) for _ in range(1024)) + zeros.flush()
    return text_pdf(
        ["x"],
        content=lambda _: (
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(data), data)
        ),
    )


def slow_pdf(pages: int, operators: int) -> bytes:
    # Pages that share one content stream of many tiny text operators: each stream stays
    # under pypdf's parsing budget, the whole file takes minutes.
    body = b"BT /F1 1 Tf " + b"(a) Tj " * operators + b"ET"
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    page = PAGE % 4
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            FONT,
            stream(body, compress=True),
            *[page] * pages,
        ]
    )


def _broken_xref() -> bytes:
    good = text_pdf([SENTENCE, SENTENCE.replace("Low-rank", "Full")])
    # Every offset in the table is wrong; the objects themselves are intact.
    head, _, tail = good.partition(b"xref\n")
    return (
        head
        + b"xref\n"
        + re.sub(rb"(\d{10}) 00000 n", lambda m: b"%010d 00000 n" % (int(m[1]) + 7), tail)
    )


def _missing_xref() -> bytes:
    good = text_pdf([SENTENCE])
    return good[: good.index(b"xref\n")] + b"%%EOF\n"


def corpus(papers: Path) -> list[Hostile]:
    rng = random.Random(20261122)  # noqa: S311 - reproducible junk, not secrets
    lora = (papers / "2106.09685v2_lora.pdf").read_bytes()
    return [
        Hostile("zero_bytes.pdf", b"", PDF, "not_a_pdf"),
        Hostile("random_bytes.pdf", rng.randbytes(256 * 1024), PDF, "not_a_pdf"),
        Hostile(
            "html_named.pdf",
            b"<!doctype html><html><body><p>Not a PDF.</p></body></html>",
            PDF,
            "not_a_pdf",
        ),
        Hostile("header_only.pdf", b"%PDF-1.7\n", PDF, "corrupt"),
        Hostile("header_then_noise.pdf", b"%PDF-1.4\n" + rng.randbytes(64 * 1024), PDF, "corrupt"),
        Hostile("truncated_first_kib.pdf", lora[:1024], PDF, "corrupt"),
        Hostile("truncated_half.pdf", lora[: len(lora) // 2], PDF, "corrupt"),
        Hostile(
            "unknown_password_rc4.pdf",
            _encrypted("s3cret-rc4", "RC4-128"),
            PDF,
            "encrypted_no_password",
        ),
        Hostile(
            "unknown_password_aes.pdf",
            _encrypted("s3cret-aes", "AES-256"),
            PDF,
            "encrypted_no_password",
        ),
        Hostile(
            "configured_password_aes.pdf", _encrypted("hostile-test-password", "AES-256"), PDF, None
        ),
        Hostile(
            "five_thousand_pages.pdf",
            text_pdf([f"Page {i}." for i in range(5000)]),
            PDF,
            "too_large",
        ),
        Hostile("decompression_bomb.pdf", _bomb(), PDF, "too_large"),
        Hostile("page_tree_loop.pdf", _page_tree_loop(), PDF, "corrupt"),
        Hostile("reference_cycle.pdf", _reference_cycle(), PDF, "no_text_layer"),
        Hostile("deep_nesting.pdf", _deep_nesting(50_000), PDF, "corrupt"),
        Hostile("broken_xref.pdf", _broken_xref(), PDF, None),
        Hostile("missing_xref.pdf", _missing_xref(), PDF, "corrupt"),
        Hostile(
            "no_pages.pdf",
            pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]),
            PDF,
            "no_content",
        ),
        Hostile(
            "blank_pages.pdf",
            text_pdf(["", ""], content=lambda _: stream(b"")),
            PDF,
            "no_text_layer",
        ),
        Hostile("slow_content.pdf", slow_pdf(1000, 400_000), PDF, "timeout"),
        Hostile(
            "huge_declared_length.pdf",
            text_pdf(
                ["x"], content=lambda _: b"<< /Length 99999999999 >>\nstream\nBT ET\nendstream"
            ),
            PDF,
            "too_large",
        ),
        Hostile(
            "garbage_operators.pdf",
            text_pdf(["x"], content=lambda _: stream(rng.randbytes(4096))),
            PDF,
            "corrupt",
        ),
        Hostile("png.pdf", b"\x89PNG\r\n\x1a\n" + rng.randbytes(1024), "image/png", "unsupported"),
        Hostile("blank.html", b" \n\t\n", HTML, "no_content"),
        Hostile("binary.html", rng.randbytes(8192), HTML, "no_content"),
        Hostile(
            "menu_only.html",
            b"<html><body><nav><a href='/'>Home</a> <a href='/a'>About</a></nav></body></html>",
            HTML,
            "no_content",
        ),
    ]
