"""`distillery curate`: pairs in (files or the `pairs` topic), a curated dataset out: duplicates
and near-duplicates dropped, split by document, contamination checked, files and a card."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.table import Table

from pipeline import topics
from pipeline.cli_common import DEFAULT_HOME, HomeOption, console, err, fail, kafka_settings
from pipeline.cli_common import read_all as read_topic
from pipeline.errors import BadInput
from pipeline.messages import (
    GeneratorInfo,
    Pair,
    Sha256,
    SourceInfo,
    decode,
    pair_id_of,
    sha256_hex,
)
from pipeline.terms import terms_for

if TYPE_CHECKING:
    from pipeline.curation.dataset import Curated, CurationConfig
    from pipeline.curation.neardup import RougePool
    from pipeline.curation.snapshot import Snapshot

FIELDS_HELP = "instruction, instruction+input, output or instruction+input+output"


class Row(BaseModel):
    """An Alpaca-style row, the shape of most instruction sets (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)
    doc_id: Sha256 | None = None
    task: str = "instruction"
    license: str | None = None


@dataclass
class Inputs:
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "where: why" per row that is no pair
    messages_only: bool = True  # every pair came as a pair/1 message


def curate(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="JSON or JSONL files of pairs (pair/1 messages) or of Alpaca-style "
            "rows {instruction, input, output}; none: read the `pairs` topic."
        ),
    ] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Directory to write the dataset to.")] = Path("dataset"),
    fields: Annotated[str, typer.Option(help=f"What pairs are compared on: {FIELDS_HELP}.")] = (
        "instruction+input+output"
    ),
    threshold: Annotated[
        float, typer.Option(help="Drop a pair whose ROUGE-L F against a kept one is above this.")
    ] = 0.7,
    eval_fraction: Annotated[
        float, typer.Option(help="Share of documents held out for evaluation.")
    ] = 0.1,
    contamination_fields: Annotated[
        str, typer.Option(help=f"What eval pairs are compared to train pairs on: {FIELDS_HELP}.")
    ] = "instruction+input+output",
    contamination_threshold: Annotated[
        float, typer.Option(help="Drop an eval pair at or above this ROUGE-L F to a train pair.")
    ] = 0.7,
    seeds: Annotated[
        Path | None,
        typer.Option(
            help="Seed tasks (JSON/JSONL with `instruction`) put in the pool first; "
            "with --fields instruction."
        ),
    ] = None,  # fmt: skip
    pool: Annotated[
        Path | None,
        typer.Option(
            help="Incremental mode: a pool file (.npz) of texts kept by earlier runs; "
            "this run's survivors are added to it."
        ),
    ] = None,  # fmt: skip
    formats: Annotated[
        list[str] | None, typer.Option("--format", help="alpaca, messages, text (default: all).")
    ] = None,
    generator: Annotated[
        str, typer.Option(help="Rows only: the model that wrote them (e.g. text-davinci-003).")
    ] = "unknown",
    license_: Annotated[
        str | None, typer.Option("--license", help="Rows only: their licence, unless they say.")
    ] = None,
    run: Annotated[str | None, typer.Option(help="The topic only: this run's pairs.")] = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Curate pairs into a training set and an evaluation set, with a dataset card."""
    # Imported here: numba comes with the `curation` extra, and only this command needs it.
    try:
        from pipeline.curation.dataset import canonical_order
        from pipeline.curation.dataset import curate as run_curation
        from pipeline.curation.snapshot import FORMATS, write_snapshot
    except ImportError as exc:
        raise fail(
            f"{exc}: install the curation extra (pip install 'distillery[curation]')"
        ) from None
    config = _config(fields, threshold, eval_fraction, contamination_fields,
                     contamination_threshold)  # fmt: skip
    chosen = formats or list(FORMATS)
    _check(config, chosen, inputs=inputs, run=run, seeds=seeds, pool=pool, out=out)
    got = _read_files(inputs, generator, license_) if inputs else _read_pairs_topic(home, run)
    for line in got.skipped[:5]:
        err.print(f"[yellow]skipped[/yellow] {line}", soft_wrap=True)
    if len(got.skipped) > 5:
        err.print(f"[yellow]skipped[/yellow] {len(got.skipped) - 5} more rows")
    if not got.pairs:
        raise fail("no pairs to curate" + (f" for run {run}" if run else ""))
    kept_pool = _open_pool(pool, config, _read_seeds(seeds) if seeds else [])

    started = time.perf_counter()
    with console.status(f"curating {len(got.pairs)} pairs"):
        ordered = canonical_order(got.pairs) if got.messages_only else got.pairs
        try:
            curated = run_curation(ordered, config, pool=kept_pool)
        except ValueError as exc:
            raise fail(str(exc)) from None
        extra: dict[str, Any] = {"inputs": [str(p) for p in inputs] if inputs else [topics.PAIRS]}
        notes = []
        if got.skipped:
            extra["skipped_rows"] = got.skipped
            notes.append(f"{len(got.skipped)} input rows were not pairs and were skipped "
                         "(`manifest.json` lists them with the reason).")  # fmt: skip
        snapshot = write_snapshot(curated, out, formats=chosen, extra=extra, notes=notes)
    if pool:
        kept_pool.save(pool)

    _report(len(got.pairs), curated, snapshot, time.perf_counter() - started)


def _report(read: int, curated: Curated, snapshot: Snapshot, seconds: float) -> None:
    table = Table("step", "pairs")
    table.add_row("read", str(read))
    for name, n in curated.drop_counts().items():
        table.add_row(f"dropped: {name}", str(n))
    table.add_row("train", str(snapshot.train_n))
    table.add_row(f"eval ({len(curated.eval_docs)} documents)", str(snapshot.eval_n))
    console.print(table)
    if not snapshot.eval_n:
        err.print("[yellow]note[/yellow] no evaluation pairs: see the card's notes")
    console.print(
        f"{snapshot.id} written to {snapshot.directory} in {seconds:.1f}s "
        f"(sha256 {snapshot.sha256[:16]}…); card: {snapshot.directory / 'README.md'}"
    )


def _check(
    config: CurationConfig,
    formats: list[str],
    *,
    inputs: list[Path] | None,
    run: str | None,
    seeds: Path | None,
    pool: Path | None,
    out: Path,
) -> None:
    """Refuse what cannot work before reading anything."""
    from pipeline.curation.snapshot import FORMATS, check_directory

    if unknown := sorted(set(formats) - set(FORMATS)):
        raise fail(f"--format must be among {', '.join(FORMATS)}; got {', '.join(unknown)}")
    if seeds and config.fields != "instruction":
        raise fail("seed tasks are instructions: --seeds needs --fields instruction")
    if inputs and run:
        raise fail("--run picks pairs from the topic; files are curated whole")
    if pool and not pool.parent.is_dir():
        raise fail(f"{pool.parent}: no such directory for the pool file")
    try:
        check_directory(out)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _config(
    fields: str, threshold: float, fraction: float, contamination: str, contamination_at: float
) -> CurationConfig:
    from pipeline.curation.dataset import CurationConfig

    try:
        return CurationConfig.model_validate(
            {"fields": fields, "threshold": threshold, "eval_fraction": fraction,
             "contamination_fields": contamination, "contamination_threshold": contamination_at}
        )  # fmt: skip
    except ValidationError as exc:
        raise fail(_first_error(exc)) from None


def _read_files(paths: list[Path], generator: str, license_: str | None) -> Inputs:
    """Pairs from every file in order, and a line per row that is not a pair."""
    got = Inputs()
    terms = terms_for(generator)
    info = GeneratorInfo(
        provider="file", model=generator, prompt_id="none", prompt_hash="none",
        temperature=0, terms=terms.id if terms else None,
    )  # fmt: skip
    for path in paths:
        source = SourceInfo(kind="local", url=path.resolve().as_uri(), title=path.name,
                            license=license_)  # fmt: skip
        for where, row in _rows(path):
            is_message = isinstance(row, dict) and row.get("schema") == Pair.SCHEMA
            try:
                if is_message:
                    pair = decode(Pair, json.dumps(row).encode())
                else:
                    pair = _pair_of(Row.model_validate(row), info, source)
            except BadInput as exc:
                got.skipped.append(f"{where}: {exc}")
                continue
            except ValidationError as exc:
                got.skipped.append(f"{where}: {_first_error(exc)}")
                continue
            got.pairs.append(pair)
            got.messages_only &= is_message
    return got


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for a JSON list or JSON Lines, whatever the file is called."""
    if path.is_dir():
        raise fail(f"{path} is a directory: give the files in it")
    if not path.is_file():
        raise fail(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise fail(f"{path}: not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(f"{path}: not valid JSON ({exc})") from None
        yield from ((f"{path}[{i}]", row) for i, row in enumerate(rows))
        return
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"{path}:{i}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise fail(f"{path}:{i}: not valid JSON ({exc.msg}, column {exc.colno})") from None


def _pair_of(row: Row, info: GeneratorInfo, source: SourceInfo) -> Pair:
    """A row made a pair: its own document unless it names a `doc_id`, from its file."""
    pair_id = pair_id_of(row.instruction, row.input, row.output)
    doc_id = row.doc_id or sha256_hex(pair_id.encode())
    licence = row.license or source.license
    return Pair(
        pair_id=pair_id, chunk_id=f"{doc_id}:0", doc_id=doc_id, instruction=row.instruction,
        input=row.input, output=row.output, task=row.task, generator=info, license=licence,
        run_id="curate", source=source.model_copy(update={"license": licence}),
    )  # fmt: skip


def _read_pairs_topic(home: Path, run: str | None) -> Inputs:
    got = Inputs()
    for record in read_topic(kafka_settings(home.resolve()), topics.PAIRS):
        where = f"{topics.PAIRS}[{record.partition}]@{record.offset}"
        try:
            pair = decode(Pair, record.value)
        except BadInput as exc:
            got.skipped.append(f"{where}: {exc}")
            continue
        if run is None or pair.run_id == run:
            got.pairs.append(pair)
    return got


def _read_seeds(path: Path) -> list[str]:
    texts = []
    for where, row in _rows(path):
        if not (isinstance(row, dict) and isinstance(row.get("instruction"), str)):
            raise fail(f"{where}: a seed task needs an `instruction`")
        texts.append(row["instruction"])
    return texts


def _open_pool(path: Path | None, config: CurationConfig, seeds: list[str]) -> RougePool:
    """The pool file's pool, or a new one holding the seeds."""
    from pipeline.curation.dataset import new_pool
    from pipeline.curation.neardup import RougePool

    if path is None or not path.exists():
        return new_pool(config, seeds)
    if seeds:
        err.print(f"[yellow]note[/yellow] {path} already holds its seeds; --seeds ignored")
    try:
        return RougePool.load(path)
    except (ValueError, OSError, KeyError) as exc:
        raise fail(f"{path}: cannot read the pool ({exc})") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']}"
