"""Pairs for the curation tests: made up one by one, or mined from the real papers by the
synthesizer's reading-comprehension generator (every task kind, real provenance)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from pipeline.messages import GeneratorInfo, Pair, SourceInfo, chunk_id_of, pair_id_of
from services.synthesizer import reading
from tests.support.synthesizer_rig import paper_chunks

LLAMA = GeneratorInfo(
    provider="groq", model="llama3-70b-8192", prompt_id="triples-v1", prompt_hash="a" * 64,
    temperature=0.7, terms="llama3",
)  # fmt: skip


def make_pair(
    instruction: str,
    output: str = "An answer.",
    *,
    doc: str = "doc",
    index: int = 0,
    input: str = "",
    task: str = "qa",
    generator: GeneratorInfo = LLAMA,
    license: str | None = "CC BY 4.0",
) -> Pair:
    doc_id = hashlib.sha256(doc.encode()).hexdigest()
    return Pair(
        pair_id=pair_id_of(instruction, input, output),
        chunk_id=chunk_id_of(doc_id, index),
        doc_id=doc_id,
        instruction=instruction,
        input=input,
        output=output,
        task=task,
        generator=generator,
        license=license,
        run_id="run-test",
        source=SourceInfo(kind="arxiv", url=f"https://arxiv.org/abs/{doc}", title=doc.title(),
                          license=license),
    )  # fmt: skip


@cache
def paper_pairs(pdfs: Path) -> tuple[Pair, ...]:
    """What the reading-comprehension synthesizer publishes for the real papers."""
    info = GeneratorInfo(
        provider="reading-comprehension", model="reading-comprehension",
        prompt_id="reading-comprehension-v1", prompt_hash="b" * 64, temperature=0.0, terms="none",
    )  # fmt: skip
    return tuple(
        triple.pair(chunk, info)
        for chunk in paper_chunks(pdfs)
        for triple in reading.mine(chunk.text, section=chunk.section, title=chunk.source.title)
    )
