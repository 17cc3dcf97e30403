"""One checkpoint's evaluation, in a child process of the service:

    python -m services.evaluator.run JOB.json OUT.json

JOB is a `core.Job`; OUT receives the `core.Comparison`. A child, so that a model's memory (a
GPU's included) is all given back when it ends, and a stopping service can end it at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from services.evaluator.core import Job
from services.evaluator.harness import Task, compare
from services.evaluator.tasks import arc_task, domain_task, perplexity_task
from services.trainer.core import prompt_and_answer


def tasks_for(job: Job, scratch: Path) -> tuple[list[Task], dict[str, int]]:
    """The job's lm-eval tasks (datasets written under `scratch`), and their example limits."""
    tasks: list[Task] = []
    limits: dict[str, int] = {}
    for name in job.arc_tasks:
        task: Task = arc_task(name, job.arc_dir) if job.arc_dir else name
        tasks.append(task)
        if job.arc_limit:
            limits[task if isinstance(task, str) else task["task"]] = job.arc_limit
    if job.examples is None:
        return tasks, limits
    lines = job.examples.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines[: job.domain_limit]]
    tokenizer = AutoTokenizer.from_pretrained(job.base_model)
    rows = []
    for record in records:
        prompt, answer = prompt_and_answer(record, job.prompt_format, tokenizer)
        rows.append({"prompt": prompt, "reference": _plain(answer, tokenizer),
                     "document": record["document"]})  # fmt: skip
    tasks.append(domain_task(rows, scratch / "domain.jsonl", max_new_tokens=job.max_new_tokens))
    if job.perplexity:
        tasks.append(perplexity_task(held_out_text(records), scratch / "text.jsonl"))
    return tasks, limits


def _plain(answer: str, tokenizer: Any) -> str:
    """The reference as text: a chat template's answer ends with its turn's closing tokens
    (`<|eot_id|>`), which ROUGE would count as words the model must say."""
    for token in tokenizer.all_special_tokens:
        answer = answer.replace(token, "")
    return answer.rstrip()


def held_out_text(records: list[dict[str, Any]]) -> list[str]:
    """The held-out documents' own text as the pairs carry it: each passage (a pair's input)
    and each answer once, in order. The chunks themselves are not kept in the blob store."""
    texts = (text for r in records for text in (r.get("input", ""), r["output"]))
    return list(dict.fromkeys(t for t in texts if t.strip()))


def main(argv: list[str] | None = None) -> None:
    job_path, out = (Path(a) for a in (argv or sys.argv[1:]))
    job = Job.model_validate_json(job_path.read_text(encoding="utf-8"))
    tasks, limits = tasks_for(job, out.parent)
    comparison = compare(job.base_model, job.tuned, tasks, batch_size=job.batch_size,
                         limits=limits, device=job.device)  # fmt: skip
    # Whole or not at all: the service takes a comparison.json it finds as done.
    partial = out.with_suffix(".partial")
    partial.write_text(comparison.model_dump_json(), encoding="utf-8")
    partial.replace(out)


if __name__ == "__main__":
    main()
