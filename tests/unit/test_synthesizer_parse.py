"""The tolerant answer parser: every answer family models write, and a fuzz corpus of malformed
answers of which none crashes and each is either parsed or rejected with a reason."""

from __future__ import annotations

import json
import random

import pytest

from services.synthesizer.parse import Malformed, Parsed, parse_answer

pytestmark = pytest.mark.unit

GOOD = [
    ("What is LoRA?", "", "A low-rank adaptation method that freezes the pretrained weights."),
    ("Summarise the finding.", "QLoRA fine-tunes 4-bit models.", "4-bit models can be tuned."),
    ("Name the optimizer used.", "", "AdamW with a linear schedule."),
]
REASONS = {
    "empty",
    "bad_json",
    "no_triples",
    "no_instruction",
    "no_output",
    "not_an_object",
    "bad_field",
}


def as_json(triples: list[tuple[str, str, str]], key: str = "triples") -> str:
    items = [{"instruction": i, "input": x, "output": o} for i, x, o in triples]
    return json.dumps({key: items}, indent=2)


def as_text(triples: list[tuple[str, str, str]]) -> str:
    return "\n\n".join(
        f"Triple {n}:\nInstruction: {i}\nInput: {x}\nOutput: {o}"
        for n, (i, x, o) in enumerate(triples, 1)
    )


@pytest.mark.parametrize(
    "answer",
    [
        as_json(GOOD),
        as_json(GOOD, key="pairs"),
        json.dumps([{"instruction": i, "input": x, "output": o} for i, x, o in GOOD]),
        "Sure! Here are the triples:\n```json\n" + as_json(GOOD) + "\n```\nHope it helps.",
        as_text(GOOD),
        as_text(GOOD).replace("Instruction:", "**Instruction:**").replace("Output:", "**Output:**"),
        as_text(GOOD).replace("Triple ", "### Triple "),
        " ".join(as_text(GOOD).split("\n")),  # everything on one line
    ],
    ids=["json", "json-pairs", "json-list", "fenced", "text", "bold", "markdown", "one-line"],
)
def test_every_family_gives_the_same_triples(answer: str) -> None:
    parsed = parse_answer(answer)
    assert parsed.triples == GOOD
    assert not parsed.salvaged


def test_question_answer_format_maps_onto_triples() -> None:
    parsed = parse_answer("Question: What is QLoRA?\nAnswer: 4-bit LoRA.\n\nQ: Who?\nA: Dettmers.")
    assert parsed.triples[0] == ("What is QLoRA?", "", "4-bit LoRA.")
    qa = parse_answer(json.dumps({"pairs": [{"question": "Why?", "answer": "Memory."}]}))
    assert qa.triples == [("Why?", "", "Memory.")]


def test_truncated_json_keeps_the_complete_triples() -> None:
    whole = as_json(GOOD)
    cut = whole[: whole.index(GOOD[2][0]) + 5]
    parsed = parse_answer(cut)
    assert parsed.salvaged
    assert parsed.triples == GOOD[:2]


def test_no_input_markers_become_empty() -> None:
    for marker in ("<noinput>", "N/A", "None", ""):
        parsed = parse_answer(f"Instruction: Say hi.\nInput: {marker}\nOutput: Hi!")
        assert parsed.triples == [("Say hi.", "", "Hi!")]


def test_items_without_output_are_dropped_with_a_reason() -> None:
    answer = json.dumps({"triples": [{"instruction": "A task here"}, dict(zip(
        ("instruction", "input", "output"), GOOD[0], strict=True))]})  # fmt: skip
    parsed = parse_answer(answer)
    assert parsed.triples == [GOOD[0]]
    assert parsed.dropped == ["no_output"]


def malformed_corpus() -> list[str]:
    """At least 50 answers a provider really sends when something goes wrong."""
    whole = as_json(GOOD)
    text = as_text(GOOD)
    handwritten = [
        "",
        "   \n\t ",
        "I'm sorry, but I can't help with that.",
        "As an AI language model, I cannot generate triples from this text.",
        "{",
        "[",
        "{}",
        "[]",
        "null",
        "true",
        "42",
        '"just a string"',
        '{"triples": []}',
        '{"triples": null}',
        '{"triples": "none"}',
        '{"triples": [1, 2, 3]}',
        '{"triples": [[], []]}',
        '{"triples": [{"foo": "bar"}]}',
        '{"triples": [{"instruction": "", "input": "", "output": ""}]}',
        '{"triples": [{"instruction": "Only an instruction"}]}',
        '{"triples": [{"output": "Only an output"}]}',
        '{"triples": [{"instruction": {"nested": 1}, "output": "x"}]}',
        '{"triples": [{"instruction": true, "output": false}]}',
        '{"error": {"message": "overloaded"}}',
        "```json\n```",
        "```\n{not json at all}\n```",
        "{'instruction': 'single quotes', 'output': 'python repr'}",
        '{"instruction": "a", "output": "b",}',  # trailing comma, and nothing complete inside
        "Instruction:\nInput:\nOutput:",
        "Instruction: Explain it.\nInput: n/a",
        "Output: an answer without a question",
        "Triple 1:\nTriple 2:\nTriple 3:",
        "\x00\x01\x02 binary junk \xff",
        "Ｉｎｓｔｒｕｃｔｉｏｎ： full-width labels only",
        "<html><body>502 Bad Gateway</body></html>",
        'data: {"choices": []}\n\ndata: [DONE]',
        "\ufeff",
        "🙂" * 50,
        "Instruction: " + "very long " * 2000,
    ]
    # Cut short anywhere (max_tokens), in both families.
    cuts = [whole[:n] for n in (1, 5, 17, 40, 80, len(whole) // 2, len(whole) - 3)]
    cuts += [text[:n] for n in (3, 12, 30, 60)]
    # Random byte damage of a good answer, seeded.
    rng = random.Random(7)  # noqa: S311 - reproducible damage, not secrets
    damaged = []
    for _ in range(10):
        chars = list(whole)
        for _ in range(8):
            chars[rng.randrange(len(chars))] = rng.choice('{}[]":,\\\n')
        damaged.append("".join(chars))
    return handwritten + cuts + damaged


def test_fuzz_corpus_never_crashes_and_always_explains() -> None:
    corpus = malformed_corpus()
    assert len(corpus) >= 50
    outcomes: dict[str, int] = {}
    for answer in corpus:
        try:
            parsed = parse_answer(answer)
        except Malformed as exc:
            assert exc.reason in REASONS, (answer[:80], exc.reason)
            assert str(exc)
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
            continue
        assert isinstance(parsed, Parsed) and parsed.triples
        for instruction, given, output in parsed.triples:
            assert instruction.strip() and output.strip()
            assert isinstance(given, str)
        outcomes["parsed"] = outcomes.get("parsed", 0) + 1
    # The corpus exercises both outcomes and several reasons.
    assert outcomes.get("parsed", 0) >= 5
    assert len(outcomes) >= 5, outcomes


def test_none_is_empty() -> None:
    with pytest.raises(Malformed) as info:
        parse_answer(None)
    assert info.value.reason == "empty"


def test_prose_with_brackets_is_read_as_the_text_family() -> None:
    parsed = parse_answer('Instruction: What does the [CLS] token do in "BERT"?\nOutput: It pools.')
    assert parsed.triples == [('What does the [CLS] token do in "BERT"?', "", "It pools.")]
    braces = parse_answer('Question: Is {a, b} a "set"?\nAnswer: Yes, of two elements.')
    assert braces.triples == [('Is {a, b} a "set"?', "", "Yes, of two elements.")]


def test_lone_surrogates_are_replaced_not_carried() -> None:
    parsed = parse_answer('{"triples": [{"instruction": "Say \\ud83d hi", "output": "ok"}]}')
    instruction = parsed.triples[0][0]
    assert instruction == "Say ? hi" and instruction.encode("utf-8")
