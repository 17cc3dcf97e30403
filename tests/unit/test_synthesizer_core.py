"""The synthesizer's pure pieces: quality filters, prompt files, model terms, and Self-Instruct's
own filters and answer formats on the paper's seed tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import terms
from services.synthesizer.core import Limits, Quality, Triple, grounding, length_problem
from services.synthesizer.prompts import bundled, load_prompt
from services.synthesizer.selfinstruct import (
    instruction_problem,
    load_seed_tasks,
    parse_instances,
    parse_instructions,
)

pytestmark = pytest.mark.unit

SOURCE = (
    "LoRA freezes the pretrained model weights and injects trainable rank decomposition "
    "matrices into each layer of the Transformer architecture, greatly reducing the number "
    "of trainable parameters for downstream tasks."
)


def triple(instruction: str = "What does LoRA freeze?", output: str = "The weights.") -> Triple:
    return Triple(instruction, "", output, "qa")


def test_grounding_is_the_share_of_content_words_found_in_the_source() -> None:
    assert grounding("LoRA freezes the pretrained model weights", SOURCE) == 1.0
    assert grounding("LoRA FREEZES the pretrained weights!", SOURCE) == 1.0  # case, punctuation
    assert grounding("LoRA doubles inference latency on GPUs", SOURCE) == pytest.approx(1 / 5)
    assert grounding("Yes.", SOURCE) == 0.0  # nothing the source could support


def test_length_bounds() -> None:
    limits = Limits(instruction_min=3, instruction_max=10, output_min=2, output_max=5)
    assert length_problem(triple("Why?"), limits) == "too_short"
    assert length_problem(triple(output="Weights."), limits) == "too_short"
    assert length_problem(triple(output="one two three four five six"), limits) == "too_long"
    assert length_problem(triple(), limits) is None


def test_quality_filters_in_order_and_remembers_nothing() -> None:
    quality = Quality(Limits(), grounding_min=0.5)
    good = triple(output="The pretrained model weights.")
    assert quality.problem(good, SOURCE) is None
    # Seen before is no reason: which chunk's copy is kept is the curation's decision.
    assert quality.problem(good, SOURCE) is None
    made_up = triple(output="It trains every weight in full precision.")
    assert quality.problem(made_up, SOURCE) == "ungrounded"
    assert quality.problem(made_up, None) is None  # not grounded: self-instruct
    short = triple(output="Weights")
    assert quality.problem(short, SOURCE) == length_problem(short, Limits())


def test_bundled_prompts_load_with_their_hash() -> None:
    assert {"triples-v1", "qa-chat-v1", "self-instruct-v1"} <= set(bundled())
    for ref in bundled():
        prompt = load_prompt(ref)
        assert prompt.id == ref and len(prompt.hash) == 64
    triples = load_prompt("triples-v1")
    text = triples.render("user", format="F", title="T", section="S", text="BODY")
    assert text.endswith("Text:\nBODY") and "Paper: T" in text
    assert triples.schema is not None and triples.schema["required"] == ["triples"]
    with pytest.raises(KeyError):
        triples.render("user", format="F")  # a placeholder left out is an error, not a blank


def test_a_prompt_file_by_path_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("id: mine-v1\nkind: qa\nsystem: s\nuser: $text\nrepair: again\n")
    first = load_prompt(str(path))
    assert first.id == "mine-v1" and first.kind == "qa"
    path.write_text("id: mine-v1\nkind: qa\nsystem: s\nuser: $text  \nrepair: again\n")
    assert load_prompt(str(path)).hash != first.hash  # any change, a new hash
    with pytest.raises(ValueError, match="neither a file nor one of"):
        load_prompt("no-such-prompt")
    path.write_text("id: x\nkind: poem\nsystem: s\n")
    with pytest.raises(ValueError, match="kind 'poem'"):
        load_prompt(str(path))
    path.write_text("id: x\nkind: triples\nsystem: s\nuser: u\n")
    with pytest.raises(ValueError, match="repair"):
        load_prompt(str(path))


def test_terms_table() -> None:
    assert terms.terms_for("llama3-70b-8192") == terms.LLAMA3
    assert terms.terms_for("meta-llama/Meta-Llama-3-8B-Instruct") == terms.LLAMA3
    assert terms.terms_for("llama-3.3-70b-versatile") == terms.LLAMA31
    assert terms.terms_for("gpt-4o-mini") == terms.OPENAI
    assert terms.terms_for("reading-comprehension") == terms.NO_MODEL
    assert terms.terms_for("mistral-7b") is None
    assert terms.violations(["llama3", "none"], "meta-llama/Meta-Llama-3-8B") == []
    found = terms.violations(["llama3", "none", None], "microsoft/phi-1_5")
    assert len(found) == 1 and "Llama 3" in found[0] and "phi-1_5" in found[0]


def test_terms_table_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "terms.yaml"
    path.write_text(
        "- models: ['acme-*']\n  id: acme\n  name: ACME terms\n  may_train: ['acme-*']\n"
    )
    rules = terms.load_rules(path)
    assert terms.terms_for("ACME-large", rules) is not None
    assert terms.violations(["acme"], "llama-7b", rules)
    path.write_text("- id: broken\n")
    with pytest.raises(ValueError, match="rule 0"):
        terms.load_rules(path)


def test_self_instruct_filters_follow_the_paper() -> None:
    assert instruction_problem("Explain how rainbows form.") is None
    assert instruction_problem("Sort these words.") == "too_short"  # 3 words: not more than 3
    assert instruction_problem("Draw a picture of your house.") == "blacklisted"
    assert instruction_problem("Create a plot of the data below.") == "blacklisted"
    assert instruction_problem("Please go to the website and summarise it.") == "blacklisted"
    assert instruction_problem("Write a program that adds two numbers.") == "blacklisted"
    assert instruction_problem('"Quote" the following sentence back.') == "punctuation_start"
    assert instruction_problem("Écris une phrase sur la mer.") == "non_english_start"
    assert (
        instruction_problem("Mapping words to their opposites is fun.") is None
    )  # a word, not "map"


def test_self_instruct_answer_formats() -> None:
    listed = "Write a haiku about autumn.\nTask 10: classify the sentiment.\n11. Find the errors."
    assert parse_instructions(listed) == [
        "Write a haiku about autumn.",
        "Classify the sentiment.",
        "Find the errors.",
    ]
    input_first = "Example 1\nInput: 2 + 2\nOutput: 4\n\nExample 2\nInput: <noinput>\nOutput: 7"
    assert parse_instances(input_first, classification=False) == [("2 + 2", "4"), ("", "7")]
    output_first = (
        "Class label: Positive\nSentence: Loved it.\nClass label: Negative\nSentence: No."
    )
    assert parse_instances(output_first, classification=True) == [
        ("Sentence: Loved it.", "Positive"),
        ("Sentence: No.", "Negative"),
    ]
    # The paper's instance filters: an output equal to its input, one input with two outputs.
    assert parse_instances("Input: a\nOutput: a", classification=False) == []
    clash = "Input: x\nOutput: 1\nInput: x\nOutput: 2\nInput: y\nOutput: 3"
    assert parse_instances(clash, classification=False) == [("y", "3")]


def test_seed_tasks_load(test_data: Path, tmp_path: Path) -> None:
    seeds = load_seed_tasks(test_data / "data/instructions/self_instruct/seed_tasks.jsonl")
    assert len(seeds) == 175
    assert sum(s.is_classification for s in seeds) == 26
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    with pytest.raises(ValueError, match="seeds.jsonl:1"):
        load_seed_tasks(bad)
    no_classification = tmp_path / "plain.jsonl"
    lines = (test_data / "data/instructions/self_instruct/seed_tasks.jsonl").read_text()
    no_classification.write_text(
        "\n".join(line for line in lines.splitlines() if '"is_classification": false' in line)
    )
    with pytest.raises(ValueError, match="2\\+ classification seed tasks"):
        load_seed_tasks(no_classification)


def test_settings_name_what_is_missing(test_data: Path) -> None:
    from pydantic import ValidationError

    from pipeline.settings import KafkaSettings
    from services.synthesizer.config import SynthesizerSettings

    def settings(**values: object) -> SynthesizerSettings:
        return SynthesizerSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"), **values)

    assert settings().generator == "reading-comprehension"
    cases = {
        "needs SYNTHESIZER_MODEL": {"generator": "groq", "api_key": "k"},
        "needs SYNTHESIZER_API_KEY": {"generator": "openai", "model": "gpt-4o"},
        "needs SYNTHESIZER_BASE_URL": {"generator": "openai-compatible", "model": "m"},
        "needs SYNTHESIZER_SEED_TASKS": {
            "generator": "openai-compatible", "model": "m", "base_url": "http://x/v1",
            "prompt": "self-instruct-v1",
        },
        "no prompt 'triples-v9'": {
            "generator": "openai-compatible", "model": "m", "base_url": "http://x/v1",
            "prompt": "triples-v9",
        },
        "needs the price of 'my-model'": {
            "generator": "openai-compatible", "model": "my-model", "base_url": "http://x/v1",
            "budget_usd": 5,
        },
        "SYNTHESIZER_JUDGE needs a provider": {"judge": True},
    }  # fmt: skip
    for message, values in cases.items():
        with pytest.raises(ValidationError, match=message):
            settings(**values)
    seeds = test_data / "data/instructions/self_instruct/seed_tasks.jsonl"
    ok = settings(generator="groq", model="llama-3.3-70b-versatile", api_key="k",
                  prompt="self-instruct-v1", seed_tasks=seeds, budget_usd=1.0)  # fmt: skip
    assert ok.price is not None and ok.structured_output == "json_object"
