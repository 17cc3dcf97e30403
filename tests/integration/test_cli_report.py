"""`distillery report` against a blob store holding an evaluation: the summary, the JSON, the
HTML page written out, the list of evaluations, and an unknown checkpoint named as such."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.blobstore import open_store
from pipeline.settings import BlobSettings
from services.evaluator.report import render_html
from tests.support.reports import HOSTILE, sample_report
from tests.support.service_rig import REPO_ROOT

pytestmark = pytest.mark.integration


def distillery(*args: str, blobs: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOB_STORE_URI": blobs.as_uri(), "COLUMNS": "200"}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "pipeline.cli", "report", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_report_shows_lists_exports_and_refuses_what_it_does_not_have(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    store = open_store(BlobSettings(store_uri=blobs.as_uri()))
    report = sample_report(reason=f"domain/rougeL improved [bold]{HOSTILE}")
    store.put_as("evaluations/ckpt-1/report.html", render_html(report).encode())
    store.put_as("evaluations/ckpt-1/report.json", report.model_dump_json().encode())

    shown = distillery("ckpt-1", blobs=blobs)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1].startswith("promote: domain/rougeL improved [bold]<script>")  # not markup
    assert any("domain/rougeL" in line and "+0.0700" in line and "[+0.0300, +0.1000]" in line
               for line in lines)  # fmt: skip
    assert any("perplexity/bits_per_byte ↓" in line for line in lines)
    assert "most improved (domain/rougeL)" in shown.stdout
    assert f"report: {store.uri('evaluations/ckpt-1/report.html')}" in shown.stdout

    as_json = distillery("ckpt-1", "--json", blobs=blobs)
    assert json.loads(as_json.stdout) == json.loads(report.model_dump_json())

    page = tmp_path / "out" / "page.html"
    written = distillery("ckpt-1", "--json", "--html", str(page), blobs=blobs)
    assert written.returncode == 0 and page.read_text() == render_html(report)
    assert json.loads(written.stdout) == json.loads(as_json.stdout)

    listed = distillery(blobs=blobs)
    assert "ckpt-1" in listed.stdout and "promote" in listed.stdout

    unknown = distillery("ckpt-2", blobs=blobs)
    assert unknown.returncode == 1
    assert "no evaluation of 'ckpt-2'" in unknown.stderr and "evaluated: ckpt-1" in unknown.stderr
    bad = distillery("../x", blobs=blobs)
    assert bad.returncode == 1 and "not one path segment" in bad.stderr
