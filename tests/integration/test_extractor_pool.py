"""The worker processes' limits, on real processes: memory, time, and a worker killed from
outside; after each, the pool serves the next document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline.errors import BadInput, Retryable
from services.extractor.extract import Options
from services.extractor.pool import Extractors
from tests.support.hostile import PDF, SENTENCE, slow_pdf, stream, text_pdf

MiB = 1024 * 1024


@pytest.fixture
def pool() -> Iterator[Extractors]:
    extractors = Extractors(1, 320 * MiB, 4.0, Options())
    yield extractors
    extractors.close()


def reason(pool: Extractors, data: bytes) -> str:
    try:
        asyncio.run(pool.extract(data, PDF))
    except (BadInput, Retryable) as exc:
        return exc.reason
    return "chunks"


def served(pool: Extractors) -> bool:
    result = asyncio.run(pool.extract(text_pdf([SENTENCE]), PDF))
    return result.chunks[0].text == SENTENCE


def test_a_document_past_the_memory_limit_is_too_large(pool: Extractors) -> None:
    # One 70 MB string: under pypdf's stream limits, over this worker's 320 MiB.
    hog = text_pdf(
        ["x"], content=lambda _: stream(b"BT (" + b"a" * 70_000_000 + b") Tj ET", compress=True)
    )
    assert reason(pool, hog) == "too_large"
    assert served(pool)


def test_a_document_past_the_time_limit_is_killed_in_time(pool: Extractors) -> None:
    start = time.monotonic()
    assert reason(pool, slow_pdf(200, 400_000)) == "timeout"
    assert time.monotonic() - start < 4.0 + 2
    assert served(pool)


def test_a_worker_killed_from_outside_is_retryable_and_replaced(pool: Extractors) -> None:
    async def kill_the_worker_midway() -> str:
        job = asyncio.ensure_future(pool.extract(slow_pdf(200, 400_000), PDF))
        await asyncio.sleep(1.0)
        # The workers are the forkserver's children (this process has others: the broker).
        for child in psutil.Process().children():
            if "forkserver" in " ".join(child.cmdline()):
                for worker in child.children():
                    worker.kill()
        try:
            await job
        except Retryable as exc:
            return exc.reason
        return "not interrupted"

    assert asyncio.run(kill_the_worker_midway()) == "worker_died"
    assert served(pool)


def test_reasons_survive_the_trip_from_the_worker(pool: Extractors, test_data: Path) -> None:
    scanned = (test_data / "data/pdfs/rumelhart1986_backprop_scanned.pdf").read_bytes()
    assert reason(pool, scanned) == "no_text_layer"
