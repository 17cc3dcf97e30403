"""lm-eval for real on CPU: stories260K and an adapter trained in the test on pairs mined from
the real papers, scored on ARC (local jsonl), on a domain test generated from documents the
adapter never saw, and on their perplexity; base and tuned in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager
from transformers import AutoTokenizer

from services.evaluator.core import Comparison, Job, compare_task, paired_bootstrap
from services.evaluator.harness import compare
from services.evaluator.run import held_out_text, tasks_for
from services.evaluator.tasks import arc_task, domain_task, perplexity_task
from services.trainer.core import prompt_and_answer
from services.trainer.train import read_split
from tests.support.trainer import Trained

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compared(
    test_data: Path, paper_adapter: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Comparison:
    root = tmp_path_factory.mktemp("evaluate")
    recipe, adapter = paper_adapter.recipe, paper_adapter.adapter
    tokenizer = AutoTokenizer.from_pretrained(recipe.base_model)
    held_out = read_split(paper_adapter.snapshot, "eval")[:80]
    examples = [
        dict(zip(("prompt", "reference"),
                 prompt_and_answer(r, recipe.data.prompt_format, tokenizer), strict=True))
        for r in held_out
    ]  # fmt: skip
    tasks = [
        arc_task("arc_easy", test_data / "data" / "arc"),
        arc_task("arc_challenge", test_data / "data" / "arc"),
        domain_task(examples[:60], root / "domain.jsonl", max_new_tokens=48),
        perplexity_task([r["output"] for r in held_out], root / "text.jsonl"),
    ]
    limits = {"distillery_arc_easy": 60, "distillery_arc_challenge": 60}
    return compare(recipe.base_model, adapter, tasks, limits=limits)


def test_arc_scores_are_those_of_a_model_that_guesses(compared: Comparison) -> None:
    for scores in (compared.base, compared.tuned):
        for task in ("distillery_arc_easy", "distillery_arc_challenge"):
            scored = scores[task]
            assert len(scored.samples) == 60
            # 4 choices (a few have 3 or 5): chance is about 0.25; 60 questions leave room.
            assert 0.05 <= scored.metrics["acc"] <= 0.45, (task, scored.metrics)
            per_example = [s.scores["acc"] for s in scored.samples]
            assert scored.metrics["acc"] == pytest.approx(sum(per_example) / 60)


def test_the_tuned_model_wins_the_domain_test_it_was_trained_for(compared: Comparison) -> None:
    base = compared.base["distillery_domain"]
    tuned = compared.tuned["distillery_domain"]
    assert len(base.samples) == len(tuned.samples) == 60
    assert all(isinstance(s.output, str) for s in base.samples + tuned.samples)
    delta = paired_bootstrap([s.scores["rougeL"] for s in base.samples],
                             [s.scores["rougeL"] for s in tuned.samples])  # fmt: skip
    assert delta.improved(), delta
    assert delta.tuned == pytest.approx(tuned.metrics["rougeL"])


def test_the_tuned_model_finds_held_out_text_less_surprising(compared: Comparison) -> None:
    base, tuned = compared.base["distillery_perplexity"], compared.tuned["distillery_perplexity"]
    assert len(base.samples) == 80
    for metric in ("bits_per_byte", "word_perplexity"):
        assert tuned.metrics[metric] < base.metrics[metric]
        # Our interval is around lm-eval's own corpus-level figure, from per-example counts.
        delta = compare_task(base, tuned, metric)
        assert delta.base == pytest.approx(base.metrics[metric], rel=1e-6)
        assert delta.tuned == pytest.approx(tuned.metrics[metric], rel=1e-6)
        assert delta.improved(higher_is_better=False), delta


def test_the_domain_test_is_written_as_jsonl(tmp_path: Path) -> None:
    row = {"prompt": "question: a\nanswer:", "reference": " b", "document": "paper"}
    task = domain_task([row], tmp_path / "d.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert rows == [row]
    assert task["output_type"] == "generate_until"
    with pytest.raises(ValueError, match="no examples"):
        domain_task([], tmp_path / "e.jsonl")
    with pytest.raises(ValueError, match="arc_easy: no"):
        arc_task("arc_easy", tmp_path)


def test_a_job_becomes_its_tasks_local_or_by_hub_name(test_data: Path, tmp_path: Path) -> None:
    records = [
        {"instruction": "Define X.", "input": "X is a thing.", "output": "A thing.",
         "document": "paper 1"},
        {"instruction": "Say more.", "input": "X is a thing.", "output": "Much more.",
         "document": "paper 1"},
    ]  # fmt: skip
    examples = tmp_path / "held_out.jsonl"
    examples.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = str(test_data / "models" / "stories260K")
    job = Job(base_model=model, tuned=tmp_path, examples=examples, arc_tasks=["arc_easy"],
              arc_dir=test_data / "data" / "arc", arc_limit=5,
              prompt_format="question_answer")  # fmt: skip
    tasks, limits = tasks_for(job, tmp_path)
    names = [t if isinstance(t, str) else t["task"] for t in tasks]
    assert names == ["distillery_arc_easy", "distillery_domain", "distillery_perplexity"]
    assert limits == {"distillery_arc_easy": 5}
    rows = [json.loads(line) for line in (tmp_path / "domain.jsonl").read_text().splitlines()]
    assert rows[0] == {"prompt": "question: Define X.\n\nX is a thing. answer:",
                       "reference": " A thing.", "document": "paper 1"}  # fmt: skip
    # Each passage and answer once: the shared input is not scored twice.
    assert held_out_text(records) == ["X is a thing.", "A thing.", "Much more."]

    # Without a local copy, ARC is lm-eval's own hub tasks, by names this lm-eval knows.
    hub = job.model_copy(update={"arc_dir": None, "arc_tasks": ["arc_easy", "arc_challenge"],
                                 "examples": None})  # fmt: skip
    tasks, limits = tasks_for(hub, tmp_path)
    assert tasks == ["arc_easy", "arc_challenge"]
    assert limits == {"arc_easy": 5, "arc_challenge": 5}
    assert {"arc_easy", "arc_challenge"} <= set(TaskManager().all_tasks)
