"""The extractor service in a subprocess on the real broker: documents in, chunks and DLQ
records out, and the peak memory of each of its processes."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline import topics
from pipeline.blobstore import FileBlobStore
from pipeline.messages import DlqRecord, ParsedChunk, RawDoc, SourceInfo, decode, doc_id_of
from pipeline.settings import KafkaSettings
from tests.support.bus_harness import TopicReader
from tests.support.service_rig import ServiceRig


@dataclass
class Outcome:
    chunks: dict[str, list[ParsedChunk]]  # by doc_id, in index order
    dead: dict[str, DlqRecord]  # by doc_id


class ExtractorRig(ServiceRig):
    def __init__(self, kafka: KafkaSettings, home: Path, **env: str) -> None:
        super().__init__(
            "extractor",
            kafka,
            home / "blobs",
            home / "extractor.log",
            {topics.PARSED_TEXT: 6},
            **env,
        )
        self.store = FileBlobStore(self.blobs)
        self.chunks = TopicReader(kafka, topics.PARSED_TEXT)
        self.dlq = TopicReader(kafka, topics.dlq(self.topic))
        self.peak_rss: dict[int, int] = {}  # pid -> bytes, the service and its workers
        self._sampling = threading.Event()

    def __enter__(self) -> ExtractorRig:
        self.start()
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def close(self) -> None:
        self._sampling.set()
        self.chunks.close()
        self.dlq.close()

    def document(self, data: bytes, content_type: str, name: str, run_id: str) -> RawDoc:
        """Store the bytes and describe them as the scraper would."""
        uri = self.store.put(data)
        return RawDoc(
            doc_id=doc_id_of(data),
            uri=uri,
            content_type=content_type,
            size=len(data),
            source=SourceInfo(kind="local", url=f"file:///corpus/{name}", title=name),
            run_id=run_id,
        )

    def run(self, docs: list[RawDoc], timeout_s: float = 180.0) -> Outcome:
        """Send the documents, wait until all are committed, return what came of them."""
        self.wait(self.send(*docs), timeout_s)
        run_ids = {d.run_id for d in docs}
        # Everything was produced (acks=all) before the offsets were committed: reading to
        # the ends must get it all, and a slow read must fail here, not as a missing chunk.
        assert self.chunks.read_to_end(timeout_s=120), "parsed-text not read to its end"
        assert self.dlq.read_to_end(timeout_s=120), "the DLQ not read to its end"
        chunks: dict[str, list[ParsedChunk]] = {}
        for record in self.chunks.records:
            chunk = decode(ParsedChunk, record.value)
            if chunk.run_id in run_ids:
                chunks.setdefault(chunk.doc_id, []).append(chunk)
        dead = {
            r.key.decode(): decode(DlqRecord, r.value)
            for r in self.dlq.records
            if r.key.decode() in {d.doc_id for d in docs}
        }
        return Outcome({k: sorted(v, key=lambda c: c.index) for k, v in chunks.items()}, dead)

    def _sample(self) -> None:
        """Every 20 ms, the resident memory of the service and all its children."""
        while not self._sampling.wait(0.02):
            if self.process is None or self.process.poll() is not None:
                continue
            try:
                root = psutil.Process(self.process.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peak_rss[proc.pid] = max(rss, self.peak_rss.get(proc.pid, 0))


def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:8]}"
