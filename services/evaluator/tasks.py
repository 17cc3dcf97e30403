"""The lm-eval tasks the evaluator runs, as task configs (dicts lm-eval takes as they are):
ARC from local jsonl, the domain test generated from held-out pairs, and perplexity on
held-out text. Offline: every dataset is a local json file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rouge_score import rouge_scorer

ARC = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge"}
# rouge-score with Porter stemming, as the ROUGE papers and lm-eval's own rouge tasks score.
_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def arc_task(name: str, directory: Path, split: str = "test") -> dict[str, Any]:
    """ARC-Easy or ARC-Challenge as lm-eval's own arc tasks pose them, from
    `directory/<ARC-Easy|ARC-Challenge>-<split>.jsonl` (the Allen AI release's fields)."""
    path = directory / f"{ARC[name]}-{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"{name}: no {path}")
    return {
        "task": f"distillery_{name}",
        **_local_json(path),
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{choices.label.index(answerKey)}}",
        "doc_to_choice": "{{choices.text}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def rouge(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval's `process_results` for the domain test: ROUGE-1 and ROUGE-L F of the answer."""
    scores = _ROUGE.score(doc["reference"], results[0])
    return {"rouge1": scores["rouge1"].fmeasure, "rougeL": scores["rougeL"].fmeasure}


def domain_task(
    examples: Iterable[Mapping[str, str]], path: Path, *, max_new_tokens: int = 128
) -> dict[str, Any]:
    """A generate_until task over {prompt, reference, ...} rows (what else a row holds, such
    as its document, comes back with its scores), written to `path` as jsonl: greedy answers
    up to `max_new_tokens`, scored by ROUGE against the reference."""
    _write(path, examples)
    return {
        "task": "distillery_domain",
        **_local_json(path),
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{reference}}",
        "target_delimiter": "",
        "generation_kwargs": {
            "max_gen_toks": max_new_tokens,
            "until": ["\n\n"],
            "do_sample": False,
        },
        "process_results": rouge,
        "metric_list": [
            {"metric": "rougeL", "aggregation": "mean", "higher_is_better": True},
            {"metric": "rouge1", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def perplexity_task(texts: Iterable[str], path: Path) -> dict[str, Any]:
    """Rolling log-likelihood of held-out text (lm-eval's wikitext setup), written to `path`."""
    _write(path, ({"text": t} for t in texts))
    return {
        "task": "distillery_perplexity",
        **_local_json(path),
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [
            {"metric": "word_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "higher_is_better": False},
        ],
    }


def _local_json(path: Path) -> dict[str, Any]:
    """A task's dataset: one local jsonl file as its test split (never the hub)."""
    return {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
        "test_split": "test",
    }


def _write(path: Path, rows: Iterable[Mapping[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dict(row), ensure_ascii=False) for row in rows]
    if not lines:
        raise ValueError(f"{path.name}: no examples")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
