"""Base and tuned through lm-eval in one process, with the same settings: the model is loaded
once with its adapter, and the base scores are taken with the adapter disabled (the same
log-likelihoods as loading the base alone, measured). Scores come back per example, for the
paired intervals and the side-by-side examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


@dataclass(frozen=True)
class Sample:
    doc: dict[str, Any]
    output: str | None  # the generated answer (generate_until tasks)
    scores: dict[str, float]


@dataclass(frozen=True)
class TaskRun:
    metrics: dict[str, float]  # lm-eval's aggregates: acc, rougeL, word_perplexity, ...
    samples: list[Sample]  # in document order


@dataclass(frozen=True)
class Comparison:
    base: dict[str, TaskRun]
    tuned: dict[str, TaskRun]


def compare(
    base_model: str,
    adapter: Path,
    tasks: Sequence[dict[str, Any]],
    *,
    batch_size: int = 16,
    limit: int | None = None,
) -> Comparison:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:  # else lm-eval quietly pads with <unk>
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32), adapter
    ).eval()
    runs = []
    for disabled in (True, False):
        with model.disable_adapter() if disabled else nullcontext():
            runs.append(_evaluate(model, tokenizer, tasks, batch_size, limit))
    return Comparison(*runs)


def _evaluate(
    model: Any, tokenizer: Any, tasks: Sequence[dict[str, Any]], batch_size: int, limit: int | None
) -> dict[str, TaskRun]:
    manager = TaskManager(include_defaults=False)  # indexing lm-eval's 14k tasks takes 5 s
    found: dict[str, TaskRun] = {}
    rolling = [t for t in tasks if t["output_type"] == "loglikelihood_rolling"]
    others = [t for t in tasks if t["output_type"] != "loglikelihood_rolling"]
    # Rolling log-likelihood puts its own BOS before the text; the tokenizer's would be a
    # second one, scored as if it were text.
    for group, add_bos in ((others, None), (rolling, False)):
        if not group:
            continue
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                  add_bos_token=add_bos)  # fmt: skip
        results = lm_eval.simple_evaluate(
            model=lm, tasks=list(group), limit=limit, log_samples=True, task_manager=manager,
            bootstrap_iters=0,  # our intervals are paired, over the same examples
        )  # fmt: skip
        for task in group:
            name = task["task"]
            metrics = {m["metric"]: results["results"][name][f"{m['metric']},none"]
                       for m in task["metric_list"]}  # fmt: skip
            samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
            found[name] = TaskRun(
                metrics,
                [_sample(s, [m["metric"] for m in task["metric_list"]], task) for s in samples],
            )
    return found


def _sample(raw: dict[str, Any], metrics: list[str], task: dict[str, Any]) -> Sample:
    output = raw["filtered_resps"][0] if task["output_type"] == "generate_until" else None
    return Sample(raw["doc"], output, {m: _per_example(m, raw[m]) for m in metrics})


def _per_example(metric: str, value: Any) -> float:
    """A perplexity sample is (log-likelihood, words or bytes): this example's own value."""
    if not isinstance(value, (list, tuple)):
        return float(value)
    loglikelihood, count = float(value[0]), int(value[1])
    if metric == "bits_per_byte":
        return -loglikelihood / count / math.log(2)
    return math.exp(-loglikelihood / count)
