"""The scraper service in a subprocess on the real broker, and what it publishes per run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline import topics
from pipeline.messages import DlqRecord, RawDoc, SourceRequest, SourceSpec, decode
from pipeline.settings import KafkaSettings
from tests.support.bus_harness import TopicReader
from tests.support.service_rig import ServiceRig


@dataclass
class Outcome:
    docs: list[RawDoc]
    dead: list[DlqRecord]

    def ids(self) -> set[str]:
        """arXiv ids with version, or URLs, of the documents published."""
        return {d.source.external_id or d.source.url for d in self.docs}


class ScraperRig(ServiceRig):
    """A scraper process reading its own `sources` topic; use as a context manager."""

    def __init__(self, kafka: KafkaSettings, blobs: Path, log: Path, **env: str) -> None:
        defaults = {
            "SCRAPER_POLITENESS_DELAY_S": "0",
            "SCRAPER_FETCH_ATTEMPTS": "2",
            "SCRAPER_FETCH_BACKOFF_S": "0.1",
        }
        super().__init__("scraper", kafka, blobs, log, {topics.RAW_DOCS: 6}, **defaults | env)
        self.docs = TopicReader(kafka, topics.RAW_DOCS)
        self.dlq = TopicReader(kafka, topics.dlq(self.topic))

    def close(self) -> None:
        self.docs.close()
        self.dlq.close()

    def __enter__(self) -> ScraperRig:
        self.start()
        return self

    def submit(self, source: SourceSpec, run_id: str | None = None) -> tuple[str, int]:
        request = SourceRequest(run_id=run_id or f"run-{uuid.uuid4().hex[:8]}", source=source)
        return request.run_id, self.send(request)

    def outcome(self, run_id: str) -> Outcome:
        self.docs.read_to_end()
        self.dlq.read_to_end()
        docs = [
            d for d in (decode(RawDoc, r.value) for r in self.docs.records) if d.run_id == run_id
        ]
        dead = [decode(DlqRecord, r.value) for r in self.dlq.records if r.key == run_id.encode()]
        return Outcome(docs, dead)

    def run(self, source: SourceSpec, run_id: str | None = None) -> Outcome:
        """Submit a request, wait until the scraper has committed it, return what it gave."""
        run_id, offset = self.submit(source, run_id)
        self.wait(offset)
        return self.outcome(run_id)
