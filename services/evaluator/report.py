"""The evaluation report: the JSON behind it, a self-contained HTML page people read (scores,
deltas with intervals, a chart, the examples that moved most side by side, a per-document
breakdown), and a CSV review sheet for human evaluation. Pure: a Report in, text out."""

from __future__ import annotations

import csv
import io
from html import escape
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.messages import TaskScore


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Example(_Row):
    document: str
    prompt: str
    reference: str
    base: str
    tuned: str
    base_score: float
    tuned_score: float


class DocumentRow(_Row):
    document: str
    n: int
    base: float
    tuned: float


class Report(_Row):
    checkpoint_id: str
    run_id: str
    base_model: str
    adapter_uri: str
    dataset_id: str
    domain_metric: str
    verdict: Literal["promote", "reject"]
    reason: str
    #: As in `eval-results`: by "task/metric" ("domain/rougeL", "arc_easy/acc").
    scores: dict[str, TaskScore]
    improved: list[Example]
    degraded: list[Example]
    documents: list[DocumentRow]


def review_sheet(examples: list[Example]) -> str:
    """One row per example, with empty columns for a reviewer's grades and notes."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["document", "prompt", "reference", "base", "tuned", "base_score",
                     "tuned_score", "grade_base (1-5)", "grade_tuned (1-5)", "error_type",
                     "notes"])  # fmt: skip
    for e in examples:
        texts = [_inert(t) for t in (e.document, e.prompt, e.reference, e.base, e.tuned)]
        writer.writerow([*texts, f"{e.base_score:.4f}", f"{e.tuned_score:.4f}", "", "", "", ""])
    return out.getvalue()


def _inert(text: str) -> str:
    """Text a spreadsheet would run as a formula (=, +, -, @ first: OWASP's CSV injection)
    shown as text instead, behind a quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def render_html(report: Report) -> str:
    """The whole page, styles and chart inline: it opens from a blob store or an e-mail."""
    verdict = "promoted" if report.verdict == "promote" else "rejected"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Evaluation of {escape(report.checkpoint_id)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Evaluation of {escape(report.checkpoint_id)}</h1>
<p class="meta">run {escape(report.run_id)} · base {escape(report.base_model)} ·
dataset {escape(report.dataset_id)} · adapter <code>{escape(report.adapter_uri)}</code></p>
<p class="verdict {report.verdict}" id="verdict"><strong>{verdict}</strong>:
{escape(report.reason)}</p>
<h2>Scores, base vs tuned</h2>
{_scores_table(report.scores)}
<h2>Change relative to the base, with 95% intervals</h2>
{_chart(report.scores)}
<h2>Most improved ({escape(report.domain_metric)})</h2>
{_examples_table(report.improved, "improved")}
<h2>Most degraded ({escape(report.domain_metric)})</h2>
{_examples_table(report.degraded, "degraded")}
<h2>Per document</h2>
{_documents_table(report.documents)}
</body></html>
"""


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.6rem .8rem;border-radius:4px}
.promote{background:#e6f4ea}.reject{background:#fde8e8}
.better{color:#137333}.worse{color:#b3261e}.meta{color:#555}
td.text{white-space:pre-wrap;max-width:22rem}
"""


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _direction(row: TaskScore) -> str:
    """better/worse only when the interval says so; otherwise no colour."""
    if row.ci_low is None or row.ci_high is None:
        return ""
    gain_low, gain_high = (
        (row.ci_low, row.ci_high) if row.higher_is_better else (-row.ci_high, -row.ci_low)
    )
    return "better" if gain_low > 0 else "worse" if gain_high < 0 else ""


def _task(name: str) -> str:
    return name.rsplit("/", 1)[0]


def _scores_table(rows: dict[str, TaskScore]) -> str:
    body = "".join(
        f"<tr class='{_direction(r)}'><td>{escape(_task(name))}</td><td>{escape(r.metric)}"
        f"{'' if r.higher_is_better else ' (lower is better)'}</td>"
        f"<td class=num>{_num(r.base)}</td><td class=num>{_num(r.tuned)}</td>"
        f"<td class=num>{r.delta:+.4f}</td>"
        f"<td class=num>[{_num(r.ci_low)}, {_num(r.ci_high)}]</td></tr>"
        for name, r in rows.items()
    )
    return (
        "<table id='scores'><thead><tr><th>task</th><th>metric</th><th>base</th><th>tuned</th>"
        f"<th>delta</th><th>95% CI</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _relative(row: TaskScore) -> TaskScore:
    """The change as a fraction of the base score, so that accuracy, ROUGE and perplexity in
    the millions share one axis."""
    if row.base == 0:
        return row

    def part(v: float | None) -> float | None:
        return None if v is None else v / abs(row.base)

    return row.model_copy(update={"delta": part(row.delta), "ci_low": part(row.ci_low),
                                  "ci_high": part(row.ci_high)})  # fmt: skip


def _chart(scores: dict[str, TaskScore]) -> str:
    """Horizontal bars of each change relative to the base score, around zero, with the
    interval as a whisker (SVG)."""
    rows = {name: _relative(r) for name, r in scores.items()}
    width, label, row_h = 640, 220, 26
    span = max([abs(v) for r in rows.values() for v in (r.delta, r.ci_low, r.ci_high)
                if v is not None] + [1e-9])  # fmt: skip
    scale = (width - label - 20) / 2 / span
    zero = label + (width - label) / 2

    def x(value: float) -> float:
        return zero + value * scale

    parts = []
    for i, (name, r) in enumerate(rows.items()):
        y = i * row_h + 6
        colour = {"better": "#137333", "worse": "#b3261e"}.get(_direction(r), "#888")
        left, right = sorted((x(0), x(r.delta)))
        parts.append(
            f"<text x='{label - 8}' y='{y + 13}' text-anchor='end'>{escape(name)} "
            f"{r.delta:+.0%}</text>"
            f"<rect x='{left:.1f}' y='{y + 2}' width='{max(right - left, 1):.1f}' height='14' "
            f"fill='{colour}'/>"
        )
        if r.ci_low is not None and r.ci_high is not None:
            parts.append(f"<line x1='{x(r.ci_low):.1f}' x2='{x(r.ci_high):.1f}' y1='{y + 9}' "
                         f"y2='{y + 9}' stroke='#222' stroke-width='1.5'/>")  # fmt: skip
    height = len(rows) * row_h + 12
    return (
        f"<svg id='chart' role='img' aria-label='deltas' width='{width}' height='{height}' "
        f"font-size='12' xmlns='http://www.w3.org/2000/svg'>"
        f"<line x1='{zero}' x2='{zero}' y1='0' y2='{height}' stroke='#444'/>"
        + "".join(parts)
        + "</svg>"
    )


def _examples_table(examples: list[Example], name: str) -> str:
    if not examples:
        return f"<p id='{name}'>None.</p>"
    body = "".join(
        f"<tr><td class=text>{escape(e.prompt)}</td><td class=text>{escape(e.reference)}</td>"
        f"<td class=text>{escape(e.base)}</td><td class=text>{escape(e.tuned)}</td>"
        f"<td class=num>{e.base_score:.3f} → {e.tuned_score:.3f}</td>"
        f"<td>{escape(e.document)}</td></tr>"
        for e in examples
    )
    return (
        f"<table id='{name}'><thead><tr><th>prompt</th><th>reference</th><th>base</th>"
        f"<th>tuned</th><th>score</th><th>document</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _documents_table(rows: list[DocumentRow]) -> str:
    body = "".join(
        f"<tr><td>{escape(r.document)}</td><td class=num>{r.n}</td>"
        f"<td class=num>{r.base:.4f}</td><td class=num>{r.tuned:.4f}</td>"
        f"<td class=num>{r.tuned - r.base:+.4f}</td></tr>"
        for r in rows
    )
    return (
        "<table id='documents'><thead><tr><th>document</th><th>examples</th><th>base</th>"
        f"<th>tuned</th><th>delta</th></tr></thead><tbody>{body}</tbody></table>"
    )
