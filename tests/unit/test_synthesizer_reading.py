"""The reading-comprehension miner: each pattern on hand-written passages, then the real papers
of $DISTILLERY_TEST_DATA/data/pdfs, where every output must be a verbatim span of its chunk."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from services.extractor.extract import Options, extract
from services.synthesizer.core import Triple
from services.synthesizer.reading import TASKS, mine
from services.synthesizer.sentences import sentences

pytestmark = pytest.mark.unit

NOT_TEXT_PAPERS = {
    "rumelhart1986_backprop_scanned.pdf",
    "encrypted_libreoffice_writer_password.pdf",
}
LORA_TITLE = "LoRA: Low-Rank Adaptation of Large Language Models"


def of(triples: list[Triple], task: str) -> list[Triple]:
    return [t for t in triples if t.task == task]


# --- sentences ----------------------------------------------------------------------------------


def test_sentences_survive_abbreviations_decimals_and_arxiv_ids() -> None:
    text = (
        "Adapters (e.g. Houlsby et al. 2019) reach 0.4% of full fine-tuning, cf. Fig. 2 and "
        "Eq. 3 vs. Sec. 4.1 of arXiv:2106.09685 with version 1.2.3 of the code. "
        "The second sentence starts here. A third one follows."
    )
    spans = [s.text for s in sentences(text)]
    assert spans == [
        "Adapters (e.g. Houlsby et al. 2019) reach 0.4% of full fine-tuning, cf. Fig. 2 and "
        "Eq. 3 vs. Sec. 4.1 of arXiv:2106.09685 with version 1.2.3 of the code.",
        "The second sentence starts here.",
        "A third one follows.",
    ]


def test_bullets_and_blank_lines_end_sentences() -> None:
    text = "We use two datasets • the first has no full stop\n\nThe next paragraph starts here."
    assert [s.text for s in sentences(text)] == [
        "We use two datasets",
        "the first has no full stop",
        "The next paragraph starts here.",
    ]


def test_a_run_in_heading_is_cut_from_the_sentence_it_opens() -> None:
    text = "Longform The LongForm dataset is based on an English corpus with instructions."
    [sentence] = sentences(text)
    assert sentence.text == "The LongForm dataset is based on an English corpus with instructions."
    assert sentence.clean


# --- one pattern at a time ----------------------------------------------------------------------

PASSAGE = (
    "Adapter modules add a few trainable parameters to a frozen network. "
    "Each task gets its own small set of adapter weights. "
    "Therefore, the original network can be shared by many tasks at once. "
    "However, the adapter layers add some latency at inference time. "
    "In other words, the adapted network runs more slowly than the original network. "
    "For example, a batch of one sequence takes twenty percent longer with adapter layers. "
    "The slowdown matters for serving because online requests come in very small batches."
)


def test_connectives_give_conclusions_contrasts_restatements_and_examples() -> None:
    triples = mine(PASSAGE, section="3.2 Adapter Latency")
    [conclusion] = [t for t in of(triples, "nli") if t.output.startswith("Therefore")]
    assert conclusion.input == "Each task gets its own small set of adapter weights."
    assert (
        conclusion.output == "Therefore, the original network can be shared by many tasks at once."
    )
    [contrast] = [t for t in of(triples, "nli") if t.output.startswith("However")]
    assert contrast.input == "Therefore, the original network can be shared by many tasks at once."
    assert "contrast" in contrast.instruction or "qualif" in contrast.instruction
    [restated] = of(triples, "paraphrase")
    assert restated.input == "However, the adapter layers add some latency at inference time."
    assert restated.output.startswith("In other words, the adapted network runs more slowly")
    [example] = of(triples, "example")
    assert example.output.startswith("For example, a batch of one sequence")


def test_because_gives_a_why_question_answered_by_the_cause() -> None:
    [causal] = of(mine(PASSAGE, section="3.2 Adapter Latency"), "causal")
    assert causal.input == "The slowdown matters for serving"
    assert causal.output == "because online requests come in very small batches."


def test_a_leaning_premise_takes_the_sentence_before_it() -> None:
    text = (
        "Full fine-tuning updates every weight of the pre-trained model. "
        "This is expensive for a model with billions of parameters. "
        "Therefore, we freeze the pre-trained weights and train small adapters instead."
    )
    [nli] = of(mine(text), "nli")
    assert nli.input == (
        "Full fine-tuning updates every weight of the pre-trained model. "
        "This is expensive for a model with billions of parameters."
    )


def test_sentence_initial_since_splits_cause_from_effect() -> None:
    text = "Since the adapter weights are very small, we store one copy for every task."
    [causal] = of(mine(text), "causal")
    assert (causal.input, causal.output) == (
        "we store one copy for every task.",
        "Since the adapter weights are very small",
    )


def test_acronyms_whose_initials_spell_them() -> None:
    text = (
        "We compare Long Short-Term Memory (LSTM) networks with Low-Rank Adaptation (LoRA) of a "
        "mixture-of-experts (MoE) model and large language models (LLMs) in general. "
        "The BERT (Bidirectional Encoder Representations from Transformers) model is older."
    )
    found = {t.instruction: t.output for t in of(mine(text, max_per_task=9), "acronym")}
    expansions = {re.search(r"\b(LSTM|LoRA|MoE|LLMs|BERT)\b", i)[0]: o for i, o in found.items()}
    assert expansions == {
        "LSTM": "Long Short-Term Memory",
        "LoRA": "Low-Rank Adaptation",
        "MoE": "mixture-of-experts",
        "LLMs": "large language models",
        "BERT": "Bidirectional Encoder Representations from Transformers",
    }
    assert not any("does LLMs" in instruction for instruction in found)  # a plural acronym


def test_citations_and_model_names_in_brackets_are_no_acronyms() -> None:
    text = (
        "Adapters were proposed for vision first (Rebuffi et al., 2017). "
        "We fine-tune a strong baseline model (GPT-3) on every task. "
        "We train a new recurrent network (LSTM) on the same data."
    )
    assert of(mine(text), "acronym") == []


def test_definitions_by_pattern() -> None:
    text = (
        "LoRA is a method that freezes the pre-trained weights and trains low-rank updates. "
        "LoRA adds no inference latency to the adapted model. "
        "This is a problem for every deployed model in production. "
        "The result is a model that is cheap to store for every task."
    )
    [definition] = of(mine(text), "definition")
    assert definition.output == text.split(". ")[0] + "."
    assert "LoRA" in definition.instruction


def test_a_specific_heading_is_a_title_a_generic_one_is_not() -> None:
    text = PASSAGE
    [title] = of(mine(text, section="3.2 Adapter Latency at Inference"), "title")
    assert title.output == "Adapter Latency at Inference" and title.input in text
    for generic in ("1 Introduction", "Abstract", "5 Conclusion", "4.1", "Related Work"):
        assert of(mine(text, section=generic), "title") == []
    # A heading the passage never speaks of ("2. Theo": a list item taken for a heading).
    assert of(mine(text, section="4 Scheduling Kernels on Tensor Cores"), "title") == []


def test_an_abstract_with_the_papers_title_asks_for_the_title() -> None:
    titles = of(mine(PASSAGE, section="Abstract", title=LORA_TITLE), "title")
    assert [t.output for t in titles] == [LORA_TITLE]
    assert "abstract" in titles[0].instruction


def test_completion_cuts_a_paragraph_at_a_sentence_boundary() -> None:
    [completion] = of(mine(PASSAGE), "completion")
    spans = [s.text for s in sentences(PASSAGE)]
    assert completion.input == " ".join(spans[:3])
    assert completion.output == " ".join(spans[3:6])


def test_word_to_text_lists_the_sentences_own_terms() -> None:
    text = (
        "We apply LoRA to the query and value projections of GPT-3 with low-rank updates. "
        "LoRA keeps the pre-trained weights of the Transformer frozen during adaptation."
    )
    # The heading shouts; the instruction names the topic as the text writes it.
    triples = of(mine(text, section="4.2 APPLYING LORA TO TRANSFORMER"), "word_to_text")
    first = next(t for t in triples if t.output.startswith("We apply"))
    listed = first.instruction.split(":")[-1].rstrip(".").split(", ")
    assert {"LoRA", "GPT-3"} <= set(listed) and all(w in first.output for w in listed)
    assert "applying LoRA to Transformer" in first.instruction


def test_captions_math_urls_and_tables_are_never_outputs() -> None:
    text = (
        "Figure 3: Validation accuracy of the adapted model across all of the GLUE tasks. "
        "Table 2: Results on the held-out tasks for every model size we trained. "
        "We release the code at https://github.com/example/adapters for everyone to use. "
        "The loss is L = sum_i x_i^2 + lambda * ||W||_F over all the layers of the model. "
        "Model 0.1 0.2 0.3 0.4 BERT 81.2 82.3 83.4 84.5 RoBERTa 85.6 86.7 87.8 88.9."
    )
    assert mine(text, section="3.1 Adapter Results") == []


@pytest.mark.parametrize(
    "text",
    ["", "   \n ", "∑ ∫ ≈ ∂ 1 2 3 4", "\x00\x01\x02 a b c.", "x" * 5000, "((((((((", "Ω." * 300],
)
def test_odd_inputs_give_nothing_and_raise_nothing(text: str) -> None:
    assert mine(text, section="3.1 Kernels", title="A Title") == []


def test_random_text_never_raises() -> None:
    rng = random.Random(7)  # noqa: S311 - a fixed seed, no secret
    pieces = (
        "The model is a network. Long Short-Term Memory (LSTM) Therefore, However, because "
        "since , . ; : ( ) [12] (Hu et al., 2021) e.g. i.e., • \n\n Figure 3: ∑ α 0.5 x= "
        "LoRA leads to it In other words, For example, We propose é \x00 “ ” - 2They that is,"
    ).split(" ")
    for _ in range(300):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randrange(120)))
        section, title = rng.choice([None, "3.2 Low-Rank Long Memory", "Abstract"]), "A Title"
        for t in mine(text, section=section, title=title, max_per_task=3):
            assert t.output in (f"{section} {title}" if t.task == "title" else text)
            assert t.input in text


def test_the_same_chunk_always_gives_the_same_list_capped_per_task() -> None:
    text = PASSAGE + " " + PASSAGE.replace("Adapter", "Prefix")
    assert mine(text, section="3.2 Adapter Latency") == mine(text, section="3.2 Adapter Latency")
    counts = Counter(t.task for t in mine(text, max_per_task=1))
    assert counts and max(counts.values()) == 1
    assert mine(text, max_per_task=0) == []
    assert {t.task for t in mine(text, max_per_task=5)} <= set(TASKS)


# --- the real papers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def papers(test_data: Path) -> dict[str, list[tuple[str, str | None]]]:
    """(text, section) of every chunk of every text paper, extracted once for the module."""
    out = {}
    for path in sorted((test_data / "data" / "pdfs").glob("*.pdf")):
        if path.name not in NOT_TEXT_PAPERS:
            result = extract(path.read_bytes(), "application/pdf", Options())
            out[path.name] = [(c.text, c.section) for c in result.chunks]
    assert len(out) == 11
    return out


@pytest.fixture(scope="module")
def mined(papers: dict[str, list[tuple[str, str | None]]]) -> list[tuple[str, str | None, Triple]]:
    return [
        (text, section, triple)
        for chunks in papers.values()
        for text, section in chunks
        for triple in mine(text, section=section)
    ]


def test_every_output_and_passage_is_a_verbatim_span_of_the_source(
    mined: list[tuple[str, str | None, Triple]],
) -> None:
    for text, section, t in mined:
        source = section or "" if t.task == "title" else text
        assert t.output in source, t
        assert t.input in text, t


def test_each_task_is_found_on_the_papers(mined: list[tuple[str, str | None, Triple]]) -> None:
    counts = Counter(t.task for *_, t in mined)
    print("\ntriples per task on 11 papers:", dict(counts.most_common()))
    # Measured: 814 word_to_text, 280 completion, 117 acronym, 100 nli, 89 title, 56 summary,
    # 50 causal, 38 example, 22 definition, 19 detail, 8 paraphrase (papers rarely restate).
    least = {
        "word_to_text": 650,
        "completion": 220,
        "acronym": 90,
        "nli": 75,
        "title": 70,
        "summary": 42,
        "causal": 38,
        "example": 28,
        "definition": 16,
        "detail": 15,
        "paraphrase": 5,
    }
    assert {task: counts[task] for task in least if counts[task] < least[task]} == {}


def test_most_chunks_give_a_triple(papers: dict[str, list[tuple[str, str | None]]]) -> None:
    chunks = [c for cs in papers.values() for c in cs]
    giving = sum(bool(mine(text, section=section)) for text, section in chunks)
    print(f"\nchunks with a triple: {giving}/{len(chunks)} = {giving / len(chunks):.0%}")
    # The rest are tables, author lists, transcripts and quoted model samples.
    assert giving / len(chunks) >= 0.65


def test_outputs_read_as_clean_prose(mined: list[tuple[str, str | None, Triple]]) -> None:
    for *_, t in mined:
        if t.task not in ("acronym", "title"):
            assert len(t.output.split()) >= 3, t
        assert not re.search(r"\b(?:Figure|Fig\.|Table)\s*\d", t.output), t
        assert not re.search(r"https?:|www\.", t.output), t
        symbols = sum(not (c.isalpha() or c.isspace()) for c in t.output)
        assert symbols <= 0.25 * len(t.output), t
        assert not re.search(r"\[\d", t.instruction), t  # citation markers left in instructions


def test_instructions_are_phrased_more_than_one_way(
    mined: list[tuple[str, str | None, Triple]],
) -> None:
    for task in ("title", "word_to_text", "acronym", "completion", "nli", "causal"):
        openings = {t.instruction.split()[0] for *_, t in mined if t.task == task}
        assert len(openings) >= 2, (task, openings)


def test_the_lora_abstract_with_its_title_asks_for_the_title(
    papers: dict[str, list[tuple[str, str | None]]],
) -> None:
    text, section = next(c for c in papers["2106.09685v2_lora.pdf"] if c[1] == "Abstract")
    titles = of(mine(text, section=section, title=LORA_TITLE), "title")
    assert [t.output for t in titles] == [LORA_TITLE] and titles[0].input in text


def test_a_sample_printed_for_reading(mined: list[tuple[str, str | None, Triple]]) -> None:
    """Thirty triples, the same every run, to read by eye (pytest -s)."""
    ranked = sorted(mined, key=lambda m: hashlib.sha256(repr(m[2]).encode()).digest())
    for _, section, t in ranked[:30]:
        print(f"\n[{t.task}] ({section})\n  I: {t.instruction}")
        if t.input:
            print(f"  IN: {t.input[:300]}")
        print(f"  OUT: {t.output}")
    assert len({t.task for *_, t in ranked[:30]}) >= 4
