"""`distillery curate`: pairs in (files or the `pairs` topic), a curated dataset out: duplicates
and near-duplicates dropped, split by document, contamination checked, files and a card."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from pipeline import topics
from pipeline.cli_common import DEFAULT_HOME, HomeOption, console, err, fail, kafka_settings
from pipeline.cli_common import read_all as read_topic
from pipeline.messages import GeneratorInfo, Pair, decode, pair_id_of, sha256_hex
from pipeline.terms import terms_for

if TYPE_CHECKING:
    from pipeline.curation.neardup import RougePool

FieldsOption = Annotated[
    str,
    typer.Option(help="What pairs are compared on: instruction, instruction+input, output, "
                 "or instruction+input+output."),
]  # fmt: skip


def curate(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="JSON or JSONL files of pairs (pair/1 messages) or of Alpaca-style "
            "rows {instruction, input, output}; none: read the `pairs` topic."
        ),
    ] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Directory to write the dataset to.")] = Path("dataset"),
    fields: FieldsOption = "instruction+input+output",
    threshold: Annotated[
        float, typer.Option(help="Drop a pair whose ROUGE-L F against a kept one is above this.")
    ] = 0.7,
    eval_fraction: Annotated[
        float, typer.Option(help="Share of documents held out for evaluation.")
    ] = 0.1,
    contamination_threshold: Annotated[
        float, typer.Option(help="Drop an eval pair at or above this ROUGE-L F to a train pair.")
    ] = 0.7,
    seeds: Annotated[
        Path | None, typer.Option(help="Seed tasks (JSONL with `instruction`) put in the pool.")
    ] = None,
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
        str, typer.Option(help="Model that wrote rows that do not say (e.g. text-davinci-003).")
    ] = "unknown",
    license_: Annotated[
        str | None, typer.Option("--license", help="Licence of rows that do not say.")
    ] = None,
    run: Annotated[str | None, typer.Option(help="With the topic: only this run's pairs.")] = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Curate pairs into a training set and an evaluation set, with a dataset card."""
    # Imported here: numba comes with the `curation` extra, and only this command needs it.
    try:
        from pipeline.curation.dataset import CurationConfig, canonical_order
        from pipeline.curation.dataset import curate as run_curation
        from pipeline.curation.neardup import RougePool
        from pipeline.curation.snapshot import FORMATS, write_snapshot
    except ImportError as exc:
        raise fail(
            f"{exc}: install the curation extra (pip install 'distillery[curation]')"
        ) from None

    try:
        config = CurationConfig.model_validate(
            {"fields": fields, "threshold": threshold, "eval_fraction": eval_fraction,
             "contamination_fields": fields, "contamination_threshold": contamination_threshold}
        )  # fmt: skip
    except ValidationError as exc:
        raise fail(_first_error(exc)) from None
    chosen = formats or list(FORMATS)
    if unknown := sorted(set(chosen) - set(FORMATS)):
        raise fail(f"--format must be among {', '.join(FORMATS)}; got {', '.join(unknown)}")

    if inputs:
        pairs, skipped = _read_files(inputs, generator, license_)
    else:
        pairs, skipped = _read_pairs_topic(home, run), []
    if not pairs:
        raise fail("no pairs to curate" + (f" for run {run}" if run else ""))
    seed_texts = _read_seeds(seeds) if seeds else []
    if pool and pool.exists():
        kept_pool = _load_pool(RougePool, pool, threshold)
        if seed_texts:
            err.print(f"[yellow]note[/yellow] {pool} already holds its seeds; --seeds ignored")
    else:
        kept_pool = RougePool(threshold)
        kept_pool.add(seed_texts)

    started = time.perf_counter()
    with console.status(f"curating {len(pairs)} pairs"):
        ordered = pairs if inputs else canonical_order(pairs)
        curated = run_curation(ordered, config, pool=kept_pool)
        extra: dict[str, Any] = {"inputs": [str(p) for p in inputs] if inputs else [topics.PAIRS]}
        if skipped:
            extra["skipped_rows"] = len(skipped)
        snapshot = write_snapshot(curated, out, formats=chosen, extra=extra)
    if pool:
        kept_pool.save(pool)
    for line in skipped[:5]:
        err.print(f"[yellow]skipped[/yellow] {line}", soft_wrap=True)
    if len(skipped) > 5:
        err.print(f"[yellow]skipped[/yellow] {len(skipped) - 5} more rows")

    table = Table("step", "pairs")
    table.add_row("read", str(len(pairs)))
    for name, n in curated.drop_counts().items():
        table.add_row(f"dropped: {name}", str(n))
    table.add_row("train", str(snapshot.train_n))
    table.add_row(f"eval ({len(curated.eval_docs)} documents)", str(snapshot.eval_n))
    console.print(table)
    console.print(
        f"{snapshot.id} written to {out} in {time.perf_counter() - started:.1f}s "
        f"(sha256 {snapshot.sha256[:16]}…); card: {out / 'README.md'}"
    )


def _read_files(
    paths: list[Path], generator: str, license_: str | None
) -> tuple[list[Pair], list[str]]:
    """Pairs from every file in order, and a line per row that is not a pair (empty output...)."""
    pairs: list[Pair] = []
    skipped: list[str] = []
    terms = terms_for(generator)
    info = GeneratorInfo(
        provider="file", model=generator, prompt_id="none", prompt_hash="none",
        temperature=0, terms=terms.id if terms else None,
    )  # fmt: skip
    for path in paths:
        for where, row in _rows(path):
            try:
                pairs.append(_pair_of(row, info, license_))
            except (ValidationError, TypeError, AttributeError) as exc:
                reason = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
                skipped.append(f"{where}: {reason}")
    return pairs, skipped


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    if not path.is_file():
        raise fail(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
            for i, line in lines:
                yield f"{path}:{i}", json.loads(line)
            return
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise fail(f"{path}: expected a JSON list of rows (or a .jsonl file)")
    for i, row in enumerate(rows):
        yield f"{path}[{i}]", row


def _pair_of(row: dict[str, Any], info: GeneratorInfo, license_: str | None) -> Pair:
    """A pair/1 message as it is, or an Alpaca-style row made into one: each row is its own
    document unless it names a `doc_id`."""
    if row.get("schema") == Pair.SCHEMA:
        return decode(Pair, json.dumps(row).encode())
    instruction, input_, output = row["instruction"], row.get("input", ""), row["output"]
    pair_id = pair_id_of(instruction, input_, output)
    doc_id = row.get("doc_id") or sha256_hex(pair_id.encode())
    return Pair(
        pair_id=pair_id, chunk_id=f"{doc_id}:0", doc_id=doc_id, instruction=instruction,
        input=input_, output=output, task=row.get("task", "instruction"), generator=info,
        license=row.get("license", license_), run_id="curate",
    )  # fmt: skip


def _read_pairs_topic(home: Path, run: str | None) -> list[Pair]:
    records = read_topic(kafka_settings(home.resolve()), topics.PAIRS)
    pairs = [decode(Pair, r.value) for r in records]
    return [p for p in pairs if run is None or p.run_id == run]


def _read_seeds(path: Path) -> list[str]:
    return [str(row["instruction"]) for _, row in _rows(path)]


def _load_pool(kind: type[RougePool], path: Path, threshold: float) -> RougePool:
    try:
        pool = kind.load(path)
    except (ValueError, OSError) as exc:
        raise fail(f"{path}: cannot read the pool ({exc})") from None
    if pool.threshold != threshold:
        raise fail(f"{path} was built at threshold {pool.threshold}, not {threshold}")
    return pool


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']}"
