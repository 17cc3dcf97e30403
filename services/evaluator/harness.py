"""Base and tuned through lm-eval in one process, with the same settings. An adapter is loaded
once on its base, and the base scores are taken with the adapter disabled (the same
log-likelihoods as loading the base alone, measured); a fully fine-tuned model is loaded after
the base. Scores come back per example, for the paired intervals and the side-by-side
examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lm_eval
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.evaluator.core import Comparison, Sample, TaskRun

#: A task config (a dict lm-eval takes as it is, see tasks.py) or a hub task's name.
Task = dict[str, Any] | str


def compare(
    base_model: str,
    tuned: Path,
    tasks: Sequence[Task],
    *,
    batch_size: int = 16,
    limits: Mapping[str, int] | None = None,
    device: str = "cpu",
) -> Comparison:
    """Every task on the base model and on `tuned` (an adapter directory or a whole model);
    `limits` caps a task's examples by name (its first N). `device` "auto": CUDA if present."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:  # else lm-eval quietly pads with <unk>
        tokenizer.pad_token = tokenizer.eos_token
    # Hub tasks need lm-eval's own index; building it takes 5 s, so only when asked.
    manager = TaskManager(include_defaults=any(isinstance(t, str) for t in tasks))

    def evaluate(model: Any) -> dict[str, TaskRun]:
        return _evaluate(model.eval(), tokenizer, tasks, batch_size, dict(limits or {}), manager)

    def load(path: str | Path) -> Any:
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model.to(device)

    if not (tuned / "adapter_config.json").is_file():
        return Comparison(base=evaluate(load(base_model)), tuned=evaluate(load(tuned)))
    model: Any = PeftModel.from_pretrained(load(base_model), tuned)
    runs = []
    for disabled in (True, False):
        with model.disable_adapter() if disabled else nullcontext():
            runs.append(evaluate(model))
    return Comparison(base=runs[0], tuned=runs[1])


def _evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    batch_size: int,
    limits: dict[str, int],
    manager: TaskManager,
) -> dict[str, TaskRun]:
    # Rolling log-likelihood puts its own BOS before the text; the tokenizer's would be a
    # second one, scored as if it were text.
    lms = {rolling: HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                         add_bos_token=False if rolling else None)
           for rolling in (False, True)}  # fmt: skip
    found: dict[str, TaskRun] = {}
    for task in tasks:  # one call each: each task has its own limit
        name = task if isinstance(task, str) else task["task"]
        rolling = not isinstance(task, str) and task["output_type"] == "loglikelihood_rolling"
        results = lm_eval.simple_evaluate(
            model=lms[rolling], tasks=[task], limit=limits.get(name), log_samples=True,
            task_manager=manager,
            bootstrap_iters=0,  # our intervals are paired, over the same examples
        )  # fmt: skip
        metrics = {key.split(",")[0]: float(value)
                   for key, value in results["results"][name].items()
                   if "," in key and "_stderr" not in key}  # fmt: skip
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        found[name] = TaskRun(metrics=metrics, samples=[_sample(s, list(metrics)) for s in samples])
    return found


def _sample(raw: dict[str, Any], metrics: list[str]) -> Sample:
    response = raw["filtered_resps"][0]
    output = response if isinstance(response, str) else None  # generate_until answers
    scores: dict[str, float] = {}
    for metric in metrics:
        value = raw[metric]
        if isinstance(value, (list, tuple)):  # perplexity: (loglikelihood, words or bytes)
            scores["loglikelihood"] = float(value[0])
            unit = "bytes" if metric in ("bits_per_byte", "byte_perplexity") else "words"
            scores[unit] = float(value[1])
        else:
            scores[metric] = float(value)
    return Sample(doc=raw["doc"], output=output, scores=scores)
