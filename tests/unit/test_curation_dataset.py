"""Dataset assembly: duplicates, the split by document, the contamination check, the files in
every format (read back by `datasets`), the dataset card, and incremental curation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from pipeline.curation.card import hub_licence, render_card
from pipeline.curation.dataset import (
    FILTERS,
    CurationConfig,
    Fields,
    canonical_order,
    curate,
    eval_documents,
)
from pipeline.curation.neardup import RougePool
from pipeline.curation.snapshot import content_hash, write_snapshot
from pipeline.messages import GeneratorInfo, Pair
from tests.support.pairs import make_pair, paper_pairs
from tests.support.rouge_reference import SCORER

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def papers(test_data: Path) -> tuple[Pair, ...]:
    return paper_pairs(test_data / "data" / "pdfs")


def rouge(a: str, b: str) -> float:
    return float(SCORER.score(a, b)["rougeL"].fmeasure)


def test_repeats_and_duplicates_are_dropped_and_named() -> None:
    first = make_pair("What does LoRA freeze?", "The pretrained weights.")
    pairs = [
        first,
        first,  # delivered twice
        make_pair("what does  LoRA freeze?", "The weights, all of them."),  # same instruction
        make_pair("What exactly does LoRA freeze?", "Weights."),  # near: F = 0.889
        make_pair("Which optimiser does the paper use?", "Adam."),
    ]
    curated = curate(pairs, CurationConfig(fields=Fields.INSTRUCTION, eval_fraction=0))
    assert [p.instruction for p in curated.train] == [
        "What does LoRA freeze?", "Which optimiser does the paper use?"
    ]  # fmt: skip
    drops = {d.filter: d for d in curated.dropped}
    assert set(drops) == {"replayed", "exact_duplicate", "near_duplicate"}
    assert drops["exact_duplicate"].match == first.pair_id
    near = drops["near_duplicate"]
    assert near.match == first.pair_id
    assert near.score == rouge("What exactly does LoRA freeze?", "What does LoRA freeze?")
    assert curated.drop_counts() == {
        "replayed": 1, "exact_duplicate": 1, "near_duplicate": 1, "contaminated": 0
    }  # fmt: skip


def test_the_compared_fields_decide_what_is_a_duplicate() -> None:
    """A templated instruction with different inputs: duplicates on the instruction alone,
    distinct on instruction+input (the default, for pairs mined from documents)."""
    pairs = [
        make_pair("Complete the sentence.", "weights frozen", input="LoRA keeps the pretrained"),
        make_pair("Complete the sentence.", "in float16", input="QLoRA stores the adapters"),
    ]
    alone = curate(pairs, CurationConfig(fields=Fields.INSTRUCTION, eval_fraction=0))
    both = curate(pairs, CurationConfig(fields=Fields.INSTRUCTION_INPUT, eval_fraction=0))
    assert len(alone.train) == 1 and len(both.train) == 2


def test_seed_tasks_drop_what_resembles_them() -> None:
    seeds = ["Give three tips for staying healthy."]
    pairs = [make_pair("Give three tips for staying healthy!"), make_pair("Name a colour.")]
    curated = curate(pairs, CurationConfig(fields=Fields.INSTRUCTION, eval_fraction=0), seeds=seeds)
    assert [p.instruction for p in curated.train] == ["Name a colour."]
    assert curated.dropped[0].match == "seed:0"


def test_the_split_is_by_document_and_stable(papers: tuple[Pair, ...]) -> None:
    config = CurationConfig(eval_fraction=0.2)
    curated = curate(canonical_order(papers), config)
    train_docs = {p.doc_id for p in curated.train}
    eval_docs = {p.doc_id for p in curated.eval}
    assert eval_docs and train_docs and not train_docs & eval_docs
    assert eval_docs <= curated.eval_docs
    # The same documents, whatever else is in the corpus: each one's side is its own hash's.
    fewer = eval_documents(train_docs | set(sorted(eval_docs)[:1]), config)
    assert fewer <= curated.eval_docs


def test_the_held_out_share_follows_the_fraction() -> None:
    docs = {f"{i:064x}" for i in range(2000)}
    held = eval_documents(docs, CurationConfig(eval_fraction=0.1))
    assert 160 <= len(held) <= 240
    assert eval_documents(docs, CurationConfig(eval_fraction=0)) == frozenset()
    two = {"a" * 64, "b" * 64}
    assert len(eval_documents(two, CurationConfig(eval_fraction=0.01))) == 1  # one of each side
    assert len(eval_documents(two, CurationConfig(eval_fraction=0.99))) == 1


def test_snapshots_do_not_depend_on_delivery_order(papers: tuple[Pair, ...]) -> None:
    shuffled = list(papers)
    random.Random(5).shuffle(shuffled)  # noqa: S311 - a reproducible order
    config = CurationConfig(eval_fraction=0.2)
    one = curate(canonical_order(papers), config)
    other = curate(canonical_order(shuffled), config)
    assert content_hash(one) == content_hash(other)


def test_no_evaluation_pair_is_close_to_a_training_pair(papers: tuple[Pair, ...]) -> None:
    """Contamination: checked by brute force with rouge-score over every eval x train pair of
    instructions (the mined instructions are templates, so the check has work to do)."""
    config = CurationConfig(
        fields=Fields.ALL, eval_fraction=0.3, contamination_fields=Fields.INSTRUCTION
    )
    curated = curate(canonical_order(papers), config)
    contaminated = [d for d in curated.dropped if d.filter == "contaminated"]
    assert contaminated, "templated instructions must collide across documents"
    train = [SCORER._tokenizer.tokenize(p.instruction) for p in curated.train]
    for pair in curated.eval:
        tokens = SCORER._tokenizer.tokenize(pair.instruction)
        assert all(rouge_scorer._score_lcs(tokens, t).fmeasure < 0.7 for t in train)
    by_id = {p.pair_id: p for p in curated.train}
    for drop in contaminated[:50]:
        assert rouge(drop.pair.instruction, by_id[drop.match].instruction) == drop.score >= 0.7


def test_a_tie_at_the_threshold_is_contamination() -> None:
    """The filter keeps F == 0.7 (`>`), the contamination check drops it (`>=`)."""
    common = [f"w{i}" for i in range(14)]
    train = make_pair(" ".join(common + ["x1", "x2", "x3"]), doc="train-doc")
    tie = make_pair(" ".join(common + [f"y{i}" for i in range(9)]), doc="eval-doc")
    # lcs 14 of 17 and 23 tokens: rouge-score's doubles give exactly 0.7
    assert rouge(tie.instruction, train.instruction) == 0.7
    config = CurationConfig(fields=Fields.INSTRUCTION, eval_fraction=0.5)
    curated = curate([train, tie], config)
    assert len(curated.train) + len(curated.eval) == 1
    assert [d.filter for d in curated.dropped] == ["contaminated"]


def test_incremental_curation_equals_one_pass(papers: tuple[Pair, ...]) -> None:
    ordered = canonical_order(papers)
    config = CurationConfig(eval_fraction=0)
    whole = curate(ordered, config)
    pool = RougePool(config.threshold, compares=config.fields)
    half = len(ordered) // 2
    first = curate(ordered[:half], config, pool=pool)
    second = curate(ordered[half:], config, pool=pool)
    assert [p.pair_id for p in first.train + second.train] == [p.pair_id for p in whole.train]
    # An exact duplicate of an earlier batch's pair is caught by the pool (F = 1.0), not by
    # the exact-text step, which sees one batch: the same pairs go, some under the other name.
    assert len(first.dropped) + len(second.dropped) == len(whole.dropped)
    with pytest.raises(ValueError, match="seeds or a pool"):
        curate(ordered, config, pool=pool, seeds=["a seed"])


def test_every_format_loads_with_datasets(papers: tuple[Pair, ...], tmp_path: Path) -> None:
    from datasets import load_dataset

    curated = curate(canonical_order(papers), CurationConfig(eval_fraction=0.2))
    snapshot = write_snapshot(curated, tmp_path / "ds")
    files = {
        fmt: {s: str(tmp_path / "ds" / fmt / f"{s}.jsonl") for s in ("train", "eval")}
        for fmt in ("alpaca", "messages", "text")
    }
    alpaca = load_dataset("json", data_files=files["alpaca"])
    assert alpaca["train"].num_rows == snapshot.train_n == len(curated.train)
    assert alpaca["eval"].num_rows == snapshot.eval_n
    assert set(alpaca["train"].column_names) == {"instruction", "input", "output"}
    chat = load_dataset("json", data_files=files["messages"])["train"]
    first = curated.train[0]
    assert chat[0]["messages"] == [
        {"role": "user", "content": f"{first.instruction}\n\n{first.input}" if first.input
         else first.instruction},
        {"role": "assistant", "content": first.output},
    ]  # fmt: skip
    text = load_dataset("json", data_files=files["text"])["eval"]
    assert text[0]["text"].startswith("question: ") and " answer: " in text[0]["text"]
    # The card's configs let `datasets` find the files from the directory alone.
    # A cache of its own: `datasets` keys a directory's cache by its name, not its files
    # (huggingface/datasets#2956), and pytest reuses temporary directory names.
    by_card = load_dataset(str(tmp_path / "ds"), "messages", cache_dir=str(tmp_path / "hf"))
    assert by_card["eval"].num_rows == snapshot.eval_n


def test_the_card_says_what_is_in_it(papers: tuple[Pair, ...], tmp_path: Path) -> None:
    curated = curate(canonical_order(papers), CurationConfig(eval_fraction=0.2))
    snapshot = write_snapshot(curated, tmp_path / "ds")
    card = (tmp_path / "ds" / "README.md").read_text()
    assert snapshot.sha256 in card
    for name, n in curated.drop_counts().items():
        assert f"| {name} | {n} |" in card
    assert set(curated.drop_counts()) == set(FILTERS)
    for task in {p.task for p in curated.train}:
        assert f"| {task} |" in card
    assert "| reading-comprehension | reading-comprehension | reading-comprehension-v1" in card
    assert "source licence arXiv" in card and "generator terms none" in card
    titles = {p.source.title for p in curated.train if p.source}
    assert all(f"| {title} |" in card for title in titles)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["sha256"] == snapshot.sha256
    assert manifest["train_n"] == len(curated.train)
    provenance = (tmp_path / "ds" / "provenance.jsonl").read_text().splitlines()
    assert len(provenance) == len(curated.train) + len(curated.eval)
    dropped = (tmp_path / "ds" / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == len(curated.dropped)


def test_generator_terms_are_listed_with_what_they_forbid(tmp_path: Path) -> None:
    pairs = [make_pair("What does LoRA freeze?", doc="a"), make_pair("Name a colour.", doc="b")]
    curated = curate(pairs, CurationConfig(eval_fraction=0))
    write_snapshot(curated, tmp_path / "ds", formats=["alpaca"])
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "generator terms llama3: 2 pairs (Meta Llama 3 Community License" in card
    assert "license: other" in card  # CC BY 4.0 sources, but Llama 3's terms on top
    assert not (tmp_path / "ds" / "messages").exists()
    with pytest.raises(ValueError, match="formats must be among"):
        write_snapshot(curated, tmp_path / "other", formats=["parquet"])


def test_the_same_pairs_give_the_same_bytes(papers: tuple[Pair, ...], tmp_path: Path) -> None:
    config = CurationConfig(eval_fraction=0.2)
    for name in ("a", "b"):
        write_snapshot(curate(canonical_order(papers), config), tmp_path / name)
    for path in sorted((tmp_path / "a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CurationConfig(threshold=0)
    with pytest.raises(ValueError, match="eval_fraction"):
        CurationConfig(eval_fraction=1.0)
    with pytest.raises(ValueError, match="fields"):
        CurationConfig.model_validate({"fields": "title"})
    pool = RougePool(0.5)
    with pytest.raises(ValueError, match="threshold 0.5"):
        curate([make_pair("x y z")], CurationConfig(), pool=pool)


def test_licences_become_hub_ids_when_they_can() -> None:
    assert hub_licence("CC BY-NC 4.0") == "cc-by-nc-4.0"
    assert hub_licence("http://creativecommons.org/licenses/by-sa/4.0/") == "cc-by-sa-4.0"
    assert hub_licence("https://creativecommons.org/publicdomain/zero/1.0/") == "cc0-1.0"
    assert hub_licence("http://arxiv.org/licenses/nonexclusive-distrib/1.0/") is None
    mined = GeneratorInfo(
        provider="reading-comprehension",
        model="reading-comprehension",
        prompt_id="rc",
        prompt_hash="c" * 64,
        temperature=0,
        terms="none",
    )
    for licence, expected in [("CC BY 4.0", "cc-by-4.0"), ("arXiv", "other"), (None, "unknown")]:
        pairs = [make_pair("Name a colour.", generator=mined, license=licence)]
        card = render_card(curate(pairs, CurationConfig()), "0" * 64, ["alpaca"], ["train"], "x")
        assert f"license: {expected}\n" in card


def test_a_redelivery_is_a_replay_and_another_chunk_an_exact_duplicate() -> None:
    pair = make_pair("What does LoRA freeze?", "The weights.", doc="lora", index=3)
    again_elsewhere = make_pair("What does LoRA freeze?", "The weights.", doc="qlora", index=8)
    curated = curate([pair, pair, again_elsewhere], CurationConfig(eval_fraction=0))
    assert [(d.filter, d.pair.doc_id) for d in curated.dropped] == [
        ("replayed", pair.doc_id), ("exact_duplicate", again_elsewhere.doc_id)
    ]  # fmt: skip


def test_the_same_pair_from_two_runs_gives_the_same_bytes(tmp_path: Path) -> None:
    """Delivery order must not pick which copy survives: the provenance would differ."""
    pair = make_pair("What does LoRA freeze?", "The weights.", doc="lora")
    other_run = pair.model_copy(update={"run_id": "run-other"})
    rest = [make_pair("Name a colour.", doc="colours"), make_pair("Count to 3.", doc="numbers")]
    config = CurationConfig(eval_fraction=0.3)
    for name, order in (("a", [pair, other_run, *rest]), ("b", [*rest, other_run, pair])):
        write_snapshot(curate(canonical_order(order), config), tmp_path / name)
    for path in sorted((tmp_path / "a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_an_empty_split_is_left_out_and_the_rest_loads(tmp_path: Path) -> None:
    from datasets import load_dataset

    pairs = [make_pair("What does LoRA freeze?", doc="lora"), make_pair("Name a colour.")]
    snapshot = write_snapshot(curate(pairs, CurationConfig(eval_fraction=0)), tmp_path / "ds")
    assert not (tmp_path / "ds" / "alpaca" / "eval.jsonl").exists()
    loaded = load_dataset(str(tmp_path / "ds"), "alpaca", cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == snapshot.train_n == 2
    assert "There are no evaluation pairs" in (tmp_path / "ds" / "README.md").read_text()


def test_a_snapshot_replaces_only_an_earlier_snapshot(tmp_path: Path) -> None:
    curated = curate([make_pair("Name a colour.")], CurationConfig(eval_fraction=0))
    write_snapshot(curated, tmp_path / "ds")
    write_snapshot(curated, tmp_path / "ds", formats=["text"])
    assert sorted(p.name for p in (tmp_path / "ds").iterdir() if p.is_dir()) == ["text"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and not a dataset"):
        write_snapshot(curated, tmp_path / "mine")
    with pytest.raises(ValueError, match="is a file"):
        write_snapshot(curated, tmp_path / "mine" / "notes.txt")


def test_seed_tasks_need_instructions_compared() -> None:
    with pytest.raises(ValueError, match="seed tasks are instructions"):
        curate([make_pair("Name a colour.")], CurationConfig(), seeds=["Name a colour."])
