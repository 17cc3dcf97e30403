"""pypdf to pages of text, with a specific reason for every way a file can fail.

The service runs this in worker processes with a time and memory limit (a pathological file must
not take the service down); here it is a plain function of the bytes.
"""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, LimitReachedError, PyPdfError

from pipeline.errors import BadInput

# pypdf reports recoverable oddities of real-world files as warnings; the outcome is ours to say.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def read_pdf(data: bytes, passwords: tuple[str, ...] = (), max_pages: int = 2000) -> list[str]:
    """The text of each page. BadInput reasons: not_a_pdf, encrypted_no_password, no_content
    (no pages), too_large (more than `max_pages`, or a stream past pypdf's limits against
    decompression bombs), corrupt, no_text_layer."""
    if b"%PDF-" not in data[:1024]:
        raise BadInput("not a PDF (no %PDF- header)", reason="not_a_pdf")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _decrypt(reader, passwords)
        if not reader.pages:
            raise BadInput("the PDF has no pages", reason="no_content")
        if len(reader.pages) > max_pages:
            raise BadInput(
                f"{len(reader.pages)} pages, more than EXTRACTOR_MAX_PAGES={max_pages}",
                reason="too_large",
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except FileNotDecryptedError:
        raise BadInput(
            "encrypted, and no configured password opens it", reason="encrypted_no_password"
        ) from None
    except LimitReachedError as exc:
        # pypdf's own guard against decompression bombs and huge declared lengths.
        raise BadInput(f"a stream is too large: {exc}", reason="too_large") from None
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        RecursionError,  # circular or absurdly nested object references
    ) as exc:
        # pypdf signals damage through these as well as through its own errors.
        raise BadInput(f"damaged PDF: {type(exc).__name__}: {exc}", reason="corrupt") from None
    if not any(text.strip() for text in pages):
        raise BadInput(
            f"no text layer on any of {len(pages)} pages (scanned?)", reason="no_text_layer"
        )
    return pages


def _decrypt(reader: PdfReader, passwords: tuple[str, ...]) -> None:
    for password in ("", *passwords):  # many "encrypted" files open with the empty password
        if reader.decrypt(password):
            return
    raise FileNotDecryptedError("no password matched")
