"""One document through extract(): options, the tokenizer, settings that cannot work."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer

from pipeline.errors import BadInput, Retryable
from services.extractor.config import ExtractorSettings
from services.extractor.extract import Options, extract
from tests.support.hostile import SENTENCE, text_pdf

LORA = "data/pdfs/2106.09685v2_lora.pdf"


def test_chunks_counted_with_the_base_models_tokenizer_fit_its_budget(test_data: Path) -> None:
    tokenizer = test_data / "models" / "llama2-tokenizer"
    data = (test_data / LORA).read_bytes()
    result = extract(
        data, "application/pdf", Options(max_tokens=256, overlap=32, tokenizer=str(tokenizer))
    )
    exact = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    for chunk in result.chunks:
        assert chunk.n_tokens == len(exact.encode(chunk.text, add_special_tokens=False).ids)
    # Counted piece by piece and then as a whole, a chunk may come out a few tokens over.
    assert max(c.n_tokens for c in result.chunks) <= 256 * 1.05
    approx = extract(data, "application/pdf", Options(max_tokens=256, overlap=32))
    assert len(result.chunks) != len(approx.chunks)  # the counts really differ


def test_the_references_can_be_kept(test_data: Path) -> None:
    data = (test_data / LORA).read_bytes()
    kept = extract(data, "application/pdf", Options(drop_references=False))
    dropped = extract(data, "application/pdf", Options())
    assert "References" in {c.section for c in kept.chunks}
    assert kept.chars > dropped.chars and kept.sections == dropped.sections + 1


def test_unsupported_content_types_are_refused() -> None:
    with pytest.raises(BadInput) as caught:
        extract(b"\x89PNG\r\n", "image/png", Options())
    assert caught.value.reason == "unsupported"


def test_reasons_survive_pickling_across_processes() -> None:
    # The worker pool pickles exceptions on their way back; these are our own bytes.
    bad = pickle.loads(pickle.dumps(BadInput("x", reason="no_text_layer")))  # noqa: S301
    late = pickle.loads(pickle.dumps(Retryable("y", reason="worker_died", retry_after=2.0)))  # noqa: S301
    assert (bad.reason, late.reason, late.retry_after) == ("no_text_layer", "worker_died", 2.0)


def test_settings_that_cannot_work_fail_at_start(tmp_path: Path) -> None:
    env = {"kafka": {"bootstrap_servers": "x:9092"}}
    with pytest.raises(ValidationError, match="chunk_overlap"):
        ExtractorSettings(chunk_tokens=64, chunk_overlap=64, **env)
    with pytest.raises(ValidationError, match="tokenizer"):
        ExtractorSettings(tokenizer=tmp_path, **env)
    settings = ExtractorSettings(pdf_passwords=["a,b", "c"], **env)
    assert settings.options.passwords == ("a,b", "c")


def test_pages_without_text_in_a_document_with_text_are_counted() -> None:
    whole = extract(text_pdf([SENTENCE, SENTENCE]), "application/pdf", Options())
    mixed = extract(text_pdf([SENTENCE, "", SENTENCE]), "application/pdf", Options())
    assert (whole.pages, whole.pages_without_text) == (2, 0)
    assert (mixed.pages, mixed.pages_without_text) == (3, 1)
