"""The domain test through lm-eval with the evaluator's batching vs lm-eval's default batch 1.

    python -m benchmarks.evaluate      # BENCH_EVAL_N=120, BENCH_EVAL_BATCH=16, BENCH_EVAL_REPEATS=3

Held-out pairs mined from the real papers (the trainer's snapshot split, eval side, in the
trainer's prompt format) become the evaluator's generate_until task (greedy, up to 48 new
tokens, ROUGE-1/L scored). The same stories260K model object runs it through lm-eval's HFLM at
batch size 1 (lm-eval's default) and at the evaluator's batch size, alternating, median of
the repeats. Examples/s is over the whole `simple_evaluate` call (task building, generation,
scoring), as the service pays it. The greedy answers are compared: batching must not change
them.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

# Everything is local; the hub libraries must not try the network (they would wait on it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lm_eval  # noqa: E402
import torch  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from pipeline.curation.dataset import CurationConfig, canonical_order, curate  # noqa: E402
from services.evaluator.tasks import domain_task  # noqa: E402
from services.trainer.core import prompt_and_answer  # noqa: E402
from tests.support.pairs import paper_pairs  # noqa: E402

SHARED = Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared"))
MODEL = SHARED / "models" / "stories260K"
N = int(os.environ.get("BENCH_EVAL_N", "120"))
BATCH = int(os.environ.get("BENCH_EVAL_BATCH", "16"))
REPEATS = int(os.environ.get("BENCH_EVAL_REPEATS", "3"))


def run(
    model: object, tokenizer: object, task: dict[str, object], batch: int
) -> tuple[float, list[str]]:
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch)
    manager = TaskManager(include_defaults=False)
    started = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[task], log_samples=True, task_manager=manager, bootstrap_iters=0
    )
    seconds = time.perf_counter() - started
    samples = sorted(results["samples"]["distillery_domain"], key=lambda s: s["doc_id"])
    return seconds, [s["filtered_resps"][0] for s in samples]


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    pairs = canonical_order(paper_pairs((SHARED / "data" / "pdfs").resolve()))
    held_out = curate(pairs, CurationConfig(eval_fraction=0.3)).eval[:N]
    examples = [
        dict(zip(("prompt", "reference"), prompt_and_answer(
            {"instruction": p.instruction, "input": p.input, "output": p.output},
            "question_answer", tokenizer), strict=True))
        for p in held_out
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        task = domain_task(examples, Path(scratch) / "domain.jsonl", max_new_tokens=48)
        times: dict[int, list[float]] = {1: [], BATCH: []}
        answers: dict[int, list[str]] = {}
        for repeat in range(REPEATS):
            for batch in (1, BATCH):
                seconds, answers[batch] = run(model, tokenizer, task, batch)
                times[batch].append(seconds)
                rate = len(examples) / seconds
                print(f"{repeat + 1}/{REPEATS} batch {batch}: {rate:.1f} examples/s")
    same = sum(a == b for a, b in zip(answers[1], answers[BATCH], strict=True))
    fast = len(examples) / statistics.median(times[BATCH])
    slow = len(examples) / statistics.median(times[1])
    print(json.dumps({
        "examples_per_s": round(fast, 2), "baseline_examples_per_s": round(slow, 2),
        "speedup": round(fast / slow, 2), "examples": len(examples), "batch_size": BATCH,
        "same_answers": same, "max_new_tokens": 48, "repeats": REPEATS,
        "threads": torch.get_num_threads(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
