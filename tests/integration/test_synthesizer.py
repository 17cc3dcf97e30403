"""The synthesizer service on the real broker: replicas in one group over 12 partitions give
the same pairs as one, reading-comprehension pairs from the real papers carry their provenance,
a spent budget dead-letters the rest of the run, and a bad key stops it at start-up."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from pipeline.embedded import Broker
from pipeline.settings import KafkaSettings
from services.synthesizer import reading, sentences
from tests.support.fake_llm import FakeLLM
from tests.support.service_rig import REPO_ROOT
from tests.support.synthesizer_rig import SynthesizerRig, env_for, paper_chunks

pytestmark = pytest.mark.integration


def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:8]}"


def papers(test_data: Path, run: str, names: tuple[str, ...] = ()) -> list:
    chunks = paper_chunks(test_data / "data" / "pdfs")
    picked = [c for c in chunks if not names or any(n in c.source.url for n in names)]
    return [c.model_copy(update={"run_id": run}) for c in picked]


def test_three_replicas_over_twelve_partitions_give_the_same_pairs_as_one(
    broker: Broker, test_data: Path, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    names = ("lora", "qlora", "flashattention")
    results = {}
    with FakeLLM(latency=0.02) as fake:
        env = env_for(fake.openai_base_url, fake.key, SYNTHESIZER_CONCURRENCY="8")
        for replicas in (1, 3):
            chunks = papers(test_data, run_id(), names)
            home = tmp_path / f"x{replicas}"
            with SynthesizerRig(kafka, home, replicas, partitions=12, **env) as rig:
                before = fake.stats.requests
                pairs, dead = rig.run(chunks, timeout_s=180)
                requests = fake.stats.requests - before
            results[replicas] = (chunks, pairs, dead, requests)

    one, three = results[1], results[3]
    assert len(one[0]) == len(three[0]) > 100
    for chunks, pairs, dead, requests in (one, three):
        assert dead == []
        assert requests == len(chunks)  # every chunk asked once: none lost, none doubled
        assert {p.chunk_id for p in pairs} <= {c.chunk_id for c in chunks}
    ids = {n: {p.pair_id for p in r[1]} for n, r in results.items()}
    assert len(ids[1]) > 2 * len(one[0])
    assert ids[1] == ids[3]
    # The same chunks gave pairs.
    assert {p.chunk_id for p in one[1]} == {p.chunk_id for p in three[1]}


def test_reading_comprehension_pairs_from_the_real_papers(
    broker: Broker, test_data: Path, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    chunks = papers(test_data, run_id())
    by_id = {c.chunk_id: c for c in chunks}
    with SynthesizerRig(kafka, tmp_path, PYTHONUNBUFFERED="1") as rig:
        pairs, dead = rig.run(chunks, timeout_s=240)
        made = sum(rig.metric("distillery_synthesizer_pairs_total", task=t) for t in reading.TASKS)
        ungrounded = rig.metric("distillery_synthesizer_rejected_total", reason="ungrounded")
    assert dead == [] and made == len(pairs) > len(chunks)
    assert ungrounded == 0  # mined outputs are spans of their chunk
    tasks = Counter(p.task for p in pairs)
    print("reading-comprehension pairs by task:", dict(tasks))
    assert set(tasks) == set(reading.TASKS)  # every kind of task, paraphrases the rarest
    assert sum(n >= 10 for n in tasks.values()) >= 9
    code = b"".join(Path(m.__file__).read_bytes() for m in (reading, sentences))
    digest = hashlib.sha256(code).hexdigest()
    for pair in pairs:
        source = by_id[pair.chunk_id]
        assert pair.output in f"{source.source.title}\n{source.section}\n{source.text}"
        assert pair.generator.provider == "reading-comprehension"
        assert pair.generator.prompt_hash == digest and pair.generator.terms == "none"
        assert pair.license == "arXiv" and pair.doc_id == source.doc_id
    # Tables, author lists and transcripts give none (the miner refuses what is not prose).
    assert len({p.chunk_id for p in pairs}) > 0.65 * len(chunks)


def test_a_spent_budget_dead_letters_the_rest_of_the_run(
    broker: Broker, test_data: Path, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    chunks = papers(test_data, run_id(), ("lora",))[:12]
    with FakeLLM() as fake:
        env = env_for(
            fake.openai_base_url,
            fake.key,
            SYNTHESIZER_BUDGET_TOKENS="6000",
            SYNTHESIZER_MAX_TOKENS="512",
            SYNTHESIZER_CONCURRENCY="1",  # one at a time: the count below is exact
        )
        with SynthesizerRig(kafka, tmp_path, **env) as rig:
            pairs, dead = rig.run(chunks)
            tokens = rig.metric("distillery_synthesizer_tokens_total", kind="prompt")
    assert pairs and dead
    assert {d.reason for d in dead} == {"budget_exhausted"}
    assert len({p.chunk_id for p in pairs}) + len(dead) <= len(chunks)
    assert 0 < tokens <= 6000


def test_a_wrong_key_stops_the_service_at_start_up(broker: Broker) -> None:
    with FakeLLM() as fake:
        env = env_for(fake.openai_base_url, "wrong-key", KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)
        done = subprocess.run(
            [sys.executable, "-m", "services.synthesizer"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert "refused the API key" in done.stderr
