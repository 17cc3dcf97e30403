"""`make demo` on a machine with neither the shared data nor the hub: the project's own
documents as the corpus (HTML and PDF), a random smoke model said to be one, and still every
stage run to an answer over gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli_stages import Summary
from pipeline.demo_model import SMOKE_LABEL
from pipeline.sample_corpus import documents
from tests.e2e.conftest import clean_env, distillery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_offline_without_shared_data_the_demo_runs_on_its_own_docs_and_a_smoke_model(
    tmp_path: Path,
) -> None:
    home = tmp_path / "demo"
    env = clean_env(tmp_path / "no-shared-data") | {"HF_HUB_OFFLINE": "1"}
    demo = distillery("demo", "--home", str(home), env=env, timeout=900)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    # Said before the run and again after it.
    assert demo.stdout.replace("\n", " ").count(SMOKE_LABEL) == 2

    summary = Summary.model_validate_json((home / "summary.json").read_text())
    assert summary.state == "done"
    assert summary.warning and SMOKE_LABEL in summary.warning
    assert summary.base_model == str(home / "smoke-model")
    assert json.loads((home / "smoke-model" / "distillery.json").read_text())["smoke"] is True
    stage = {s.name: s.counts for s in summary.stages}
    assert stage["scrape"]["documents"] == 2 * len(documents())  # an HTML page and a PDF each
    assert summary.dead_lettered == {}
    assert int(stage["extract"]["chunks"]) > 0 and int(stage["synthesize"]["pairs"]) > 0
    assert summary.dataset is not None and summary.dataset.train_n > 0
    assert summary.verdict in ("promote", "reject")
    # Random weights rarely earn a promotion; what is served follows the verdict either way.
    served = summary.served or ""
    assert served.startswith("ckpt-") if summary.verdict == "promote" else served == "base"
    assert summary.answer is not None
