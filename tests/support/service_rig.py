"""A service in a subprocess on the real broker, reading its own input topic: the shape every
service's integration tests share. Subclasses add how to submit work and read what came out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline import bus, topics
from pipeline.embedded import free_port
from pipeline.messages import Message, encode
from pipeline.settings import KafkaSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceRig:
    """`python -m services.<name>` with a unique input topic and group; a context manager."""

    def __init__(
        self,
        name: str,
        kafka: KafkaSettings,
        blobs: Path,
        log: Path,
        outputs: dict[str, int],
        partitions: int = 1,
        **env: str,
    ) -> None:
        self.name = name
        self.kafka = kafka
        prefix = name.upper()
        self.topic = f"{name}-in-{uuid.uuid4().hex[:8]}"
        self.group = f"{name}-{uuid.uuid4().hex[:8]}"
        self.partitions = partitions
        bus.ensure_topics(kafka, {self.topic: partitions, topics.dlq(self.topic): 1, **outputs})
        self.blobs = blobs
        self.log = log
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "BLOB_STORE_URI": blobs.as_uri(),
            f"{prefix}_INPUT_TOPIC": self.topic,
            f"{prefix}_GROUP_ID": self.group,
            f"{prefix}_COMMIT_INTERVAL_S": "0.2",
            f"{prefix}_METRICS_PORT": str(free_port()),
            **env,
        }
        self.metrics_port = self.env[f"{prefix}_METRICS_PORT"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            # Its own process group: a kill takes its children with it, as a container's would.
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
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
        """SIGTERM: the service exits 0 and leaves no process of its group behind."""
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(timeout_s) == 0
        # Zombies, dead and waiting for init to reap them, do not count.
        group = subprocess.run(
            ["ps", "-o", "stat=,cmd=", "-g", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
        alive = [line for line in group if not line.lstrip().startswith("Z")]
        assert alive == [], f"the {self.name} left processes behind: {alive}"

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

    def close(self) -> None:
        """Release what a subclass holds (topic readers)."""

    def __enter__(self) -> ServiceRig:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def send(self, *messages: Message) -> int:
        """Publish to the input topic; the offset of the last one."""
        producer = bus.producer(self.kafka)
        try:
            futures = [producer.send(self.topic, key=m.key(), value=encode(m)) for m in messages]
            return max(f.get(30).offset for f in futures)
        finally:
            producer.close()

    def done(self, offset: int) -> bool:
        return bus.committed(self.kafka, self.group).get(TopicPartition(self.topic, 0), -1) > offset

    def wait(self, offset: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.done(offset):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the {self.name} exited ({self.process.returncode}): {self.log}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"input at offset {offset} not done in {timeout_s}s")
            time.sleep(0.2)

    def drained(self) -> bool:
        """Every partition of the input topic committed to its end."""
        reader = bus.consumer(self.kafka, group_id=None)
        try:
            ends = bus.end_offsets(reader, bus.partitions_of(reader, self.topic))
        finally:
            reader.close()
        committed = bus.committed(self.kafka, self.group)
        return all(committed.get(tp, 0) >= end for tp, end in ends.items())

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the service's /metrics endpoint (0 when it has none yet)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return 0.0
