"""Pages/s over the shared PDFs: the extractor's own extraction against a bare pypdf loop.

    python -m benchmarks.extract

Service: `Extractors` as the service runs it, 2 worker processes (EXTRACTOR_CONCURRENCY's
default), every document submitted at once, text cleaned, sections found and chunks cut:
what reaches `parsed-text`, minus the broker. The pool is started and warmed before timing,
as a running service's is. Baseline: `PdfReader(f).pages[i].extract_text()` for every page of
every file in one process, what LangChain's `PyPDFLoader` (the original project's loader)
does. Same files, same run, alternating, REPEATS times; medians count.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

from pypdf import PdfReader

from pipeline.errors import BadInput
from services.extractor.extract import Extraction, Options
from services.extractor.pool import Extractors

DATA = Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared")) / "data" / "pdfs"
REPEATS = int(os.environ.get("BENCH_EXTRACT_REPEATS", "3"))
PASSWORD = "openpassword"  # noqa: S105 - the encrypted sample's, documented beside it


def baseline(files: list[bytes]) -> int:
    pages = 0
    for data in files:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt(PASSWORD)
        for page in reader.pages:
            page.extract_text()
            pages += 1
    return pages


async def service(pool: Extractors, files: list[bytes]) -> list[Extraction | None]:
    async def one(data: bytes) -> Extraction | None:
        try:
            return await pool.extract(data, "application/pdf")
        except BadInput:
            return None  # the scanned paper: no text layer, its pages read all the same

    return await asyncio.gather(*(one(data) for data in files))


def main() -> None:
    files = [p.read_bytes() for p in sorted(DATA.glob("*.pdf"))]
    if not files:
        sys.exit(f"no PDFs in {DATA}: set DISTILLERY_TEST_DATA")
    pool = Extractors(2, 1024**3, 600, Options(passwords=(PASSWORD,)))
    try:
        asyncio.run(service(pool, files[:2]))  # both workers up and warm
        ours, theirs, results = [], [], []
        pages = 0
        for _ in range(REPEATS):
            start = time.perf_counter()
            pages = baseline(files)
            theirs.append(pages / (time.perf_counter() - start))
            start = time.perf_counter()
            results = asyncio.run(service(pool, files))
            ours.append(pages / (time.perf_counter() - start))
            print(f"service {ours[-1]:.1f} pages/s, baseline {theirs[-1]:.1f}", file=sys.stderr)
    finally:
        pool.close()
    done = [r for r in results if r is not None]
    figures = {
        "pages_per_s": round(statistics.median(ours), 1),
        "baseline_pages_per_s": round(statistics.median(theirs), 1),
        "speedup": round(statistics.median(ours) / statistics.median(theirs), 2),
        "docs": len(files),
        "pages": pages,
        "failed": len(files) - len(done),
        "chars_per_doc": round(statistics.mean(r.chars for r in done)),
        "chunks_per_doc": round(statistics.mean(len(r.chunks) for r in done), 1),
        "repeats": REPEATS,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
