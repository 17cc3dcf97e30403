"""What the trainer does to examples before the model sees them: the prompt format, tokens with
the prompt masked out of the loss, and packing several examples into one row without letting
attention cross from one into another. Pure: a tokenizer in, lists and tensors out. And when
to train: the backlog of new pairs per run."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

IGNORE = -100  # the label PyTorch's cross-entropy skips

# Stanford Alpaca's prompts (train.py, PROMPT_DICT), verbatim.
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


class Tokenizer(Protocol):
    eos_token_id: int
    chat_template: str | None

    def __call__(self, text: str, *, add_special_tokens: bool = ...) -> Any: ...
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken

    def __len__(self) -> int:
        return len(self.input_ids)


def prompt_and_answer(
    record: dict[str, str], prompt_format: str, tokenizer: Tokenizer
) -> tuple[str, str]:
    """The text the model is given and the text it must learn to answer, for an Alpaca-style
    record {instruction, input, output}."""
    instruction, given, output = record["instruction"], record.get("input", ""), record["output"]
    question = f"{instruction}\n\n{given}" if given else instruction
    if prompt_format == "alpaca":
        template = ALPACA_INPUT if given else ALPACA_NO_INPUT
        return template.format(instruction=instruction, input=given), output
    if prompt_format == "question_answer":
        return f"question: {question} answer:", f" {output}"
    if prompt_format == "chat_template":
        if not tokenizer.chat_template:
            raise ValueError("prompt_format chat_template, but the tokenizer has no chat template")
        user = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": output}], tokenize=False
        )
        if not whole.startswith(prompt):
            raise ValueError("the chat template renders the prompt differently inside a reply")
        return prompt, whole[len(prompt) :]
    raise ValueError(f"unknown prompt format {prompt_format!r}")


def tokenize(
    prompt: str, answer: str, tokenizer: Tokenizer, *, max_len: int, completion_only: bool
) -> Example | None:
    """Prompt and answer tokenised apart (so the boundary is exact, and the prompt is tokenised
    as it will be at inference), the answer ended with EOS. The answer is cut to fit `max_len`;
    None when the prompt alone leaves no room for it. The first label is always IGNORE: in a
    packed row it would be predicted from the previous example's last token."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    answer_ids.append(tokenizer.eos_token_id)
    room = max_len - len(prompt_ids)
    if room < 1:
        return None
    answer_ids = answer_ids[:room]
    ids = prompt_ids + answer_ids
    labels = [IGNORE] * len(prompt_ids) + answer_ids if completion_only else list(ids)
    labels[0] = IGNORE
    return Example(ids, labels)


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: example indices grouped into rows of at most `capacity` tokens,
    the longest first, each into the fullest row it fits. Deterministic; no example split."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row) sorted: the fullest row that fits
    for i in order:
        if lengths[i] > capacity:
            raise ValueError(f"example {i} has {lengths[i]} tokens, more than {capacity}")
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            rows.append([i])
            room, row = capacity - lengths[i], len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(i)
            room -= lengths[i]
        bisect.insort(free, (room, row))
    return rows


def packed_batch(rows: Sequence[Sequence[Example]], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of examples as one batch: ids and labels concatenated per row, positions restarting
    at 0 for each example, and a 4-D additive mask that is causal within an example and closed
    between examples (position ids alone do not isolate them outside FlashAttention). Padding
    attends only to itself and carries no loss."""
    width = max(sum(len(e) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, example in enumerate(row):
            n = len(example)
            ids[r, at : at + n] = torch.tensor(example.input_ids)
            labels[r, at : at + n] = torch.tensor(example.labels)
            positions[r, at : at + n] = torch.arange(n)
            segment[r, at : at + n] = s
            at += n
        segment[r, at:] = torch.arange(len(row), len(row) + width - at)  # each pad alone
        positions[r, at:] = 0
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same = segment[:, :, None] == segment[:, None, :]
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": positions,
        "attention_mask": mask[:, None, :, :],
    }


def padded_batch(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """One example per row, right-padded to the longest: the baseline packing is measured
    against."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for r, example in enumerate(examples):
        n = len(example)
        ids[r, :n] = torch.tensor(example.input_ids)
        labels[r, :n] = torch.tensor(example.labels)
        attention[r, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


@dataclass
class _Pending:
    new: int
    last: float  # when the last new pair arrived (monotonic seconds)


class Backlog:
    """New pairs per run, and which runs are due: `min_new` new pairs and none for `idle_s`
    (the synthesizers are done with the run for now). Thread-safe: pairs arrive on the worker
    loop's thread while the scheduler asks what is due."""

    def __init__(self, min_new: int, idle_s: float) -> None:
        self.min_new, self.idle_s = min_new, idle_s
        self._runs: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def arrived(self, run_id: str, now: float, n: int = 1) -> None:
        with self._lock:
            pending = self._runs.setdefault(run_id, _Pending(0, now))
            pending.new += n
            pending.last = now

    def due(self, now: float) -> list[str]:
        with self._lock:
            return sorted(
                run
                for run, p in self._runs.items()
                if p.new >= self.min_new and now - p.last >= self.idle_s
            )

    def take(self, run_id: str) -> int:
        """A snapshot of `run_id` is being taken: what was new is in it. Returns that count."""
        with self._lock:
            pending = self._runs.pop(run_id, None)
            return pending.new if pending else 0

    def new(self, run_id: str) -> int:
        with self._lock:
            pending = self._runs.get(run_id)
            return pending.new if pending else 0
