"""The demo pipeline end to end, as `make demo` runs it: `distillery demo` on the embedded
broker, every service a process of its own under the supervisor, the 13 shared PDFs and
stories260K. Its summary (summary.json) has the counts of every stage: all the papers
scraped, the scanned and the encrypted one dead-lettered with their reasons, chunks, pairs, a
curated dataset and a LoRA run that lowered the held-out loss, a promotion, and an answer from
the promoted adapter over gRPC."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.embedded import SERVICES
from tests.e2e.conftest import Demo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_the_demo_takes_the_shared_papers_to_a_served_adapter(
    test_data: Path, demo_run: Demo
) -> None:
    home, summary = demo_run.home, demo_run.summary
    assert summary.state == "done"
    stage = {s.name: s.counts for s in summary.stages}
    assert list(stage) == ["start the stack", "scrape", "extract", "synthesize", "train",
                           "evaluate", "serve"]  # fmt: skip
    # Each service ran as a process of its own (the supervisor's log for each).
    assert {log.name for log in (home / "logs").glob("*-0.log")} == {f"{s}-0.log" for s in SERVICES}

    pdfs = sorted((test_data / "data" / "pdfs").glob("*.pdf"))
    assert stage["scrape"]["documents"] == len(pdfs) == 13
    # Nothing was delivered twice in a run that nothing disturbed.
    assert not any(v for c in stage.values() for k, v in c.items() if k.endswith("_replayed"))
    assert summary.dead_lettered == {
        "rumelhart1986_backprop_scanned.pdf": "no_text_layer",
        "encrypted_libreoffice_writer_password.pdf": "encrypted_no_password",
    }
    good = len(pdfs) - len(summary.dead_lettered)
    assert stage["extract"]["dead_lettered"] == 2
    assert int(stage["extract"]["chunks"]) >= 10 * good  # papers of 13 to 68 pages
    assert int(stage["synthesize"]["pairs"]) >= int(stage["extract"]["chunks"])
    train = stage["train"]
    assert (
        0
        < int(train["train_pairs"]) + int(train["eval_pairs"])
        <= int(stage["synthesize"]["pairs"])
    )
    assert int(train["eval_pairs"]) > 0 and int(train["steps"]) > 0
    assert float(train["eval_loss_after"]) < float(train["eval_loss_before"])
    assert summary.dataset is not None and summary.dataset.train_n == train["train_pairs"]
    assert summary.verdict == stage["evaluate"]["verdict"] == "promote"
    assert summary.served is not None and summary.served.startswith("ckpt-")
    assert summary.answer and stage["serve"]["answer_chars"] == len(summary.answer)
    assert summary.wall_s >= sum(s.seconds for s in summary.stages)
