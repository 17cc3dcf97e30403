"""The scraper service in a subprocess on the real broker, and what it publishes per run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline import bus, topics
from pipeline.embedded import free_port
from pipeline.messages import DlqRecord, RawDoc, SourceRequest, SourceSpec, decode, encode
from pipeline.settings import KafkaSettings
from tests.support.bus_harness import TopicReader

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    docs: list[RawDoc]
    dead: list[DlqRecord]

    def ids(self) -> set[str]:
        """arXiv ids with version, or URLs, of the documents published."""
        return {d.source.external_id or d.source.url for d in self.docs}


class ScraperRig:
    """A scraper process reading its own `sources` topic; use as a context manager."""

    def __init__(self, kafka: KafkaSettings, blobs: Path, log: Path, **env: str) -> None:
        self.kafka = kafka
        self.topic = f"sources-{uuid.uuid4().hex[:8]}"
        self.group = f"scraper-{uuid.uuid4().hex[:8]}"
        bus.ensure_topics(kafka, {self.topic: 1, topics.dlq(self.topic): 1, topics.RAW_DOCS: 6})
        self.blobs = blobs
        self.log = log
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "BLOB_STORE_URI": blobs.as_uri(),
            "SCRAPER_INPUT_TOPIC": self.topic,
            "SCRAPER_GROUP_ID": self.group,
            "SCRAPER_COMMIT_INTERVAL_S": "0.2",
            "SCRAPER_POLITENESS_DELAY_S": "0",
            "SCRAPER_FETCH_ATTEMPTS": "2",
            "SCRAPER_FETCH_BACKOFF_S": "0.1",
            "SCRAPER_METRICS_PORT": str(free_port()),
            **env,
        }
        self.docs = TopicReader(kafka, topics.RAW_DOCS)
        self.dlq = TopicReader(kafka, topics.dlq(self.topic))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            # Its own process group: a kill takes the browser with it, as a container's would.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.scraper"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout_s: float = 20.0) -> None:
        """SIGTERM: the scraper abandons its run after the grace, closes the browser, exits 0."""
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(timeout_s) == 0
        # Its browser went with it: nothing of its process group is alive (zombies, dead and
        # waiting for init to reap them, do not count).
        group = subprocess.run(
            ["ps", "-o", "stat=,cmd=", "-g", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
        alive = [line for line in group if not line.lstrip().startswith("Z")]
        assert alive == [], f"the scraper left processes behind: {alive}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            finally:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)  # what it left, if anything
                except ProcessLookupError:
                    pass

    def __enter__(self) -> ScraperRig:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.docs.close()
        self.dlq.close()

    def submit(self, source: SourceSpec, run_id: str | None = None) -> tuple[str, int]:
        request = SourceRequest(run_id=run_id or f"run-{uuid.uuid4().hex[:8]}", source=source)
        producer = bus.producer(self.kafka)
        try:
            sent = producer.send(self.topic, key=request.key(), value=encode(request)).get(30)
        finally:
            producer.close()
        return request.run_id, sent.offset

    def done(self, offset: int) -> bool:
        return bus.committed(self.kafka, self.group).get(TopicPartition(self.topic, 0), -1) > offset

    def wait(self, offset: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.done(offset):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the scraper exited ({self.process.returncode}): {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"request at offset {offset} not done in {timeout_s}s")
            time.sleep(0.2)

    def outcome(self, run_id: str) -> Outcome:
        self.docs.read_to_end()
        self.dlq.read_to_end()
        docs = [
            d for d in (decode(RawDoc, r.value) for r in self.docs.records) if d.run_id == run_id
        ]
        dead = [decode(DlqRecord, r.value) for r in self.dlq.records if r.key == run_id.encode()]
        return Outcome(docs, dead)

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the service's /metrics endpoint (0 when it has none yet)."""
        port = self.env["SCRAPER_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return 0.0

    def run(self, source: SourceSpec, run_id: str | None = None) -> Outcome:
        """Submit a request, wait until the scraper has committed it, return what it gave."""
        run_id, offset = self.submit(source, run_id)
        self.wait(offset)
        return self.outcome(run_id)
