"""The `distillery` CLI run in subprocesses: up, status, topics, tail and down on a real stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from pipeline import bus, monitor, topics
from pipeline.cli_common import read_all
from pipeline.embedded import SERVICES, Broker, pid_alive
from pipeline.messages import DlqRecord, FolderSource, SourceRequest, decode, encode
from pipeline.settings import KafkaSettings

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTILLERY_HOME": str(home), "COLUMNS": "200"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (the supervisor's broker), read from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def rows(output: str, width: int) -> dict[str, list[str]]:
    """The rows of the rich tables in `output` that have `width` cells, by first cell."""
    table = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == width:
            table[cells[0]] = cells[1:]
    return table


def topic_rows(output: str) -> dict[str, list[str]]:
    """topic -> [partitions, messages, dlq]"""
    return rows(output, 4)


def group_rows(output: str) -> dict[str, list[str]]:
    """group -> [topic, committed, end, lag]"""
    return rows(output, 5)


@dataclass
class Stack:
    home: Path
    up: subprocess.CompletedProcess[str]
    supervisor_pid: int
    broker_pids: list[int]
    service_pids: list[int]
    kafka: KafkaSettings


def start_stack(home: Path) -> Stack:
    up = cli(home, "up")
    assert up.returncode == 0, up.stderr
    state = json.loads((home / "state.json").read_text())
    children = children_of(state["supervisor_pid"])
    services = {info["pid"] for info in state["services"].values()}
    return Stack(
        home,
        up,
        state["supervisor_pid"],
        [pid for pid in children if pid not in services],
        sorted(services),
        KafkaSettings(bootstrap_servers=state["bootstrap"]),
    )


def kill_leftovers(stack: Stack) -> None:
    """Whatever `down` left behind, killed by pid, so no test leaks a process."""
    for pid in [stack.supervisor_pid, *stack.broker_pids, *stack.service_pids]:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """One stack shared by the tests that only read it or write to their own topics."""
    s = start_stack(tmp_path_factory.mktemp("home"))
    try:
        yield s
    finally:
        try:
            cli(s.home, "down")
        finally:
            kill_leftovers(s)


def send(kafka: KafkaSettings, topic: str, values: list[bytes], **producer_config: object) -> None:
    producer = bus.producer(kafka, **producer_config)
    for value in values:
        producer.send(topic, value=value)
    producer.flush()
    producer.close()


def new_topic(kafka: KafkaSettings, partitions: int = 1) -> str:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    bus.ensure_topics(kafka, {name: partitions})
    return name


def test_up_starts_an_embedded_broker_and_reports_it(stack):
    assert f"broker  {stack.kafka.bootstrap_servers} (embedded Tansu)" in stack.up.stdout
    assert len(stack.broker_pids) == 1 and pid_alive(stack.broker_pids[0])
    status = cli(stack.home, "status")
    assert status.returncode == 0, status.stderr
    assert stack.kafka.bootstrap_servers in status.stdout


def test_second_up_says_already_up(stack):
    again = cli(stack.home, "up")
    assert again.returncode == 0, again.stderr
    assert f"already up (supervisor pid {stack.supervisor_pid})" in again.stdout
    assert json.loads((stack.home / "state.json").read_text())["supervisor_pid"] == (
        stack.supervisor_pid
    )


def test_topics_lists_every_pipeline_topic_with_its_partitions(stack):
    result = cli(stack.home, "topics")
    assert result.returncode == 0, result.stderr
    table = topic_rows(result.stdout)
    assert {name: cells[0] for name, cells in table.items() if name in topics.PIPELINE} == {
        name: str(n) for name, n in topics.PARTITIONS.items()
    }
    assert table[topics.PARSED_TEXT][0] == "12"
    assert not any(name.endswith(".dlq") for name in table), "DLQs are a column, not rows"


def test_messages_sent_to_sources_are_counted_and_tailed(stack):
    requests = [
        SourceRequest(run_id=f"run-{i}", source=FolderSource(path=f"/data/{i}")) for i in range(3)
    ]
    send(stack.kafka, topics.SOURCES, [encode(r) for r in requests])

    result = cli(stack.home, "topics")
    assert result.returncode == 0, result.stderr
    # (The stack's scraper dead-letters these requests, /data/N does not exist: the DLQ
    # column is the scraper's to fill, and the scrape tests below check it.)
    assert topic_rows(result.stdout)[topics.SOURCES][:2] == ["1", "3"]

    tail = cli(stack.home, "tail", topics.SOURCES, "--no-follow")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.count("source-request/1") == 3
    for i in range(3):
        assert f"sources[0]@{i}" in tail.stdout
        assert f"run_id: run-{i}" in tail.stdout


def test_tail_last_n_prints_only_the_newest(stack):
    topic = new_topic(stack.kafka)
    for i in range(5):  # one batch each
        send(stack.kafka, topic, [json.dumps({"schema": "x/1", "n": i}).encode()])
    tail = cli(stack.home, "tail", topic, "--no-follow", "-n", "2")
    assert tail.returncode == 0, tail.stderr
    assert [line.split()[0] for line in tail.stdout.splitlines() if "x/1" in line] == [
        f"{topic}[0]@3",
        f"{topic}[0]@4",
    ]


def test_tail_of_unknown_topic_fails_clearly(stack):
    result = cli(stack.home, "tail", "nosuch", "--no-follow")
    assert result.returncode != 0
    assert "no topic 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_topics_counts_every_message_of_a_batched_send(stack):
    topic = new_topic(stack.kafka)
    # One producer batch of 50: Tansu reports its end as the batch's base offset + 1.
    send(stack.kafka, topic, [b"m%d" % i for i in range(50)], linger_ms=1000)
    result = cli(stack.home, "topics")
    assert result.returncode == 0, result.stderr
    assert topic_rows(result.stdout)[topic] == ["1", "50", "0"]


def test_topics_counts_a_batch_larger_than_one_poll(stack):
    topic = new_topic(stack.kafka)
    # Tiny values fill the default 16 KiB batch with ~1,500 records; this makes it one batch.
    send(stack.kafka, topic, [b"%d" % i for i in range(1000)], linger_ms=2000, batch_size=1_000_000)
    result = cli(stack.home, "topics")
    assert result.returncode == 0, result.stderr
    assert topic_rows(result.stdout)[topic] == ["1", "1000", "0"]


def test_topics_shows_a_groups_committed_offsets_and_lag(stack):
    topic = new_topic(stack.kafka, partitions=2)
    for partition in (0, 1):
        producer = bus.producer(stack.kafka)
        for i in range(5):
            producer.send(topic, value=b"%d" % i, partition=partition)
        producer.flush()
        producer.close()
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer(stack.kafka, group_id=group)
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        consumer.commit(
            {
                TopicPartition(topic, 0): OffsetAndMetadata(3, "", -1),
                TopicPartition(topic, 1): OffsetAndMetadata(1, "", -1),
            }
        )
    finally:
        consumer.close(autocommit=False)
    result = cli(stack.home, "topics")
    assert result.returncode == 0, result.stderr
    assert group_rows(result.stdout)[group] == [topic, "4", "10", "6"]


def test_scrape_folder_follow_shows_each_document_until_done(stack, tmp_path, test_data):
    folder = tmp_path / "papers"
    folder.mkdir()
    for name in ("2106.09685v2_lora.pdf", "2305.14314v1_qlora.pdf"):
        shutil.copy(test_data / "data" / "pdfs" / name, folder / name)
    result = cli(stack.home, "scrape", "folder", str(folder), "--follow", "--run-id", "cli-run")
    assert result.returncode == 0, result.stderr
    assert "run cli-run published to sources" in result.stdout
    assert "2106.09685v2_lora" in result.stdout and "2305.14314v1_qlora" in result.stdout
    assert "run cli-run done: 2 documents on raw-docs" in result.stdout


def test_scrape_follow_gives_up_after_its_timeout(stack, tmp_path):
    # No scraper consumes for this group: the request is never done.
    result = cli(
        stack.home,
        "scrape",
        "folder",
        str(tmp_path),
        "--follow",
        "--group",
        "nobody",
        "--timeout",
        "3",
    )
    assert result.returncode == 1
    assert "not done after 3s (0 documents so far); it goes on" in result.stderr


def test_scrape_request_the_scraper_refuses_fails_with_its_reason(stack):
    result = cli(stack.home, "scrape", "site", "http://localhost:9/", "--follow")
    assert result.returncode == 1
    assert "private_address" in result.stderr
    assert "Traceback" not in result.stderr


def test_scrape_arxiv_without_category_or_query_is_refused_before_publishing(stack):
    result = cli(stack.home, "scrape", "arxiv", "--since", "2024-04-18")
    assert result.returncode == 1
    assert "needs a query, a category, or both" in result.stderr
    assert "Traceback" not in result.stderr


def test_down_stops_supervisor_and_broker_then_status_fails(tmp_path):
    stack = start_stack(tmp_path)
    try:
        assert pid_alive(stack.supervisor_pid)
        assert len(stack.broker_pids) == 1 and pid_alive(stack.broker_pids[0])
        down = cli(tmp_path, "down")
        assert down.returncode == 0, down.stderr
        assert "stopped" in down.stdout
        # down waits for the supervisor, which stops (and reaps) the broker before it exits.
        assert not pid_alive(stack.supervisor_pid)
        assert not pid_alive(stack.broker_pids[0])
        assert stack.service_pids and not any(pid_alive(p) for p in stack.service_pids)
        assert not (tmp_path / "state.json").exists()
    finally:
        kill_leftovers(stack)

    status = cli(tmp_path, "status")
    assert status.returncode != 0
    assert "no stack is running here" in status.stderr
    assert "Traceback" not in status.stderr
    again = cli(tmp_path, "down")
    assert (again.returncode, again.stdout.strip()) == (0, "nothing running")


def test_read_all_reads_every_partition(kafka: KafkaSettings, make_topic) -> None:  # noqa: ANN001
    """What the demo reads back (pairs over many partitions), all of it."""
    from pipeline.cli_common import read_all

    topic = make_topic("many", partitions=12)
    producer = bus.producer(kafka)
    for i in range(600):
        producer.send(topic, key=f"k{i % 37}".encode(), value=b"v%d" % i)
        if i % 50 == 0:
            producer.flush()  # many batches per partition, as a service produces them
    producer.flush()
    producer.close()
    values = sorted(r.value for r in read_all(kafka, topic))
    assert values == sorted(b"v%d" % i for i in range(600))


def test_topics_create_sets_up_a_bare_cluster(tmp_path):
    """What compose's topic-init runs: every topic and DLQ with its partitions, once."""
    with Broker() as bare:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bare.bootstrap, "COLUMNS": "200"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "pipeline.cli", "topics", *args],
                                  env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=90, check=False)  # fmt: skip

        first = run("--create")
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout
        assert {n: c[0] for n, c in topic_rows(first.stdout).items()} == {
            name: str(n) for name, n in topics.PARTITIONS.items()
        }
        reader = bus.consumer(KafkaSettings(bootstrap_servers=bare.bootstrap), group_id=None)
        try:
            assert set(topics.all_topics()) <= set(reader.topics())
        finally:
            reader.close()
        again = run("--create")
        assert again.returncode == 0 and "every topic exists already" in again.stdout


def test_topics_shows_every_stage_with_its_services_own_figures(stack):
    request = SourceRequest(run_id="stages", source=FolderSource(path="/nowhere"))
    send(stack.kafka, topics.SOURCES, [encode(request)])
    # This stack gives the evaluator and inference no model and no ARC: they exit at start-up,
    # so their metrics never answer. The others' do once they have started. The scraper
    # dead-letters the request (no such folder).
    running = ["scraper", "extractor", "synthesizer", "trainer"]
    deadline = time.monotonic() + 90
    while True:
        result = cli(stack.home, "topics")
        assert result.returncode == 0, result.stderr
        # stage -> [in, handled, out, rate, lag, dlq, retries, the service's own figures]
        stages = rows(result.stdout, 9)
        settled = stages["scraper"][4] == "0"  # no lag: nothing moves while we compare
        if (settled and all(stages[s][6] != "-" for s in running)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [s for s in stages if s in SERVICES] == list(SERVICES)
    scraper = stages["scraper"]
    assert scraper[0] == topic_rows(result.stdout)[topics.SOURCES][1]  # in: what sources holds
    assert int(scraper[1]) <= int(scraper[0])  # handled
    assert scraper[2] == topic_rows(result.stdout)[topics.RAW_DOCS][1]  # out: raw-docs
    retries = {s: stages[s][6] for s in SERVICES}  # from the metrics; a dash without them
    assert retries == {"scraper": "0", "extractor": "0", "synthesizer": "0", "trainer": "0",
                       "evaluator": "-", "inference": "-"}  # fmt: skip
    assert "MB downloaded" in scraper[7] and "pairs stored" in stages["trainer"][7]

    # The dashboard's figures, from the scraper's own metrics, tell the same story as the
    # offsets (its process has not restarted, so its counters hold everything it did).
    state = json.loads((stack.home / "state.json").read_text())
    metrics = monitor.scrape({"scraper": [state["services"]["scraper-0"]["metrics"]]})["scraper"]
    handled, dead = int(scraper[1]), int(scraper[5])
    assert sum(metrics["distillery_dlq_total"].values()) == dead > 0
    assert sum(metrics["distillery_consumed_total"].values()) >= handled  # the one in hand too
    assert sum(metrics["distillery_produced_total"].values()) == int(scraper[2]) + dead


def test_tail_without_a_topic_follows_every_stage_a_line_per_message(stack):
    run = f"tail-{uuid.uuid4().hex[:6]}"
    send(stack.kafka, topics.SOURCES,
         [encode(SourceRequest(run_id=run, source=FolderSource(path="/nowhere")))])  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(
        decode(SourceRequest, decode(DlqRecord, r.value).original_value()).run_id == run
        for r in read_all(stack.kafka, topics.dlq(topics.SOURCES))
    ):
        assert time.monotonic() < deadline, "the scraper did not dead-letter the request"
        time.sleep(0.5)
    tail = cli(stack.home, "tail", "--run", run, "--from-beginning", "--no-follow")
    assert tail.returncode == 0, tail.stderr
    lines = [line for line in tail.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, tail.stdout  # the request, and its dead letter: nothing else
    assert lines[0].startswith("sources[0]@") and f'{run}: folder {{"path": "/nowhere"' in lines[0]
    assert lines[1].startswith("sources.dlq[0]@") and " from scraper: " in lines[1]


def test_run_refuses_a_bad_file_before_starting_anything(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("base_model: m\nsources: [{kind: folder, path: .}]\n"
                      "synthesizer: {temprature: 0.2}\n")  # fmt: skip
    result = cli(tmp_path / "home", "run", str(config))
    assert result.returncode == 1
    assert (
        "synthesizer.temprature: synthesizer has no such setting; did you mean 'temperature'?"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()  # nothing started


def test_run_prints_a_section_as_env_lines_for_a_deployment(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("base_model: m\nsources: [{kind: folder, path: .}]\n"
                      "trainer: {eval_fraction: 0.2}\n")  # fmt: skip
    result = cli(tmp_path / "home", "run", str(config), "--env", "trainer")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "TRAINER_EVAL_FRACTION=0.2\nDISTILLERY_BASE_MODEL=m\n"


def test_run_on_a_stack_started_with_other_settings_is_refused(stack, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("base_model: m\nsources: [{kind: folder, path: .}]\n"
                      "extractor: {chunk_tokens: 128}\nevaluator: {arc_tasks: []}\n")  # fmt: skip
    result = cli(stack.home, "run", str(config))
    assert result.returncode == 1
    assert "was started with other settings than this file's" in result.stderr
    assert not (stack.home / "runs" / "run").exists()


def test_status_of_an_unknown_run_says_so(stack):
    result = cli(stack.home, "status", "nosuch")
    assert result.returncode == 1
    assert f"no run 'nosuch' in {stack.home.resolve()}" in result.stderr
