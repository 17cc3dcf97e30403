"""What `make demo` falls back on without the shared data: the project's own documents as HTML
and PDF, and, with no model reachable, a random smoke model labelled as such."""

from __future__ import annotations

import json
from pathlib import Path

import pypdf
import pytest

from pipeline.demo_model import SMOKE_LABEL, hub_reachable, smoke_model
from pipeline.sample_corpus import documents, render
from services.extractor.extract import Options, extract
from tests.support.service_rig import REPO_ROOT


def test_the_project_documents_render_as_pages_and_pdfs_the_extractor_reads(
    tmp_path: Path,
) -> None:
    docs = documents()
    assert REPO_ROOT / "README.md" in docs and REPO_ROOT / "docs" / "architecture.md" in docs
    written = render(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert len(written) == 2 * len(docs)

    pdf = tmp_path / "docs-architecture.pdf"
    text = "".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)
    assert "The worker loop" in text and "Blob store" in text
    page = (tmp_path / "docs-architecture.html").read_text()
    assert page.startswith("<!doctype html>") and "<h2>The worker loop</h2>" in page

    for path, kind in ((pdf, "application/pdf"), (tmp_path / "README.html", "text/html")):
        chunks = extract(path.read_bytes(), kind, Options()).chunks
        assert chunks and all(c.text.strip() for c in chunks), path


def test_offline_the_smoke_model_is_built_labelled_and_generates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()  # never asked offline

    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = smoke_model(tmp_path / "smoke", ["LoRA adapts a model with low-rank updates."] * 50,
                      vocab_size=300)  # fmt: skip
    assert SMOKE_LABEL in (out / "README.md").read_text()
    assert json.loads((out / "distillery.json").read_text())["smoke"] is True
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer("question: What is LoRA? answer:", return_tensors="pt")
    assert tokenizer.decode(ids["input_ids"][0]) == "question: What is LoRA? answer:"
    generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 4
    assert smoke_model(out, []) == out  # made once, then kept
