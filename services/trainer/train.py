"""One training run: a curated snapshot and a recipe in, an adapter out. Read top to bottom:
setup (tokenizer, examples, model), train (TRL's SFTTrainer over our packed rows), save.

Packing is ours, not TRL's: TRL's padding-free packing relies on FlashAttention to keep packed
examples apart, and CPUs have none; our rows carry a block-diagonal mask (core.packed_batch).

A run resumes from the last complete checkpoint in its output directory (optimizer, scheduler,
RNG and data position, through the Trainer), so a killed run goes on where it stopped. Run as
`python -m services.trainer.train SNAPSHOT RECIPE OUTPUT` it prints its progress as JSON lines;
that is how the service runs it, and how torchrun / accelerate launch it on several GPUs."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedTokenizerBase,
    PrinterCallback,
    TrainerCallback,
)
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from services.trainer.core import IGNORE, Example, pack, packed_batch, prompt_and_answer, tokenize
from services.trainer.recipe import Recipe, load_recipe

#: The exit status of `main` when stopped by a signal after saving a checkpoint.
STOPPED = 3
#: transformers writes trainer_state.json last: a checkpoint without it was cut short.
_COMPLETE = "trainer_state.json"


@dataclass(frozen=True)
class RunResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    eval_loss_before: float | None  # mean per answer token on the held-out split
    eval_loss_after: float | None
    dropped_too_long: int
    train_examples: int
    tokens: int  # the non-padding tokens trained on by this process (not before a resume)
    tokens_per_s: float
    seconds: float
    resumed_from: int | None  # the step of the checkpoint it resumed from


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    tokens_per_s: float  # non-padding tokens, since this process started training
    eta_s: float


class Interrupted(Exception):  # noqa: N818 - a state, not a failure
    """Stopped on request after saving a checkpoint; running again resumes from it."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}, checkpoint saved")
        self.step = step


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
        self.tokens = 0  # non-padding tokens collated so far, for tokens/s

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
            self.tokens += at
        return packed_batch(rows, self.pad_id)


class _Watch(TrainerCallback):
    """Reports progress at each logging step, and stops cleanly (a checkpoint first) when
    `should_stop()` says so."""

    def __init__(
        self,
        collator: Collator,
        report: Callable[[Progress], None],
        should_stop: Callable[[], bool],
    ) -> None:
        self.collator = collator
        self.report = report
        self.should_stop = should_stop
        self.started = time.monotonic()
        self.first_step = 0
        self.stopped = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.first_step = time.monotonic(), state.global_step
        self.collator.tokens = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.should_stop():
            self.stopped = control.should_save = control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        elapsed = time.monotonic() - self.started
        done = state.global_step - self.first_step
        per_step = elapsed / done if done else 0.0
        self.report(
            Progress(
                step=state.global_step,
                total_steps=state.max_steps,
                loss=float(logs["loss"]),
                learning_rate=float(logs.get("learning_rate", 0.0)),
                tokens_per_s=self.collator.tokens / elapsed if elapsed else 0.0,
                eta_s=per_step * (state.max_steps - state.global_step),
            )
        )


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


def run(
    recipe: Recipe,
    snapshot: Path,
    output: Path,
    *,
    progress: Callable[[Progress], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Train `recipe` on `snapshot` into `output` (adapter/, trainer_state.json, checkpoints/),
    resuming from the last complete checkpoint there. Raises Interrupted when stopped early."""
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
    model = _load_model(recipe)
    before = held_out_loss(model, held_out, pad_id) if held_out else None

    # --- train
    collator = Collator(pad_id)
    watch = _Watch(collator, progress, should_stop)
    trainer = SFTTrainer(
        model=model,
        args=_arguments(recipe, output, len(dataset)),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        peft_config=lora_config(recipe),
        callbacks=[watch],
    )
    trainer.remove_callback(PrinterCallback)  # it prints dicts to stdout; _Watch reports
    checkpoint = last_checkpoint(output / "checkpoints", tidy=trainer.is_world_process_zero())
    outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if watch.stopped and outcome.global_step < trainer.state.max_steps:
        raise Interrupted(outcome.global_step)
    seconds = time.monotonic() - watch.started

    # --- save (one process writes, under torchrun too)
    adapter = output / "adapter"
    tuned: Any = trainer.model  # a PeftModel: save_pretrained writes the adapter alone
    if trainer.is_world_process_zero():
        tuned.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        (adapter / "recipe.yaml").write_text(
            yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        trainer.state.save_to_json(str(output / "trainer_state.json"))
    after = held_out_loss(tuned, held_out, pad_id) if held_out else None
    return RunResult(
        adapter_dir=adapter,
        steps=outcome.global_step,
        train_loss=outcome.training_loss,
        eval_loss_before=before,
        eval_loss_after=after,
        dropped_too_long=too_long,
        train_examples=len(train),
        tokens=collator.tokens,
        tokens_per_s=collator.tokens / seconds if seconds else 0.0,
        seconds=time.monotonic() - started,
        resumed_from=_step(checkpoint) if checkpoint else None,
    )


def last_checkpoint(directory: Path, *, tidy: bool = True) -> Path | None:
    """The newest complete checkpoint; with `tidy` (one process of several does it), ones
    cut short by a kill are removed."""
    complete = []
    for path in directory.glob("checkpoint-*"):
        if _complete(path):
            complete.append(path)
        elif tidy:
            shutil.rmtree(path)
    return max(complete, key=_step, default=None)


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / _COMPLETE).read_text())
    except (OSError, ValueError):  # missing, or cut short while being written
        return False
    return True


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rpartition("-")[2])


def _dtype(recipe: Recipe) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[recipe.precision]


def _load_model(recipe: Recipe) -> Any:
    if recipe.method != "qlora":
        return AutoModelForCausalLM.from_pretrained(recipe.base_model, dtype=_dtype(recipe))
    # QLoRA as the paper has it: NF4 weights, the quantisation constants quantised again,
    # computation in the recipe's precision. bitsandbytes does this on CPU too, slowly.
    quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=_dtype(recipe),
    )
    model = AutoModelForCausalLM.from_pretrained(
        recipe.base_model, dtype=_dtype(recipe), quantization_config=quantization
    )
    from bitsandbytes.nn import Linear4bit  # type: ignore[attr-defined]  # only for QLoRA

    for module in model.modules():
        if isinstance(module, Linear4bit):
            # On CPUs with AVX512-BF16, bitsandbytes repacks the weights in place for
            # inference (our held-out loss), and asserts on widths that are not a multiple
            # of 32 (172 in stories260K). Training never uses that path; keep one layout.
            module.support_avx512bf16_for_cpu = False
    # Norms and the head in fp32 and input gradients on, which checkpointing needs.
    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model, use_gradient_checkpointing=recipe.gradient_checkpointing
    )


def lora_config(recipe: Recipe) -> LoraConfig | None:
    if recipe.method == "full":
        return None
    lora = recipe.lora
    return LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type="CAUSAL_LM",
    )  # fmt: skip


def _arguments(recipe: Recipe, output: Path, rows: int) -> SFTConfig:
    # Under torchrun each of WORLD_SIZE processes takes its share of every batch of rows.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(rows / recipe.batch_size / recipe.grad_accum / world)
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


def main(argv: list[str] | None = None) -> None:
    """One run from the command line; progress and the result as JSON lines on stdout.

    Exit status 0: trained (the result is also in OUTPUT/result.json); 3: stopped by SIGTERM
    or SIGINT after a checkpoint, to be resumed by running the same command again."""
    parser = argparse.ArgumentParser(prog="python -m services.trainer.train")
    parser.add_argument("snapshot", type=Path, help="a curated snapshot directory")
    parser.add_argument("recipe", type=Path, help="a recipe file or a bundled recipe's name")
    parser.add_argument("output", type=Path, help="where the adapter and checkpoints go")
    parser.add_argument("--base-model", help="overrides the recipe's base_model")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe)
    if args.base_model:
        recipe = recipe.model_copy(update={"base_model": args.base_model})
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def emit(event: str, fields: dict[str, Any]) -> None:
        print(json.dumps({"event": event, **fields}, default=str), flush=True)

    # A trainer service killed outright (SIGKILL, OOM) sends no SIGTERM: its child notices
    # it was orphaned and stops at a checkpoint, so the restarted service's resumed run is
    # the only one writing to the output directory.
    parent = os.getppid()
    try:
        result = run(
            recipe,
            args.snapshot,
            args.output,
            progress=lambda p: emit("progress", asdict(p)),
            should_stop=lambda: stopping or os.getppid() != parent,
        )
    except Interrupted as exc:
        emit("interrupted", {"step": exc.step})
        sys.exit(STOPPED)
    if int(os.environ.get("RANK", "0")) == 0:  # one process reports, under torchrun too
        (args.output / "result.json").write_text(json.dumps(asdict(result), default=str, indent=2))
        emit("done", asdict(result))


if __name__ == "__main__":
    main()
