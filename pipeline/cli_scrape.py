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
TimeoutOption = Annotated[
    float | None, typer.Option(help="With --follow: give up watching after this many seconds.")
]
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
    timeout: TimeoutOption = None,
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
    submit(source, run_id, follow, group, home, timeout)


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
    timeout: TimeoutOption = None,
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
    submit(source, run_id, follow, group, home, timeout)


@scrape.command("folder")
def folder_(
    path: Annotated[Path, typer.Argument(help="A directory of PDF and HTML files.")],
    recursive: Annotated[bool, typer.Option(help="Include sub-directories.")] = True,
    run_id: RunOption = None,
    follow: FollowOption = False,
    timeout: TimeoutOption = None,
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
        timeout,
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


def submit(
    source: SourceSpec,
    run_id: str | None,
    follow: bool,
    group: str,
    home: Path,
    timeout_s: float | None = None,
) -> None:
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
        request_at = TopicPartition(topics.SOURCES, sent.partition)
        watch.until_done(group, request_at, sent.offset, timeout_s)


class _Watch:
    """Reads raw-docs and sources.dlq from their current ends for one run's records."""

    def __init__(self, settings: KafkaSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.reader: KafkaConsumer = bus.consumer(settings, group_id=None)
        self.tps = [
            tp
            for name in (topics.RAW_DOCS, topics.dlq(topics.SOURCES))
            for tp in bus.partitions_of(self.reader, name)
        ]
        ends = bus.end_offsets(self.reader, self.tps)
        self.reader.assign(self.tps)
        for tp in self.tps:
            self.reader.seek(tp, ends[tp])
        #: Documents of the run, once each: a retried or resumed run publishes some again.
        self.docs: set[str] = set()

    def until_done(
        self, group: str, request: TopicPartition, offset: int, timeout_s: float | None
    ) -> None:
        started = time.monotonic()
        try:
            with console.status("waiting for the scraper") as status:
                while bus.committed(self.settings, group).get(request, -1) <= offset:
                    self._read(timeout_ms=1000)
                    waited = time.monotonic() - started
                    if timeout_s is not None and waited > timeout_s:
                        raise fail(
                            f"run {self.run_id} not done after {timeout_s:.0f}s "
                            f"({len(self.docs)} documents so far); it goes on"
                        )
                    status.update(self._progress(waited, group))
            self._read_to_end()  # what was acknowledged before the commit, and any DLQ record
        except KeyboardInterrupt:
            console.print("stopped watching; the run goes on (`distillery topics` shows it)")
            return
        finally:
            self.reader.close()
        console.print(
            f"run [bold]{self.run_id}[/bold] done: {len(self.docs)} documents on "
            f"{topics.RAW_DOCS} in {time.monotonic() - started:.0f}s"
        )

    def _progress(self, waited: float, group: str) -> str:
        line = f"{len(self.docs)} documents, {waited:.0f}s (Ctrl-C stops watching; the run goes on)"
        if not self.docs and waited > 30:
            line += f"; nothing yet: is a scraper running in group {group!r}? (`distillery status`)"
        return line

    def _read_to_end(self) -> None:
        probe = bus.consumer(self.settings, group_id=None)
        try:
            ends = bus.end_offsets(probe, self.tps)
        finally:
            probe.close()
        deadline = time.monotonic() + 30
        while any(self.reader.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise fail(f"could not read {topics.RAW_DOCS} to its end")
            self._read(timeout_ms=500)

    def _read(self, timeout_ms: int) -> None:
        for tp, records in self.reader.poll(timeout_ms=timeout_ms).items():
            for record in records:
                if tp.topic == topics.RAW_DOCS:
                    self._doc(record.value)
                else:
                    self._dead(record.key, record.value)

    def _doc(self, value: bytes) -> None:
        doc = decode(RawDoc, value)
        if doc.run_id != self.run_id or doc.doc_id in self.docs:
            return
        self.docs.add(doc.doc_id)
        src = doc.source
        label = " ".join(filter(None, [src.external_id, src.title or src.url]))
        console.print(
            f"{len(self.docs):4d}  {doc.content_type:15s} {doc.size / 1e6:6.2f} MB  {label}",
            highlight=False,
            no_wrap=True,
            overflow="ellipsis",
        )

    def _dead(self, key: bytes | None, value: bytes) -> None:
        if key is None or key.decode("utf-8", "replace") != self.run_id:
            return
        dead = decode(DlqRecord, value)
        raise fail(f"the scraper refused run {self.run_id} ({dead.reason}): {dead.error}")
