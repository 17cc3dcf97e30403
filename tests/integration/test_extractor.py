"""The extractor service on the real broker: real papers and pages to chunks, and a generated
corpus of hostile files to the DLQ, each with its reason, in time, in bounded memory, while
the service goes on serving."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline.embedded import Broker
from pipeline.settings import KafkaSettings
from tests.support.extractor_rig import ExtractorRig, run_id
from tests.support.hostile import PDF, corpus, slow_pdf

TIMEOUT_S = 6.0
PASSWORDS = ["openpassword", "hostile-test-password"]


@pytest.fixture(scope="module")
def extractor(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtractorRig]:
    env = {
        "EXTRACTOR_TIMEOUT_S": str(TIMEOUT_S),
        "EXTRACTOR_PDF_PASSWORDS": json.dumps(PASSWORDS),
        "EXTRACTOR_CONCURRENCY": "2",
    }
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    with ExtractorRig(kafka, tmp_path_factory.mktemp("extractor"), **env) as rig:
        yield rig


def summaries(rig: ExtractorRig) -> dict[str, dict]:
    """The per-document summary lines of the service's log, by doc_id."""
    lines = (json.loads(line) for line in rig.log.read_text().splitlines() if line.startswith("{"))
    return {entry["doc_id"]: entry for entry in lines if "doc_id" in entry and "seconds" in entry}


def test_real_papers_become_section_titled_chunks_with_their_pages(
    extractor: ExtractorRig, test_data: Path
) -> None:
    run = run_id()
    files = sorted((test_data / "data" / "pdfs").glob("*.pdf"))
    docs = {f.name: extractor.document(f.read_bytes(), PDF, f.name, run) for f in files}
    outcome = extractor.run(list(docs.values()))

    assert outcome.dead[docs["rumelhart1986_backprop_scanned.pdf"].doc_id].reason == "no_text_layer"
    for name, doc in docs.items():
        if name.startswith("rumelhart"):
            continue
        chunks = outcome.chunks[doc.doc_id]
        assert [c.index for c in chunks] == list(range(chunks[0].total)), name
        assert all(c.source == doc.source and c.n_tokens <= 512 for c in chunks), name
        if name.startswith("encrypted"):  # opened with the configured password
            assert chunks[0].text.startswith("Lorem ipsum dolor sit amet")
            continue
        titles = {c.section.split(" ", 1)[-1].casefold() for c in chunks if c.section}
        assert {"abstract", "introduction"} <= titles, name
        assert chunks[0].pages[0] == 1 and all(c.pages[0] <= c.pages[1] for c in chunks), name
        assert not any("References" == c.section for c in chunks), name

    summary = summaries(extractor)[docs["2106.09685v2_lora.pdf"].doc_id]
    assert summary["pages"] == 26 and summary["chunks"] == len(
        outcome.chunks[docs["2106.09685v2_lora.pdf"].doc_id]
    )
    assert summary["sections"] > 10 and summary["chars"] > 50_000
    assert extractor.metric("distillery_extractor_documents_total", outcome="ok") >= 12
    assert extractor.metric("distillery_extractor_documents_total", outcome="no_text_layer") >= 1


def test_web_pages_keep_their_headings_and_have_no_pages(
    extractor: ExtractorRig, test_data: Path
) -> None:
    run = run_id()
    blog = test_data / "data/web/pattersonconsulting/blog"
    page = blog / "evolution_of_retrieval_augmented_generation_jan_2024.html"
    doc = extractor.document(page.read_bytes(), "text/html; charset=utf-8", page.name, run)
    chunks = extractor.run([doc]).chunks[doc.doc_id]
    sections = [c.section for c in chunks]
    assert {"Introduction", "What is Retrieval Augmented Generation?", "Summary"} <= set(sections)
    assert all(c.pages is None for c in chunks)
    assert not any("Follow us" in c.text for c in chunks)  # the footer


def test_every_hostile_file_ends_in_its_reason_in_time_and_memory_and_the_next_is_served(
    extractor: ExtractorRig, test_data: Path
) -> None:
    run = run_id()
    hostile = corpus(test_data / "data" / "pdfs")
    assert len(hostile) >= 20
    docs = [extractor.document(h.data, h.content_type, h.name, run) for h in hostile]
    assert len({d.doc_id for d in docs}) == len(docs)  # no two files alike
    good = test_data / "data" / "pdfs" / "2310.03025v1_retrieval_meets_long_context.pdf"
    after = extractor.document(good.read_bytes(), PDF, good.name, run)
    outcome = extractor.run([*docs, after])

    got = {
        h.name: outcome.dead[d.doc_id].reason
        if d.doc_id in outcome.dead
        else ("chunks" if d.doc_id in outcome.chunks else "nothing")
        for h, d in zip(hostile, docs, strict=True)
    }
    assert got == {h.name: h.reason or "chunks" for h in hostile}
    seconds = {
        h.name: summaries(extractor)[d.doc_id]["seconds"]
        for h, d in zip(hostile, docs, strict=True)
    }
    assert max(seconds.values()) < TIMEOUT_S + 2, seconds
    assert outcome.chunks[after.doc_id]  # still serving
    assert extractor.process.poll() is None
    assert len(extractor.peak_rss) >= 3  # the service, the forkserver, the workers
    assert max(extractor.peak_rss.values()) < 1024**3, extractor.peak_rss


def test_a_killed_service_leaves_no_worker_behind_and_loses_nothing(
    broker: Broker, tmp_path: Path, test_data: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    with ExtractorRig(kafka, tmp_path, EXTRACTOR_TIMEOUT_S="4") as rig:
        run = run_id()
        slow = rig.document(slow_pdf(200, 400_000), PDF, "slow.pdf", run)
        paper = test_data / "data" / "pdfs" / "2310.03025v1_retrieval_meets_long_context.pdf"
        good = rig.document(paper.read_bytes(), PDF, paper.name, run)
        rig.send(slow, good)
        deadline = time.monotonic() + 30
        while len(tree := psutil.Process(rig.process.pid).children(recursive=True)) < 3:
            assert time.monotonic() < deadline, "the worker processes did not start"
            time.sleep(0.1)
        time.sleep(1.0)  # a worker is now busy on the slow document
        os.kill(rig.process.pid, signal.SIGKILL)  # the service alone, not its process group
        rig.process.wait(10)
        gone, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == [], f"left behind: {alive}"

        rig.start()  # the same group: what was not committed comes again
        outcome = rig.run([slow, good])
        assert outcome.dead[slow.doc_id].reason == "timeout"
        assert outcome.chunks[good.doc_id]
