"""Chunks to feed the synthesizer (made up, or extracted from the real papers), and the service
in subprocesses on the real broker: N replicas in one group, pairs and DLQ records out."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

from pipeline import topics
from pipeline.embedded import free_port
from pipeline.messages import DlqRecord, Pair, ParsedChunk, SourceInfo, chunk_id_of, decode
from pipeline.settings import KafkaSettings
from services.extractor.extract import Options, extract
from tests.support.bus_harness import TopicReader
from tests.support.service_rig import REPO_ROOT, ServiceRig

#: The shared PDFs that are papers with a text layer (the scanned and encrypted ones are not).
NOT_PAPERS = ("rumelhart1986_backprop_scanned.pdf", "encrypted_libreoffice_writer_password.pdf")


def chunk(
    text: str,
    *,
    doc: str = "doc",
    index: int = 0,
    total: int = 1,
    run_id: str = "run-test",
    section: str | None = "3 Method",
    title: str | None = "A Paper",
    license: str | None = "CC BY 4.0",
) -> ParsedChunk:
    doc_id = hashlib.sha256(doc.encode()).hexdigest()
    return ParsedChunk(
        chunk_id=chunk_id_of(doc_id, index),
        doc_id=doc_id,
        index=index,
        total=total,
        text=text,
        section=section,
        pages=(1, 1),
        n_tokens=len(text.split()),
        source=SourceInfo(
            kind="arxiv", url=f"https://arxiv.org/abs/{doc}", title=title, license=license
        ),  # fmt: skip
        run_id=run_id,
    )


@cache
def paper_chunks(pdfs: Path, run_id: str = "run-papers") -> tuple[ParsedChunk, ...]:
    """Every chunk of the real papers, as the extractor publishes them."""
    out = []
    for path in sorted(pdfs.glob("*.pdf")):
        if path.name in NOT_PAPERS:
            continue
        data = path.read_bytes()
        doc_id = hashlib.sha256(data).hexdigest()
        chunks = extract(data, "application/pdf", Options()).chunks
        source = SourceInfo(kind="local", url=path.as_uri(), title=path.stem, license="arXiv")
        out += [
            ParsedChunk(
                chunk_id=chunk_id_of(doc_id, i),
                doc_id=doc_id,
                index=i,
                total=len(chunks),
                text=c.text,
                section=c.section,
                pages=c.pages,
                n_tokens=c.n_tokens,
                source=source,
                run_id=run_id,
            )
            for i, c in enumerate(chunks)
        ]
    return tuple(out)


class SynthesizerRig(ServiceRig):
    """`replicas` processes of the synthesizer in one consumer group."""

    def __init__(
        self, kafka: KafkaSettings, home: Path, replicas: int = 1, partitions: int = 1, **env: str
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(
            "synthesizer",
            kafka,
            home / "blobs",
            home / "synthesizer.log",
            {topics.PAIRS: 6},
            partitions=partitions,
            **env,
        )
        self.replicas = replicas
        self.others: list[subprocess.Popen[bytes]] = []
        self.pairs = TopicReader(kafka, topics.PAIRS)
        self.dlq = TopicReader(kafka, topics.dlq(self.topic))

    def start(self) -> None:
        super().start()  # replica 0: self.process, its metrics on self.metrics_port
        for n in range(1, self.replicas):
            env = {**self.env, "SYNTHESIZER_METRICS_PORT": str(free_port())}
            with open(self.log.with_suffix(f".{n}.log"), "ab") as out:
                self.others.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "services.synthesizer"],
                        env=env,
                        cwd=REPO_ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def stop(self) -> None:
        for process in self.others:
            if process.poll() is None:
                process.terminate()
        for process in self.others:
            process.wait(30)
        super().stop()

    def close(self) -> None:
        self.pairs.close()
        self.dlq.close()

    def run(
        self, chunks: list[ParsedChunk], timeout_s: float = 120.0
    ) -> tuple[list[Pair], list[DlqRecord]]:
        """Send the chunks, wait until every partition is committed, return their pairs and
        dead letters."""
        self.send(*chunks)
        deadline = time.monotonic() + timeout_s
        while not self.drained():
            for process in [self.process, *self.others]:
                if process is not None and process.poll() is not None:
                    raise AssertionError(f"a synthesizer exited ({process.returncode}): {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(chunks)} chunks not all handled in {timeout_s}s")
            time.sleep(0.2)
        runs = {c.run_id for c in chunks}
        self.pairs.read_to_end()
        self.dlq.read_to_end()
        pairs = [p for r in self.pairs.records if (p := decode(Pair, r.value)).run_id in runs]
        dead = [decode(DlqRecord, r.value) for r in self.dlq.records]
        return pairs, dead


def env_for(base_url: str, key: str, **extra: str) -> dict[str, str]:
    """The environment of a synthesizer using an OpenAI-compatible server."""
    return {
        "SYNTHESIZER_GENERATOR": "openai-compatible",
        "SYNTHESIZER_BASE_URL": base_url,
        "SYNTHESIZER_API_KEY": key,
        "SYNTHESIZER_MODEL": "fake-model",
        "PYTHONUNBUFFERED": "1",
        **{k: v for k, v in os.environ.items() if k == "DISTILLERY_TEST_DATA"},
        **extra,
    }
