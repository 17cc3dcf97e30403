"""`distillery scrape arxiv|site|folder`: publish a request to `sources`; with --follow, print
each document the scraper publishes for it until the scraper has finished it."""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from pipeline import bus, topics
from pipeline.cli_common import DEFAULT_HOME, HomeOption, console, fail, kafka_settings
from pipeline.messages import (
    ArxivSource,
    DlqRecord,
    FolderSource,
    RawDoc,
    SiteSource,
    SourceRequest,
    SourceSpec,
    decode,
    encode,
)
from pipeline.settings import KafkaSettings

scrape = typer.Typer(help=__doc__, no_args_is_help=True)

RunOption = Annotated[
    str | None, typer.Option(help="Run id (default: a new one); reuse one to resume a run.")
]
FollowOption = Annotated[
    bool, typer.Option(help="Show each document as it is published, until the run is done.")
]
GroupOption = Annotated[str, typer.Option(help="The scraper's consumer group.")]
PrivateOption = Annotated[
    bool, typer.Option(help="Allow private and loopback addresses (a local mirror).")
]


@scrape.command("arxiv")
def arxiv_(
    category: Annotated[str | None, typer.Option(help="Listing to walk, e.g. cs.CL.")] = None,
    query: Annotated[
        str | None, typer.Option(help="Keywords: searched, or filtering the category.")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Papers first submitted on or after this day."),
    ] = None,
    max_papers: Annotated[int, typer.Option("--max", min=1)] = 50,
    listing: Annotated[str, typer.Option(help="new, recent or pastweek.")] = "recent",
    allow_private: PrivateOption = False,
    run_id: RunOption = None,
    follow: FollowOption = False,
    group: GroupOption = "scraper",
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Papers from an arXiv listing or search, downloaded politely (one request per 3 s)."""
    day: date | None = since.date() if since else None
    source = _build(
        ArxivSource,
        category=category,
        query=query,
        since=day,
        max_papers=max_papers,
        listing=listing,
        allow_private=allow_private,
    )
    submit(source, run_id, follow, group, home)


@scrape.command("site")
def site_(
    url: Annotated[str, typer.Argument(help="Start URL.")],
    max_pages: Annotated[int, typer.Option(min=1)] = 200,
    max_depth: Annotated[int, typer.Option(min=0)] = 5,
    allow_host: Annotated[
        list[str], typer.Option(help="Another domain the crawl may enter (repeatable).")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    allow_private: PrivateOption = False,
    run_id: RunOption = None,
    follow: FollowOption = False,
    group: GroupOption = "scraper",
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """A web site's pages (and the PDFs it links), within its registered domain."""
    source = _build(
        SiteSource,
        start_url=url,
        max_pages=max_pages,
        max_depth=max_depth,
        allow_hosts=tuple(allow_host),
        allow_private=allow_private,
    )
    submit(source, run_id, follow, group, home)


@scrape.command("folder")
def folder_(
    path: Annotated[Path, typer.Argument(help="A directory of PDF and HTML files.")],
    recursive: Annotated[bool, typer.Option(help="Include sub-directories.")] = True,
    run_id: RunOption = None,
    follow: FollowOption = False,
    group: GroupOption = "scraper",
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """The PDF and HTML files of a local directory (as the scraper's machine sees it)."""
    if not path.is_dir():
        raise fail(f"{path} is not a directory")
    submit(
        _build(FolderSource, path=str(path.resolve()), recursive=recursive),
        run_id,
        follow,
        group,
        home,
    )


def _build(model: type[SourceSpec], **fields: object) -> SourceSpec:
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise fail(problems) from None


def submit(source: SourceSpec, run_id: str | None, follow: bool, group: str, home: Path) -> None:
    """Publish a scrape request to `sources`; with `follow`, watch it until it is done."""
    settings = kafka_settings(home.resolve())
    request = SourceRequest(
        run_id=run_id or f"{source.kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        source=source,
    )
    # Start reading before publishing, so no document of this run can slip past.
    watch = _Watch(settings, request.run_id) if follow else None
    producer = bus.producer(settings)
    try:
        sent = producer.send(topics.SOURCES, key=request.key(), value=encode(request)).get(30)
    finally:
        producer.close()
    console.print(f"run [bold]{request.run_id}[/bold] published to {topics.SOURCES}")
    if watch is not None:
        watch.until_done(group, TopicPartition(topics.SOURCES, sent.partition), sent.offset)


class _Watch:
    """Reads raw-docs and sources.dlq from their current ends for one run's records."""

    def __init__(self, settings: KafkaSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.reader: KafkaConsumer = bus.consumer(settings, group_id=None)
        tps = [
            tp
            for name in (topics.RAW_DOCS, topics.dlq(topics.SOURCES))
            for tp in bus.partitions_of(self.reader, name)
        ]
        ends = bus.end_offsets(self.reader, tps)
        self.reader.assign(tps)
        for tp in tps:
            self.reader.seek(tp, ends[tp])
        self.docs = 0

    def until_done(self, group: str, request: TopicPartition, offset: int) -> None:
        started = time.monotonic()
        try:
            with console.status("waiting for the scraper") as status:
                while bus.committed(self.settings, group).get(request, -1) <= offset:
                    self._read(timeout_ms=1000)
                    status.update(
                        f"{self.docs} documents, {time.monotonic() - started:.0f}s "
                        "(Ctrl-C stops watching; the run goes on)"
                    )
            self._read(timeout_ms=1000)  # what was acknowledged just before the commit
        except KeyboardInterrupt:
            console.print("stopped watching; the run goes on (`distillery topics` shows it)")
            return
        finally:
            self.reader.close()
        console.print(
            f"run [bold]{self.run_id}[/bold] done: {self.docs} documents on {topics.RAW_DOCS} "
            f"in {time.monotonic() - started:.0f}s"
        )

    def _read(self, timeout_ms: int) -> None:
        for tp, records in self.reader.poll(timeout_ms=timeout_ms).items():
            for record in records:
                if tp.topic == topics.RAW_DOCS:
                    self._doc(record.value)
                else:
                    self._dead(record.key, record.value)

    def _doc(self, value: bytes) -> None:
        doc = decode(RawDoc, value)
        if doc.run_id != self.run_id:
            return
        self.docs += 1
        src = doc.source
        label = " ".join(filter(None, [src.external_id, src.title or src.url]))
        console.print(
            f"{self.docs:4d}  {doc.content_type:15s} {doc.size / 1e6:6.2f} MB  {label}",
            highlight=False,
            no_wrap=True,
            overflow="ellipsis",
        )

    def _dead(self, key: bytes | None, value: bytes) -> None:
        if key is None or key.decode("utf-8", "replace") != self.run_id:
            return
        dead = decode(DlqRecord, value)
        self.reader.close()
        raise fail(f"the scraper refused run {self.run_id} ({dead.reason}): {dead.error}")
