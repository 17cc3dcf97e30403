"""Training throughput with the trainer's packing vs plain padding, on the lengths of real pairs.

    python -m benchmarks.train      # BENCH_TRAIN_N=600, BENCH_TRAIN_REPEATS=2, BENCH_THREADS=cpus

A fixed-seed sample of BENCH_TRAIN_N Alpaca 52K records, in the Alpaca prompt format, tokenised
with the Llama-2 tokenizer by the trainer's own `encode` (max_seq_len 512, answer-only labels):
the real length distribution. Both modes train the same model on every one of those examples
once, LoRA with the product's defaults (rank 16, all-linear) and AdamW, on a randomly
initialised Llama with the Llama-2 vocabulary (its weights' values do not change the speed).
- **padded**, the baseline a user gets without our packing: the examples in one shuffled order,
  BATCH per step, each batch right-padded to its own longest (dynamic padding, not to 512) with
  a 2-D attention mask (`core.padded_batch`).
- **packed**: the trainer's rows (`rows_dataset`, best-fit decreasing into rows of 512) in a
  shuffled order, collated by the trainer's `Collator` (block-diagonal 4-D mask, restarting
  positions): the batches SFTTrainer is fed. Rows per step are chosen so that a step holds as
  many real tokens as a padded one on average.
A step is collate + forward + backward + optimizer step, all timed (the trainer collates in its
loop too); two untimed warm-up steps come first. Tokens/s counts non-padding tokens, asserted
equal in both modes. Each run is a fresh spawned process (same seed, same initial weights),
so its peak RSS is its own (the whole process: torch, model, optimizer state, activations);
runs alternate, medians of tok/s count, the peak is the max. BENCH_QUICK=1 runs 64 examples
once per mode, to check that it works, not to measure.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from services.trainer.core import Example, padded_batch
from services.trainer.recipe import Recipe
from services.trainer.train import Collator, encode, lora_config, rows_dataset

SHARED = Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared"))
DATA = SHARED / "data" / "instructions" / "alpaca" / "alpaca_data.json"
TOKENIZER = SHARED / "models" / "llama2-tokenizer"
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_TRAIN_N", 64 if QUICK else 600))
REPEATS = int(os.environ.get("BENCH_TRAIN_REPEATS", 1 if QUICK else 2))
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
BATCH = 8  # padded examples per step, as in the bundled recipes (4-8)
SEED = 42
# The product's defaults: alpaca prompt, 512 tokens, answer-only loss, LoRA r16 all-linear.
RECIPE = Recipe(name="bench-train", base_model="random Llama", epochs=1)
# Small enough for 2 CPU cores, large enough that a step is real matrix work; the 32K head
# costs per position, as padding does, so it does not flatter packing.
MODEL = LlamaConfig(
    vocab_size=32000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
)  # fmt: skip


def measure(mode: str, examples: list[Example], pad_id: int, rows_per_batch: int) -> dict:
    """One mode over every example once, in this (fresh) process: tokens, seconds, its peak."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    model = get_peft_model(LlamaForCausalLM(MODEL), lora_config(RECIPE))
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=RECIPE.optim.lr
    )
    collator = Collator(pad_id)
    if mode == "padded":
        order = list(range(len(examples)))
        random.Random(SEED).shuffle(order)  # noqa: S311 - a reproducible order
        groups: list = [order[at : at + BATCH] for at in range(0, len(order), BATCH)]
        collate = lambda group: padded_batch([examples[i] for i in group], pad_id)  # noqa: E731
    else:
        rows = rows_dataset(examples, RECIPE).shuffle(seed=SEED).to_list()
        groups = [rows[at : at + rows_per_batch] for at in range(0, len(rows), rows_per_batch)]
        collate = collator

    def step(batch: dict[str, torch.Tensor]) -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocator, first calls of the kernels; not counted
        step(collate(groups[0]))
    collator.tokens = tokens = positions = 0
    start = time.perf_counter()
    for group in groups:
        batch = collate(group)
        positions += batch["input_ids"].numel()
        if mode == "padded":
            tokens += int(batch["attention_mask"].sum())
        step(batch)
    seconds = time.perf_counter() - start
    tokens += collator.tokens  # packed: the trainer's own count, as its tokens/s; padded: 0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"tokens": tokens, "positions": positions, "steps": len(groups),
            "seconds": seconds, "peak_mb": peak_mb}  # fmt: skip


def in_child(*args: object) -> dict:
    """`measure` in a fresh spawned process: its own memory peak, no state carried over."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(measure, *args).result()


def main() -> None:
    if not DATA.is_file():
        sys.exit(f"{DATA} not found: set DISTILLERY_TEST_DATA")
    records = random.Random(SEED).sample(json.loads(DATA.read_text()), N)  # noqa: S311
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    pad_id = tokenizer.eos_token_id  # the Llama-2 tokenizer has no pad token; the trainer's rule
    examples, too_long = encode(records, RECIPE, tokenizer)
    lengths = [len(e) for e in examples]
    packed_rows = rows_dataset(examples, RECIPE)
    mean, row_mean = statistics.mean(lengths), sum(lengths) / len(packed_rows)
    # As many real tokens per step as a padded batch holds on average.
    rows_per_batch = max(1, round(BATCH * mean / row_mean))
    print(f"{len(examples)} examples ({too_long} over 512 dropped), mean {mean:.0f} tokens, "
          f"median {statistics.median(lengths):.0f}, max {max(lengths)}; "
          f"{len(packed_rows)} packed rows of {row_mean:.0f} tokens on average; "
          f"padded {BATCH} examples per step, packed {rows_per_batch} rows")  # fmt: skip

    # Without packing, the trainer's Collator would give these same ids and labels (with a 4-D
    # mask, the same compute): the baseline differs from the product only by the packing.
    unpacked = rows_dataset(examples[:BATCH], RECIPE.model_copy(
        update={"data": RECIPE.data.model_copy(update={"packing": False})}))  # fmt: skip
    ours, plain = Collator(pad_id)(unpacked.to_list()), padded_batch(examples[:BATCH], pad_id)
    assert all(torch.equal(ours[k], plain[k]) for k in ("input_ids", "labels"))

    runs: dict[str, list[dict]] = {"padded": [], "packed": []}
    for repeat in range(REPEATS):
        for mode in runs:  # alternating, so drift in the machine's load hits both
            run = in_child(mode, examples, pad_id, rows_per_batch)
            assert run["tokens"] == sum(lengths), (mode, run["tokens"], sum(lengths))
            runs[mode].append(run)
            print(f"{repeat + 1}/{REPEATS} {mode}: {run['tokens'] / run['seconds']:.0f} tok/s, "
                  f"{run['steps']} steps in {run['seconds']:.1f} s, "
                  f"{run['tokens'] / run['positions']:.0%} of positions real, "
                  f"peak RSS {run['peak_mb']:.0f} MiB")  # fmt: skip

    rate = {
        mode: statistics.median(r["tokens"] / r["seconds"] for r in rs) for mode, rs in runs.items()
    }
    peak = {mode: max(r["peak_mb"] for r in rs) for mode, rs in runs.items()}
    result = {
        "tokens_per_s_packed": round(rate["packed"]),
        "tokens_per_s_padded": round(rate["padded"]),
        "speedup": round(rate["packed"] / rate["padded"], 2),
        "peak_rss_mb": round(peak["packed"]),
        "peak_rss_mb_padded": round(peak["padded"]),
        "fill_packed": round(sum(lengths) / runs["packed"][0]["positions"], 3),
        "fill_padded": round(sum(lengths) / runs["padded"][0]["positions"], 3),
        "examples": len(examples),
        "dropped_too_long": too_long,
        "tokens": sum(lengths),
        "steps_packed": runs["packed"][0]["steps"],
        "steps_padded": runs["padded"][0]["steps"],
        "batch_padded": BATCH,
        "rows_per_batch_packed": rows_per_batch,
        "model": f"llama h{MODEL.hidden_size} L{MODEL.num_hidden_layers} v{MODEL.vocab_size}",
        "lora_rank": RECIPE.lora.rank,
        "max_seq_len": RECIPE.data.max_seq_len,
        "threads": THREADS,
        "repeats": REPEATS,
        "quick": QUICK,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
