"""The trainer's pure pieces with the real stories260K model and tokenizer: prompt formats, the
prompt masked out of the loss token by token, best-fit packing, attention that never crosses
from one packed example into another, and recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.trainer.core import (
    ALPACA_INPUT,
    IGNORE,
    Backlog,
    Example,
    pack,
    packed_batch,
    padded_batch,
    prompt_and_answer,
    tokenize,
)
from services.trainer.recipe import BUNDLED, load_recipe

pytestmark = pytest.mark.unit

RECORD = {"instruction": "What does LoRA freeze?", "input": "", "output": "The weights."}


@pytest.fixture(scope="module")
def model_dir(test_data: Path) -> Path:
    return test_data / "models" / "stories260K"


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):  # noqa: ANN201 - a transformers tokenizer
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir: Path):  # noqa: ANN201
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def examples(tokenizer, records: list[dict[str, str]], max_len: int = 256) -> list[Example]:  # noqa: ANN001
    """The records that fit, as examples in the question_answer format."""
    out = []
    for record in records:
        prompt, answer = prompt_and_answer(record, "question_answer", tokenizer)
        example = tokenize(prompt, answer, tokenizer, max_len=max_len, completion_only=True)
        if example is not None:
            out.append(example)
    return out


def test_prompt_formats(tokenizer) -> None:  # noqa: ANN001
    with_input = {**RECORD, "input": "LoRA paper, section 4."}
    prompt, answer = prompt_and_answer(with_input, "alpaca", tokenizer)
    assert prompt == ALPACA_INPUT.format(
        instruction=RECORD["instruction"], input=with_input["input"]
    )
    assert prompt.endswith("### Response:\n") and answer == "The weights."
    prompt, _ = prompt_and_answer(RECORD, "alpaca", tokenizer)
    assert "### Input:" not in prompt
    assert prompt_and_answer(with_input, "question_answer", tokenizer) == (
        "question: What does LoRA freeze?\n\nLoRA paper, section 4. answer:", " The weights."
    )  # fmt: skip
    with pytest.raises(ValueError, match="no chat template"):
        prompt_and_answer(RECORD, "chat_template", tokenizer)


def test_the_chat_template_splits_prompt_from_answer(tokenizer) -> None:  # noqa: ANN001
    templated = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    templated.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt, answer = prompt_and_answer(RECORD, "chat_template", templated)
    assert prompt == "<|user|>What does LoRA freeze?</s><|assistant|>"
    assert answer == "The weights.</s>"


def test_only_the_answer_carries_loss_token_by_token(tokenizer) -> None:  # noqa: ANN001
    prompt, answer = prompt_and_answer(RECORD, "alpaca", tokenizer)
    example = tokenize(prompt, answer, tokenizer, max_len=512, completion_only=True)
    assert example is not None
    n_prompt = len(tokenizer(prompt)["input_ids"])
    assert example.labels[:n_prompt] == [IGNORE] * n_prompt
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    assert example.input_ids[-1] == tokenizer.eos_token_id
    learned = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(learned) == "The weights.</s>"
    whole = tokenize(prompt, answer, tokenizer, max_len=512, completion_only=False)
    assert whole is not None and whole.labels[1:] == whole.input_ids[1:]
    assert whole.labels[0] == IGNORE  # never predicted across a packed boundary


def test_long_answers_are_cut_and_long_prompts_refused(tokenizer) -> None:  # noqa: ANN001
    prompt, answer = prompt_and_answer({**RECORD, "output": "word " * 400}, "alpaca", tokenizer)
    n_prompt = len(tokenizer(prompt)["input_ids"])
    cut = tokenize(prompt, answer, tokenizer, max_len=n_prompt + 10, completion_only=True)
    assert cut is not None and len(cut) == n_prompt + 10 and cut.labels[-1] != IGNORE
    assert tokenize(prompt, answer, tokenizer, max_len=n_prompt, completion_only=True) is None


def test_best_fit_packing_places_every_example_once(tokenizer, test_data: Path) -> None:  # noqa: ANN001
    rows = json.loads((test_data / "data/instructions/alpaca/alpaca_data.json").read_text())
    lengths = [len(e) for e in examples(tokenizer, [r for r in rows[:2000] if r["output"]])]
    assert len(lengths) > 1500  # a few are longer than 256 tokens with this small vocabulary
    packed = pack(lengths, 256)
    placed = sorted(i for row in packed for i in row)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 256 for row in packed)
    lower_bound = -(-sum(lengths) // 256)
    assert len(packed) <= 1.02 * lower_bound  # within 2 % of perfect
    assert pack(lengths, 256) == packed
    with pytest.raises(ValueError, match="more than 256"):
        pack([300], 256)


def test_attention_never_crosses_packed_examples(tokenizer, model) -> None:  # noqa: ANN001
    """Each example's logits in a packed row equal its logits alone, in both attention
    implementations a CPU runs; so does its loss."""
    records = [
        {"instruction": "Tell a story about a cat.", "output": "Once upon a time a cat sat."},
        {"instruction": "Where did the dog go?", "output": "The dog ran to the park."},
        {"instruction": "Who was happy?", "output": "Lily was happy with her ball."},
    ]
    batch_examples = examples(tokenizer, records)
    rows = [[batch_examples[0], batch_examples[1]], [batch_examples[2]]]
    for implementation in ("sdpa", "eager"):
        model.config._attn_implementation = implementation
        with torch.no_grad():
            packed = model(**{k: v for k, v in packed_batch(rows, 0).items() if k != "labels"})
            start = 0
            for example in rows[0]:
                alone = model(torch.tensor([example.input_ids])).logits[0]
                got = packed.logits[0, start : start + len(example)]
                torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)
                start += len(example)
            alone = model(torch.tensor([rows[1][0].input_ids])).logits[0]
            torch.testing.assert_close(
                packed.logits[1, : len(rows[1][0])], alone, atol=1e-4, rtol=1e-4
            )
    model.config._attn_implementation = "sdpa"


def test_a_packed_batch_learns_what_a_padded_one_does(tokenizer, model) -> None:  # noqa: ANN001
    """Same examples, same summed loss over answer tokens, packed or padded."""
    records = [{"instruction": f"Count to {n}.", "output": " ".join(map(str, range(n)))}
               for n in (2, 5, 9, 3)]  # fmt: skip
    batch_examples = examples(tokenizer, records)
    with torch.no_grad():
        padded = padded_batch(batch_examples, tokenizer.eos_token_id)
        rows = [
            [batch_examples[i] for i in row] for row in pack([len(e) for e in batch_examples], 64)
        ]
        packed = packed_batch(rows, tokenizer.eos_token_id)
        losses = []
        for batch in (padded, packed):
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            shifted = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                ignore_index=IGNORE, reduction="sum",
            )  # fmt: skip
            losses.append(shifted)
    assert len(rows) < len(batch_examples)
    torch.testing.assert_close(losses[0], losses[1], atol=1e-3, rtol=1e-4)
    assert int((packed["labels"] != IGNORE).sum()) == int((padded["labels"] != IGNORE).sum())


def test_the_bundled_recipes_load(tmp_path: Path) -> None:
    names = sorted(p.stem for p in BUNDLED.glob("*.yaml"))
    assert names == ["llama-7b-alpaca", "llama3-8b-qlora", "phi-1_5-lora", "stories260k-lora"]
    recipes = {name: load_recipe(Path(name)) for name in names}
    assert recipes["llama3-8b-qlora"].method == "qlora"
    assert recipes["llama3-8b-qlora"].data.prompt_format == "chat_template"
    assert recipes["llama-7b-alpaca"].optim.lr == 2e-5
    assert recipes["stories260k-lora"].lora.target_modules == "all-linear"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nbase_model: m\nmethod: qlora4\nepochs: 1\nmax_steps: 5\nlora: {rnk: 4}\n"
    )
    with pytest.raises(ValueError) as exc:
        load_recipe(bad)
    message = str(exc.value)
    assert "method: Input should be 'lora', 'qlora' or 'full'" in message
    assert "lora.rnk: Extra inputs are not permitted" in message
    with pytest.raises(ValueError, match="cannot read the recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_a_run_is_due_after_enough_new_pairs_and_a_quiet_spell() -> None:
    backlog = Backlog(min_new=3, idle_s=10)
    for t in (0, 1):
        backlog.arrived("a", now=t)
    backlog.arrived("b", now=0, n=5)
    assert backlog.due(now=30) == ["b"]  # a has 2 of 3
    backlog.arrived("a", now=25)
    assert backlog.due(now=34) == ["b"]  # a's last pair came 9 s ago
    assert backlog.due(now=35) == ["a", "b"]
    assert backlog.take("a") == 3 and backlog.new("a") == 0
    assert backlog.due(now=100) == ["b"]
    backlog.arrived("a", now=101)  # during a's training: counted for the next snapshot
    assert backlog.new("a") == 1 and backlog.take("none") == 0
