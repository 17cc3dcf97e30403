"""The evaluation report's page and review sheet: what they show, escaped, and whole."""

from __future__ import annotations

import csv
import io

import pytest
from lxml import html

from services.evaluator.report import (
    DocumentRow,
    Example,
    Report,
    ScoreRow,
    render_html,
    review_sheet,
)

pytestmark = pytest.mark.unit

HOSTILE = "<script>alert('x')</script>, \"quoted\"\nsecond line"


def _example(i: int, text: str = "an answer") -> Example:
    return Example(
        document=f"paper {i}", prompt=f"question {i}: {HOSTILE}", reference="ref",
        base="base says", tuned=text, base_score=0.1, tuned_score=0.1 + i / 10,
    )  # fmt: skip


def _report(**update: object) -> Report:
    fields: dict[str, object] = dict(
        checkpoint_id="ckpt-1", run_id="run-1", base_model="stories260K",
        adapter_uri="file:///blobs/checkpoints/ckpt-1/adapter", dataset_id="ds-1",
        domain_metric="domain/rougeL", verdict="promote", reason="domain/rougeL improved",
        scores=[
            ScoreRow(task="domain", metric="rougeL", base=0.05, tuned=0.12, delta=0.07,
                     low=0.03, high=0.1),
            ScoreRow(task="arc_easy", metric="acc", base=0.25, tuned=0.2, delta=-0.05,
                     low=-0.09, high=-0.01),
            ScoreRow(task="perplexity", metric="bits_per_byte", base=2.0, tuned=1.5, delta=-0.5,
                     low=-0.6, high=-0.4, higher_is_better=False),
            ScoreRow(task="arc_challenge", metric="acc", base=0.2, tuned=0.21, delta=0.01),
        ],
        improved=[_example(1), _example(2)], degraded=[], documents=[
            DocumentRow(document="paper 1", n=3, base=0.1, tuned=0.2)],
    )  # fmt: skip
    return Report.model_validate(fields | update)


def test_the_page_shows_scores_chart_examples_and_documents() -> None:
    page = html.fromstring(render_html(_report()))
    assert page.get_element_by_id("verdict").text_content().startswith("promoted:")
    rows = page.get_element_by_id("scores").findall(".//tbody/tr")
    assert [r.get("class") for r in rows] == ["better", "worse", "better", ""]
    assert "(lower is better)" in rows[2].text_content()
    assert rows[3].findall("td")[5].text_content() == "[–, –]"  # no interval, no colour
    chart = page.get_element_by_id("chart")
    assert len(chart.findall(".//rect")) == 4 and len(chart.findall(".//line")) == 1 + 3
    assert len(page.get_element_by_id("improved").findall(".//tbody/tr")) == 2
    assert page.get_element_by_id("degraded").text_content() == "None."
    assert (
        page.get_element_by_id("documents")
        .findall(".//tbody/tr")[0]
        .text_content()
        .endswith("+0.1000")
    )


def test_text_from_models_and_documents_is_escaped() -> None:
    text = render_html(_report(reason=HOSTILE))
    assert "<script>" not in text and "&lt;script&gt;" in text
    page = html.fromstring(text)
    assert page.findall(".//script") == []
    assert HOSTILE in page.get_element_by_id("improved").text_content()


def test_the_review_sheet_round_trips_through_a_csv_reader() -> None:
    examples = [_example(1), _example(2, text=HOSTILE)]
    rows = list(csv.reader(io.StringIO(review_sheet(examples))))
    assert rows[0][:5] == ["document", "prompt", "reference", "base", "tuned"]
    assert rows[0][-4:] == ["grade_base (1-5)", "grade_tuned (1-5)", "error_type", "notes"]
    assert len(rows) == 3 and rows[2][4] == HOSTILE and rows[2][1] == f"question 2: {HOSTILE}"
    assert rows[1][5:7] == ["0.1000", "0.2000"] and rows[1][7:] == ["", "", "", ""]
