"""`distillery curate` in subprocesses: Alpaca's data with near-duplicates mixed in, seed
tasks, incremental runs with a pool file, the `pairs` topic of a real broker, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline import bus, topics
from pipeline.curation.neardup import RougePool
from pipeline.messages import encode, normalise, pair_id_of
from pipeline.settings import KafkaSettings
from tests.support.pairs import make_pair
from tests.support.rouge_reference import perturbed, reference

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def curate(*args: str, kafka: KafkaSettings | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    if kafka:
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "curate", *args],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def alpaca_rows(test_data: Path) -> list[dict[str, str]]:
    rows = json.loads((test_data / "data/instructions/alpaca/alpaca_data.json").read_text())
    return [row for row in rows[:400] if row["output"]]  # an empty output is not a pair


def manifest(directory: Path) -> dict[str, object]:
    return json.loads((directory / "manifest.json").read_text())


def test_alpaca_with_near_duplicates_decides_as_the_reference(
    alpaca_rows: list[dict[str, str]], test_data: Path, tmp_path: Path
) -> None:
    by_instruction = {row["instruction"]: row for row in alpaca_rows}
    stream = perturbed([row["instruction"] for row in alpaca_rows], seed=11)
    rows = [{**by_instruction.get(text, alpaca_rows[0]), "instruction": text} for text in stream]
    source = tmp_path / "rows.json"
    source.write_text(json.dumps(rows))
    seeds = test_data / "data/instructions/alpaca/seed_tasks.jsonl"
    out = tmp_path / "ds"
    done = curate(
        str(source), "--out", str(out), "--fields", "instruction", "--eval-fraction", "0",
        "--seeds", str(seeds), "--generator", "text-davinci-003", "--license", "CC BY-NC 4.0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seed_texts = tuple(json.loads(line)["instruction"] for line in seeds.read_text().splitlines())
    # Exact duplicates go first, by normalised text; the ROUGE-L filter decides the rest.
    firsts: dict[str, str] = {}
    for text in stream:
        firsts.setdefault(normalise(text), text)
    unique = list(firsts.values())
    expected = reference(unique, 0.7, seed_texts)
    info = manifest(out)
    dropped = info["dropped"]
    assert info["train_n"] == sum(expected)
    assert dropped["near_duplicate"] == len(unique) - sum(expected) > 100
    assert dropped["replayed"] + dropped["exact_duplicate"] == len(stream) - len(unique)
    assert "text-davinci-003" in (out / "README.md").read_text()
    assert "generator terms openai" in (out / "README.md").read_text()
    assert f"{info['train_n']}" in done.stdout and "written to" in done.stdout


def test_rows_that_are_not_pairs_are_skipped_and_named(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    lines = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Say nothing.", "input": "", "output": ""},
        {"instruction": "Count to three.", "output": "1, 2, 3."},
    ]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    done = curate(str(source), "--out", str(tmp_path / "ds"), "--eval-fraction", "0")
    assert done.returncode == 0, done.stderr
    assert f"{source}:2: output: String should have at least 1 character" in done.stderr
    assert len(manifest(tmp_path / "ds")["skipped_rows"]) == 1
    assert manifest(tmp_path / "ds")["train_n"] == 2


def test_a_pool_file_carries_kept_texts_to_the_next_run(tmp_path: Path) -> None:
    pool = tmp_path / "pool.npz"
    first = tmp_path / "first.json"
    first.write_text(json.dumps([{"instruction": "Give three tips for staying healthy.",
                                  "output": "Sleep, eat, move."}]))  # fmt: skip
    second = tmp_path / "second.json"
    second.write_text(json.dumps([
        {"instruction": "Give three tips for staying healthy!", "output": "Move."},
        {"instruction": "Name a colour.", "output": "Blue."},
    ]))  # fmt: skip
    args = ("--fields", "instruction", "--eval-fraction", "0", "--pool", str(pool))
    assert curate(str(first), "--out", str(tmp_path / "a"), *args).returncode == 0
    assert len(RougePool.load(pool)) == 1
    done = curate(str(second), "--out", str(tmp_path / "b"), *args)
    assert done.returncode == 0, done.stderr
    assert manifest(tmp_path / "b")["train_n"] == 1
    dropped = json.loads((tmp_path / "b" / "dropped.jsonl").read_text())
    kept_before = pair_id_of("Give three tips for staying healthy.", "", "Sleep, eat, move.")
    assert dropped["match"] == kept_before and dropped["filter"] == "near_duplicate"
    assert len(RougePool.load(pool)) == 2
    other = curate(str(second), "--out", str(tmp_path / "c"), "--threshold", "0.5",
                   "--pool", str(pool))  # fmt: skip
    assert other.returncode == 1
    said = " ".join(other.stderr.split())
    assert "the pool holds instruction texts at threshold 0.7" in said


def test_pairs_are_read_from_the_topic_for_one_run(kafka: KafkaSettings, tmp_path: Path) -> None:
    bus.ensure_topics(kafka, {topics.PAIRS: 12})
    run = f"run-{uuid.uuid4().hex[:8]}"
    pairs = [  # no two alike: "explain" and "and" are all they share (F = 0.5)
        make_pair(f"Explain {doc}{i}alpha and {doc}{i}beta.", f"Answer {i}.", doc=doc, index=i)
        for doc in ("lora", "qlora", "flash", "alpaca") for i in range(5)
    ]  # fmt: skip
    producer = bus.producer(kafka)
    for pair in pairs:
        value = pair.model_copy(update={"run_id": run})
        producer.send(topics.PAIRS, key=pair.doc_id.encode(), value=encode(value))
    producer.send(topics.PAIRS, key=b"x", value=encode(make_pair("Another run's pair.")))
    producer.flush()
    producer.close()
    out = tmp_path / "ds"
    done = curate("--run", run, "--out", str(out), "--eval-fraction", "0.25", kafka=kafka)
    assert done.returncode == 0, done.stderr
    info = manifest(out)
    assert info["train_n"] + info["eval_n"] + sum(info["dropped"].values()) == len(pairs)
    assert info["eval_n"] > 0 and info["inputs"] == [topics.PAIRS]
    assert curate("--run", "no-such-run", "--out", str(out), kafka=kafka).returncode == 1


def test_a_file_of_pair_messages_is_curated_in_canonical_order(tmp_path: Path) -> None:
    """pair/1 messages (a topic dump) give the same dataset in any order; a message that is
    not a valid pair is skipped with the reason, never a traceback."""
    pairs = [make_pair(f"Explain {d}{i}alpha and {d}{i}beta.", doc=d, index=i)
             for d in ("lora", "qlora", "flash") for i in range(4)]  # fmt: skip
    lines = [json.loads(encode(p)) for p in pairs]
    tampered = {**lines[0], "output": "Not what the pair_id says."}
    hashes = []
    for name, rows in (("fwd", lines), ("rev", lines[::-1] + [tampered])):
        source = tmp_path / f"{name}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        done = curate(str(source), "--out", str(tmp_path / name), "--eval-fraction", "0.3")
        assert done.returncode == 0, done.stderr
        hashes.append(manifest(tmp_path / name)["sha256"])
    assert hashes[0] == hashes[1]
    assert "rev.jsonl:13: pair/1: pair_id is not the sha256" in " ".join(done.stderr.split())


def test_rows_are_checked_one_by_one(tmp_path: Path) -> None:
    """JSON Lines in a .json file, a missing key, a null, a lone surrogate: each row that is
    not a pair is named with its reason; the rest are curated."""
    source = tmp_path / "rows.json"
    source.write_text(
        '{"instruction": "Name a colour.", "output": "Blue."}\n'
        '{"prompt": "Dolly-style", "response": "no instruction key"}\n'
        '{"instruction": "Count to three.", "input": null, "output": "1, 2, 3."}\n'
        '{"instruction": "Say \\ud83d.", "output": "A broken emoji."}\n'
    )
    done = curate(str(source), "--out", str(tmp_path / "ds"), "--eval-fraction", "0")
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert f"{source}:2: instruction: Field required" in said
    assert f"{source}:3: input: Input should be a valid string" in said
    assert f"{source}:4: instruction: Input should be a valid string, unable to parse" in said
    info = manifest(tmp_path / "ds")
    assert info["train_n"] == 1 and len(info["skipped_rows"]) == 3
    assert "3 input rows were not pairs" in (tmp_path / "ds" / "README.md").read_text()


def test_when_no_row_is_a_pair_the_reasons_are_shown(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text('{"instruction": "Say nothing.", "output": ""}\n')
    done = curate(str(source), "--out", str(tmp_path / "ds"))
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "rows.jsonl:1: output: String should have at least 1 character" in said
    assert "no pairs to curate" in said


def test_seed_matches_are_named_as_seeds(test_data: Path, tmp_path: Path) -> None:
    seeds = test_data / "data/instructions/alpaca/seed_tasks.jsonl"
    first_seed = json.loads(seeds.read_text().splitlines()[0])["instruction"]
    source = tmp_path / "rows.json"
    rows = [{"instruction": first_seed + "!", "output": "Yes."},
            {"instruction": "Name a colour.", "output": "Blue."}]  # fmt: skip
    source.write_text(json.dumps(rows))
    for pool in ([], ["--pool", str(tmp_path / "pool.npz")]):
        out = tmp_path / f"ds{len(pool)}"
        done = curate(str(source), "--out", str(out), "--fields", "instruction",
                      "--seeds", str(seeds), *pool)  # fmt: skip
        assert done.returncode == 0, done.stderr
        dropped = json.loads((out / "dropped.jsonl").read_text())
        assert dropped["match"] == "seed:0" and dropped["filter"] == "near_duplicate"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json"], "missing.json: no such file"),
        (["{bad}"], "not valid JSON"),
        (["{lines}"], "lines.jsonl:2: not valid JSON (Expecting value, column 1)"),
        (["{rows}", "--seeds", "{rows}"], "--seeds needs --fields instruction"),
        (["{rows}", "--run", "r1"], "--run picks pairs from the topic"),
        (["{rows}", "--out", "{rows}"], "is a file, not a directory"),
        (["{rows}", "--pool", "/no/such/dir/pool.npz"], "/no/such/dir: no such directory"),
        (["{rows}", "--threshold", "1.5"], "threshold: Input should be less than or equal to 1"),
        (["{rows}", "--format", "parquet"], "--format must be among alpaca, messages, text"),
        (["{rows}", "--fields", "title"], "fields: Input should be"),
        (["{empty}"], "no pairs to curate"),
    ],
)
def test_bad_input_is_refused_with_its_reason(tmp_path: Path, args: list[str], message: str):
    files = {"bad": tmp_path / "bad.json", "rows": tmp_path / "rows.json",
             "empty": tmp_path / "empty.json", "lines": tmp_path / "lines.jsonl"}  # fmt: skip
    files["bad"].write_text("[{")
    files["lines"].write_text('{"instruction": "a", "output": "b"}\n,\n')
    files["rows"].write_text(json.dumps([{"instruction": "Name a colour.", "output": "Blue."}]))
    files["empty"].write_text("[]")
    resolved = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    out = [] if "--out" in resolved else ["--out", str(tmp_path / "ds")]
    done = curate(*resolved, *out)
    assert done.returncode == 1
    assert message in " ".join(done.stderr.split()), done.stderr
