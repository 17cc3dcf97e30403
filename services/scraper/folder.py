"""Local folders: every PDF and HTML file under a directory, checked by content, not name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.messages import FolderSource, RawDoc, SourceInfo
from services.scraper import core
from services.scraper.context import Context

log = logging.getLogger("scraper.folder")

SUFFIXES = {".pdf": core.PDF, ".html": core.HTML, ".htm": core.HTML}


def documents(root: Path, recursive: bool) -> list[Path]:
    """The candidate files, in a stable order."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise BadInput(f"folder {root} {what}", reason="no_such_folder")
    files = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in SUFFIXES)


def check_allowed(root: Path, roots: list[str]) -> None:
    """`root` (resolved, so no `..` or link leads out) must lie under one of `roots`."""
    if roots and not any(root.is_relative_to(Path(r).resolve()) for r in roots):
        raise BadInput(
            f"folder {root} is outside SCRAPER_FOLDER_ROOTS ({', '.join(roots)})",
            reason="folder_not_allowed",
        )


async def scrape(ctx: Context, source: FolderSource, run_id: str) -> AsyncIterator[RawDoc]:
    root = Path(source.path).expanduser().resolve()
    check_allowed(root, ctx.settings.folder_roots)
    paths = documents(root, source.recursive)
    log.info("%s: %d candidate files", root, len(paths))
    published: set[str] = set()
    for path in paths:
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:  # unreadable by the service's user, gone meanwhile
            ctx.skipped(str(path), BadInput(f"{path}: {exc.strerror}", reason="unreadable"))
            continue
        kind = core.sniff(body[:2048])
        if kind != SUFFIXES[path.suffix.lower()]:
            error = BadInput(f"{path}: its content is not what its name says", reason="mismatch")
            ctx.skipped(str(path), error)
            continue
        info = SourceInfo(kind="local", url=path.as_uri(), title=path.stem)
        doc = await ctx.publish(body, kind, info, run_id)
        if doc.doc_id not in published:  # the same file twice in a folder is one document
            published.add(doc.doc_id)
            yield doc
    log.info("%s: %d documents published", root, len(published))
