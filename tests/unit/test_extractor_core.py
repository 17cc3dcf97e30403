"""The extractor's pure core (cleaning, sections, chunks) and its pypdf reader, on synthetic
pages and on the real papers of $DISTILLERY_TEST_DATA/data/pdfs."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from services.extractor import core
from services.extractor.pdf import read_pdf

pytestmark = pytest.mark.unit

LIGATURES = re.compile("[\ufb00-\ufb06]")
STAMP = re.compile(r"arXiv:\d{4}\.\d{4,5}v\d+\s+\[")


def texts(lines: list[core.Line]) -> list[str]:
    return [line.text for line in lines]


# --- cleaning ---------------------------------------------------------------------------------


def test_ligatures_and_compatibility_forms_are_normalised():
    [line] = core.clean_pages(["an e\ufb03cient \ufb01ne-tuning of ﬂows"])
    assert line.text == "an efficient fine-tuning of flows"


def test_the_arxiv_stamp_goes_wherever_it_stands():
    lines = core.clean_pages(
        ["Title", "Body text here.", "arXiv:2106.09685v2  [cs.CL]  16 Oct 2021"]
    )
    assert texts(lines) == ["Title", "Body text here."]


def test_running_headers_footers_and_page_numbers_go_body_lines_stay():
    header = "Published as a conference paper at ICLR 2022"
    pages = [
        "\n".join(
            [header, *(f"Body of page {chr(64 + n)}, line {chr(96 + k)}." for k in range(1, 7))]
            + [f"{header} is quoted in the middle of page {chr(64 + n)}.", "Last words.", str(n)]
        )
        for n in range(1, 6)
    ]
    lines = core.clean_pages(pages)
    # Page 1's copy stays (a title often doubles as the running header); the rest go.
    assert [line.page for line in lines if line.text == header] == [1]
    assert not any(t.isdigit() for t in texts(lines))
    assert sum(t.startswith("Body") for t in texts(lines)) == 30
    assert sum("quoted in the middle" in t for t in texts(lines)) == 5


def test_a_header_needs_many_pages_to_count_as_running():
    lines = core.clean_pages(["Same first line\nA", "Same first line\nB"])
    assert texts(lines).count("Same first line") == 2


@pytest.mark.parametrize(
    ("pages", "expected"),
    [
        (["the pa-\nrameters are frozen"], ["the parameters", "are frozen"]),
        (["LARGE LAN-\nGUAGE MODELS"], ["LARGE LANGUAGE", "MODELS"]),
        # The document writes the compound with its hyphen: the hyphen stays.
        (
            ["state-of-the-art results.\nwe beat the state-of-the-\nart on GLUE"],
            ["state-of-the-art results.", "we beat the state-of-the-art", "on GLUE"],
        ),
        # A dash before a capital or a number is not a broken word.
        (["see Section-\n3 for details"], ["see Section-", "3 for details"]),
    ],
)
def test_words_hyphenated_across_lines_are_joined(pages, expected):
    assert texts(core.clean_pages(pages)) == expected


# --- sections ---------------------------------------------------------------------------------


def lines_of(*rows: str) -> list[core.Line]:
    return [core.Line(text, 1) for text in rows]


def titles(sections: list[core.Section]) -> list[str | None]:
    return [s.title for s in sections]


def test_numbered_and_named_headings_split_sections():
    sections = core.split_sections(
        lines_of(
            "A Title",
            "ABSTRACT",
            "We do things.",
            "1 Introduction",
            "Text.",
            "3.1 Low-Rank Update Matrices",
            "More text.",
            "3 AREN’T EXISTING SOLUTIONS GOOD ENOUGH?",
            "Yes.",
        )
    )
    assert titles(sections) == [
        None,
        "Abstract",
        "1 Introduction",
        "3.1 Low-Rank Update Matrices",
        "3 AREN’T EXISTING SOLUTIONS GOOD ENOUGH?",
    ]


@pytest.mark.parametrize(
    "rows",
    [
        ("1. Function Approximation: Actor-critic algorithms typically", "use a critic."),
        ("2 Initiate Conversations:", "Agents start here."),
        ("4 We treat MNLIm and MNLImm as separate tasks with individually", "tuned rates."),
        ("12 Accuracy of the model on the test set.", "Next."),
        ("Method", "Ours"),  # a table's column header
    ],
)
def test_lines_that_only_look_like_headings_are_text(rows):
    sections = core.split_sections(lines_of("1 Introduction", *rows))
    assert titles(sections) == ["1 Introduction"]


def test_references_are_dropped_and_the_appendix_after_them_kept():
    rows = lines_of(
        "1 Introduction",
        "Body.",
        "References",
        "Hu, E. LoRA. In Proceedings of ICLR, 2022.",
        "A Proofs of the Theorems",
        "Proof text.",
    )
    sections = core.split_sections(rows)
    assert titles(sections) == ["1 Introduction", "A Proofs of the Theorems"]
    assert "Proceedings" not in " ".join(t for s in sections for t in texts(s.lines))
    kept = core.split_sections(rows, drop_references=False)
    assert titles(kept) == ["1 Introduction", "References", "A Proofs of the Theorems"]


def test_an_ieee_abstract_on_its_heading_line_opens_the_abstract():
    sections = core.split_sections(
        lines_of(
            "A Survey", "Abstract—Large language models are large.", "More.", "1 Intro", "Text."
        )
    )
    assert titles(sections) == [None, "Abstract", "1 Intro"]
    assert texts(sections[1].lines) == ["Large language models are large.", "More."]


def test_a_reference_entry_after_the_references_is_not_an_appendix_heading():
    rows = lines_of(
        "References",
        "[1] A. A. Rusu, K. Milan, J. Quan, T. Ramalho, A. Grabska-",
        "Barwinska et al., catastrophic forgetting.",
    )
    assert titles(core.split_sections(rows, drop_references=False)) == ["References"]
    assert core.split_sections(rows) == []


def test_lettered_headings_count_only_after_the_references():
    sections = core.split_sections(lines_of("1 Introduction", "A Study of Things", "Body."))
    assert titles(sections) == ["1 Introduction"]


# --- chunks -----------------------------------------------------------------------------------


def section(text: str, title: str = "2 Method", pages_per_sentence: int = 1) -> core.Section:
    sentences = [s if s.endswith(".") else s + "." for s in text.split(". ") if s]
    return core.Section(
        title, [core.Line(s, 1 + i // pages_per_sentence) for i, s in enumerate(sentences)]
    )


def test_chunks_keep_to_the_budget_and_to_their_section():
    body = ". ".join(f"Sentence number {i} says something useful about LoRA" for i in range(40))
    chunks = core.chunk_sections([section(body), section(body, "3 Results")], 64, 0)
    assert all(c.n_tokens <= 64 for c in chunks)
    assert {c.section for c in chunks} == {"2 Method", "3 Results"}
    assert not any("2 Method" in c.text for c in chunks)  # titles are metadata, not text
    first = [c for c in chunks if c.section == "2 Method"]
    assert "Sentence number 0 " in first[0].text and "number 39 " in first[-1].text


def test_consecutive_chunks_overlap_by_whole_sentences():
    body = ". ".join(f"Fact {i} is stated here in plain words" for i in range(30))
    chunks = core.chunk_sections([section(body)], 40, 12)
    for before, after in zip(chunks, chunks[1:], strict=False):
        last = before.text.rsplit(". ", 1)[-1].rstrip(".")
        assert after.text.startswith(last)


def test_chunks_record_their_pages():
    body = ". ".join(f"Line {i} of a long section that runs over pages" for i in range(12))
    chunks = core.chunk_sections([section(body, pages_per_sentence=3)], 30, 0)
    assert chunks[0].pages[0] == 1 and chunks[-1].pages[1] == 4
    assert all(a.pages[0] <= b.pages[0] for a, b in zip(chunks, chunks[1:], strict=False))


def test_a_sentence_longer_than_the_budget_is_cut_between_words():
    table = " ".join(["0.5"] * 100)  # a table row: no sentence ends inside it
    body = f"Short one. Table {table}. Another one."
    chunks = core.chunk_sections([section(body)], 20, 0)
    assert all(c.n_tokens <= 20 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == body.split()


def test_overlap_must_be_below_the_budget():
    with pytest.raises(ValueError, match="overlap"):
        core.chunk_sections([], max_tokens=10, overlap=10)


# --- the real papers --------------------------------------------------------------------------

PAPERS = {
    "1902.00751v2_adapters_peft.pdf": "Parameter-Efficient Transfer Learning",
    "2106.09685v2_lora.pdf": "LOW-RANK ADAPTATION OF LARGE LANGUAGE MODELS",
    "2109.01652v5_flan.pdf": "FINETUNED LANGUAGE MODELS ARE ZERO-SHOT LEARNERS",
    "2203.02155v1_instructgpt.pdf": "Training language models to follow instructions",
    "2205.14135v2_flashattention.pdf": "FlashAttention: Fast and Memory-Efficient",
    "2302.13971v1_llama.pdf": "LLaMA: Open and Efficient Foundation Language Models",
    "2305.14314v1_qlora.pdf": "Efficient Finetuning of Quantized LLMs",
    "2305.15717v1_false_promise_imitating_llms.pdf": "The False Promise of Imitating",
    "2308.08155v2_autogen.pdf": "AutoGen: Enabling Next-Gen LLM Applications",
    "2310.03025v1_retrieval_meets_long_context.pdf": "RETRIEVAL MEETS LONG CONTEXT",
    "2407.06204v2_moe_survey.pdf": "A Survey on Mixture of Experts",
}


@cache
def extracted(pdfs: Path, name: str) -> tuple[list[str], list[core.Section], list[core.Chunk]]:
    pages = read_pdf((pdfs / name).read_bytes())
    sections = core.split_sections(core.clean_pages(pages))
    return pages, sections, core.chunk_sections(sections)


@pytest.fixture(scope="module")
def pdfs(test_data) -> Path:
    return test_data / "data" / "pdfs"


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_a_real_paper_comes_out_clean(pdfs, name):
    pages, sections, chunks = extracted(pdfs, name)
    text = " ".join(c.text for c in chunks)
    assert PAPERS[name] in chunks[0].text  # the title, its broken lines joined
    assert not LIGATURES.search(text)
    assert STAMP.search("\n".join(pages)) and not STAMP.search(text)
    assert any("introduction" in (s.title or "").casefold() for s in sections)
    assert not any(
        re.fullmatch(r"references|bibliography", (s.title or ""), re.I) for s in sections
    )
    assert "In Proceedings of" not in text  # the bibliography's usual words
    assert all(1 <= c.pages[0] <= c.pages[1] <= len(pages) for c in chunks)
    assert all(c.n_tokens <= 512 for c in chunks)


def test_lora_sections_and_joined_words(pdfs):
    _, sections, chunks = extracted(pdfs, "2106.09685v2_lora.pdf")
    text = " ".join(c.text for c in chunks)
    assert [s.title for s in sections][1:6] == [
        "Abstract",
        "1 INTRODUCTION",
        "2 PROBLEM STATEMENT",
        "3 AREN’T EXISTING SOLUTIONS GOOD ENOUGH?",
        "4 OUR METHOD",
    ]
    # Split across lines in the PDF ("indepen-" / "dent", "pa-" / "rameters"), whole here.
    for word in ("independent instances", "trainable parameters", "LARGE LANGUAGE MODELS"):
        assert word in text
    assert "indepen- dent" not in text and "pa- rameters" not in text


@pytest.mark.parametrize(
    ("name", "sentence"),
    [
        # Two-column papers: a sentence that wraps within its column reads on unbroken, so
        # pypdf gives the columns one after the other, not line by line across them.
        (
            "2302.13971v1_llama.pdf",
            "Large Languages Models (LLMs) trained on massive corpora of texts have shown their "
            "ability to perform new tasks from textual instructions or from a few examples "
            "(Brown et al., 2020). These few-shot properties first appeared",
        ),
        (
            "1902.00751v2_adapters_peft.pdf",
            "Transfer from pre-trained models yields strong "
            "performance on many NLP tasks (Dai & Le, 2015; Howard & Ruder, 2018; Radford et al., "
            "2018). BERT, a Transformer network trained on large text corpora",
        ),
    ],
)
def test_two_column_papers_read_column_by_column(pdfs, name, sentence):
    _, _, chunks = extracted(pdfs, name)
    assert any(sentence in c.text for c in chunks)


def test_an_ieee_survey_has_its_abstract_and_no_reference_left(pdfs):
    _, sections, _ = extracted(pdfs, "2407.06204v2_moe_survey.pdf")
    titles_ = [s.title for s in sections]
    assert titles_[1] == "Abstract" and titles_[-1] == "8 CONCLUSION"


def test_flan_keeps_its_appendix_after_the_references(pdfs):
    _, sections, _ = extracted(pdfs, "2109.01652v5_flan.pdf")
    titles_ = [s.title or "" for s in sections]
    assert any(re.match(r"[A-H](\.\d+)* [A-Z]", t) for t in titles_)


def test_the_encrypted_file_opens_with_its_password(pdfs):
    data = (pdfs / "encrypted_libreoffice_writer_password.pdf").read_bytes()
    with pytest.raises(BadInput) as caught:
        read_pdf(data)
    assert caught.value.reason == "encrypted_no_password"
    pages = read_pdf(data, passwords=("wrong", "openpassword"))
    assert len(pages) == 1 and len(pages[0]) > 500


def test_the_scanned_paper_has_no_text_layer(pdfs):
    with pytest.raises(BadInput) as caught:
        read_pdf((pdfs / "rumelhart1986_backprop_scanned.pdf").read_bytes())
    assert caught.value.reason == "no_text_layer"
    assert "4 pages" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not_a_pdf"),
        (b"<html><body>404</body></html>", "not_a_pdf"),
        (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", "corrupt"),
    ],
)
def test_what_is_not_a_readable_pdf_says_why(data, reason):
    with pytest.raises(BadInput) as caught:
        read_pdf(data)
    assert caught.value.reason == reason
