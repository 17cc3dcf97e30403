"""One training run: a curated snapshot and a recipe in, an adapter out. Read top to bottom:
setup (tokenizer, examples, model), train (TRL's SFTTrainer over our packed rows), save.

Packing is ours, not TRL's: TRL's padding-free packing relies on FlashAttention to keep packed
examples apart, and CPUs have none; our rows carry a block-diagonal mask (core.packed_batch)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from services.trainer.core import IGNORE, Example, pack, packed_batch, prompt_and_answer, tokenize
from services.trainer.recipe import Recipe


@dataclass(frozen=True)
class RunResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    eval_loss_before: float | None  # mean per answer token on the held-out split
    eval_loss_after: float | None
    dropped_too_long: int
    seconds: float


def read_split(snapshot: Path, split: str) -> list[dict[str, str]]:
    """A split of a snapshot in the alpaca format; [] when the snapshot has none."""
    path = snapshot / "alpaca" / f"{split}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def encode(
    records: list[dict[str, str]], recipe: Recipe, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Example], int]:
    """Examples in the recipe's prompt format, and how many did not fit max_seq_len."""
    examples = []
    for record in records:
        prompt, answer = prompt_and_answer(record, recipe.data.prompt_format, tokenizer)
        example = tokenize(prompt, answer, tokenizer, max_len=recipe.data.max_seq_len,
                           completion_only=recipe.data.completion_only)  # fmt: skip
        if example is not None:
            examples.append(example)
    return examples, len(records) - len(examples)


def rows_dataset(examples: list[Example], recipe: Recipe) -> Dataset:
    """One row per packed group (or per example without packing), as the collator reads it."""
    if recipe.data.packing:
        groups = pack([len(e) for e in examples], recipe.data.max_seq_len)
    else:
        groups = [[i] for i in range(len(examples))]
    return Dataset.from_list(
        [
            {
                "input_ids": [t for i in group for t in examples[i].input_ids],
                "labels": [t for i in group for t in examples[i].labels],
                "lengths": [len(examples[i]) for i in group],
            }
            for group in groups
        ]
    )


class Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = []
        for feature in features:
            row, at = [], 0
            for n in feature["lengths"]:
                row.append(
                    Example(feature["input_ids"][at : at + n], feature["labels"][at : at + n])
                )
                at += n
            rows.append(row)
        return packed_batch(rows, self.pad_id)


@torch.no_grad()
def held_out_loss(model: Any, examples: list[Example], pad_id: int, batch: int = 16) -> float:
    """Mean cross-entropy per answer token (the labelled ones), one example per row."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch):
        inputs = packed_batch([[e] for e in examples[start : start + batch]], pad_id)
        labels = inputs.pop("labels")[:, 1:]
        logits = model(**inputs).logits[:, :-1]
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
            ignore_index=IGNORE, reduction="sum",
        ).item()  # fmt: skip
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def run(recipe: Recipe, snapshot: Path, output: Path, *, resume: bool = False) -> RunResult:
    started = time.monotonic()
    # --- setup
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(recipe.base_model)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    train, too_long = encode(read_split(snapshot, "train"), recipe, tokenizer)
    held_out, _ = encode(read_split(snapshot, "eval"), recipe, tokenizer)
    if not train:
        raise ValueError(f"{snapshot}: no training example fits {recipe.data.max_seq_len} tokens")
    dataset = rows_dataset(train, recipe)
    model = AutoModelForCausalLM.from_pretrained(recipe.base_model, dtype=_dtype(recipe))
    before = held_out_loss(model, held_out, pad_id) if held_out else None

    # --- train
    trainer = SFTTrainer(
        model=model,
        args=_arguments(recipe, output, len(dataset)),
        train_dataset=dataset,
        data_collator=Collator(pad_id),
        processing_class=tokenizer,
        peft_config=_lora(recipe),
    )
    checkpoints = sorted((output / "checkpoints").glob("checkpoint-*"))
    outcome = trainer.train(resume_from_checkpoint=bool(resume and checkpoints))

    # --- save
    adapter = output / "adapter"
    tuned: Any = trainer.model  # a PeftModel: save_pretrained writes the adapter alone
    tuned.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    after = held_out_loss(tuned, held_out, pad_id) if held_out else None
    return RunResult(adapter, outcome.global_step, outcome.training_loss, before, after,
                     too_long, time.monotonic() - started)  # fmt: skip


def _dtype(recipe: Recipe) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[recipe.precision]


def _lora(recipe: Recipe) -> LoraConfig | None:
    if recipe.method == "full":
        return None
    if recipe.method == "qlora":
        raise NotImplementedError("qlora: 4-bit loading with bitsandbytes is not wired yet")
    lora = recipe.lora
    return LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type="CAUSAL_LM",
    )  # fmt: skip


def _arguments(recipe: Recipe, output: Path, rows: int) -> SFTConfig:
    steps_per_epoch = math.ceil(rows / recipe.batch_size / recipe.grad_accum)
    total = recipe.max_steps or math.ceil(steps_per_epoch * (recipe.epochs or 1))
    return SFTConfig(
        output_dir=str(output / "checkpoints"),
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        num_train_epochs=recipe.epochs or 1,
        max_steps=recipe.max_steps or -1,
        learning_rate=recipe.optim.lr,
        lr_scheduler_type=recipe.optim.schedule,
        # transformers 5 takes warm-up in steps only
        warmup_steps=round(recipe.optim.warmup_ratio * total),
        weight_decay=recipe.optim.weight_decay,
        activation_checkpointing=recipe.gradient_checkpointing,
        bf16=recipe.precision == "bf16",
        fp16=recipe.precision == "fp16",
        seed=recipe.seed,
        save_strategy="steps",
        save_steps=max(1, total // 10),
        save_total_limit=2,
        logging_steps=max(1, total // 20),
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        # our rows are tokenised, packed and masked already
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
    )
