"""`distillery report`: a checkpoint's evaluation from the blob store: the verdict, the scores
with their intervals and the examples that moved most; the whole HTML page with --open."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from pipeline.blobstore import BlobStore
from pipeline.cli_common import DEFAULT_HOME, HomeOption, blob_store, console, err, fail
from pipeline.errors import BadInput

if TYPE_CHECKING:
    from services.evaluator.report import Example, Report


def report(
    checkpoint: Annotated[
        str | None, typer.Argument(help="A checkpoint id; without one, every evaluation.")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report to this file.")] = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the HTML report in a browser.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report's JSON.")] = False,
    examples: Annotated[int, typer.Option(help="Examples shown of each kind.")] = 3,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Show how the evaluator judged a checkpoint: base vs tuned on every task, the verdict and
    why, and the answers that improved and degraded most (the review sheet, review.csv, is
    beside the report)."""
    from services.evaluator.evaluation import PAGE, SHEET, folder_of, stored_report

    blobs = blob_store(home)
    if checkpoint is None:
        _list(blobs)
        return
    try:
        found = stored_report(blobs, checkpoint)
    except BadInput as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(f"the report of {checkpoint} is not one this version reads: {exc}") from None
    if found is None:
        known = _evaluated(blobs)
        raise fail(f"no evaluation of {checkpoint!r} in {blobs.uri('evaluations')}"
                   + (f"; evaluated: {', '.join(known)}" if known else ""))  # fmt: skip
    folder = folder_of(checkpoint)
    if as_json:
        print(found.model_dump_json(indent=2))  # plain: for jq, not rich markup
    else:
        _show(found, examples)
        console.print(f"report: {blobs.uri(f'{folder}/{PAGE}')}")
        console.print(f"review sheet: {blobs.uri(f'{folder}/{SHEET}')}")
    if html or open_page:
        target = (html or home / "reports" / f"{checkpoint}.html").resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blobs.get(blobs.uri(f"{folder}/{PAGE}")))
        err.print(f"written: {target}")  # stdout may be JSON
        if open_page:
            webbrowser.open(target.as_uri())


def _evaluated(blobs: BlobStore) -> list[str]:
    return sorted({n.split("/")[1] for n in blobs.names("evaluations") if n.count("/") == 2})


def _list(blobs: BlobStore) -> None:
    from services.evaluator.evaluation import stored_report

    known = _evaluated(blobs)
    if not known:
        console.print("no evaluations yet")
        return
    table = Table("checkpoint", "run", "verdict", "reason")
    for name in known:
        try:
            found = stored_report(blobs, name)
        except ValidationError:
            table.add_row(name, "", "?", "a report this version cannot read")
            continue
        if found is not None:  # an evaluation whose report is still being written
            table.add_row(name, escape(found.run_id), _verdict(found.verdict),
                          escape(found.reason))  # fmt: skip
    console.print(table)


def _verdict(verdict: str) -> str:
    return "[green]promote[/green]" if verdict == "promote" else "[red]reject[/red]"


def _show(found: Report, examples: int) -> None:
    about = f"run {found.run_id}  base {found.base_model}  dataset {found.dataset_id}"
    console.print(f"[bold]{escape(found.checkpoint_id)}[/bold]  {escape(about)}")
    console.print(f"{_verdict(found.verdict)}: {escape(found.reason)}", highlight=False)
    table = Table("score", "base", "tuned", "delta", "95% CI")
    for name, score in found.scores.items():
        interval = ("–" if score.ci_low is None or score.ci_high is None
                    else f"[{_num(score.ci_low, '+')}, {_num(score.ci_high, '+')}]")  # fmt: skip
        label = name + ("" if score.higher_is_better else " ↓")
        table.add_row(label, _num(score.base), _num(score.tuned), _num(score.delta, "+"),
                      interval)  # fmt: skip
    console.print(table)
    for title, picked in (("most improved", found.improved), ("most degraded", found.degraded)):
        if picked[:examples]:
            console.print(f"[bold]{title}[/bold] ({found.domain_metric})")
            console.print(_examples(picked[:examples]))


def _num(value: float, sign: str = "") -> str:
    """Four decimals; perplexities in the millions in four significant digits."""
    return f"{value:{sign}.4g}" if abs(value) >= 1e4 else f"{value:{sign}.4f}"


def _examples(picked: list[Example]) -> Table:
    table = Table("prompt", "reference", "base", "tuned", "score", show_lines=True)
    for e in picked:
        table.add_row(_cut(e.prompt), _cut(e.reference), _cut(e.base), _cut(e.tuned),
                      f"{e.base_score:.2f} → {e.tuned_score:.2f}")  # fmt: skip
    return table


def _cut(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")
