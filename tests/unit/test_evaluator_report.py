"""The evaluation report's page and review sheet: what they show, escaped, and whole."""

from __future__ import annotations

import csv
import io

import pytest
from lxml import html

from services.evaluator.report import render_html, review_sheet
from tests.support.reports import HOSTILE, sample_example, sample_report

pytestmark = pytest.mark.unit


def test_the_page_shows_scores_chart_examples_and_documents() -> None:
    page = html.fromstring(render_html(sample_report()))
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
    text = render_html(sample_report(reason=HOSTILE))
    assert "<script>" not in text and "&lt;script&gt;" in text
    page = html.fromstring(text)
    assert page.findall(".//script") == []
    assert HOSTILE in page.get_element_by_id("improved").text_content()


def test_the_review_sheet_round_trips_through_a_csv_reader() -> None:
    examples = [sample_example(1), sample_example(2, text=HOSTILE)]
    rows = list(csv.reader(io.StringIO(review_sheet(examples))))
    assert rows[0][:5] == ["document", "prompt", "reference", "base", "tuned"]
    assert rows[0][-4:] == ["grade_base (1-5)", "grade_tuned (1-5)", "error_type", "notes"]
    assert len(rows) == 3 and rows[2][4] == HOSTILE and rows[2][1] == f"question 2: {HOSTILE}"
    assert rows[1][5:7] == ["0.1000", "0.2000"] and rows[1][7:] == ["", "", "", ""]


def test_the_review_sheet_keeps_formulas_from_running_in_a_spreadsheet() -> None:
    examples = [sample_example(1, text='=HYPERLINK("http://x", "y")'), sample_example(2, "-1")]
    rows = list(csv.reader(io.StringIO(review_sheet(examples))))
    assert rows[1][4] == '\'=HYPERLINK("http://x", "y")' and rows[2][4] == "'-1"
    assert rows[1][1] == f"question 1: {HOSTILE}"  # ordinary text untouched


def test_the_chart_shows_each_change_relative_to_its_base() -> None:
    page = html.fromstring(render_html(sample_report()))
    labels = [t.text for t in page.get_element_by_id("chart").findall(".//text")]
    # rougeL 0.05 -> 0.12: +140 %; bits per byte 2.0 -> 1.5: -25 %, on one axis.
    assert labels == ["domain/rougeL +140%", "arc_easy/acc -20%",
                      "perplexity/bits_per_byte -25%", "arc_challenge/acc +5%"]  # fmt: skip
