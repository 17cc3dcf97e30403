"""Every message on every topic: versioned pydantic models, deterministic ids, strict JSON codec.

Values are JSON (people watch topics with kcat and Kafka UI) and carry a `schema` field such as
"pair/1". `decode` turns any malformed value into a `BadInput` that says precisely what is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline import topics
from pipeline.errors import BadInput

#: Messages carry URIs, never payloads; this is the contract's ceiling for one value.
MAX_MESSAGE_BYTES = 256 * 1024
#: Larger original values go to the blob store rather than into their DLQ record (base64
#: grows them by a third, and the record must stay under MAX_MESSAGE_BYTES).
DLQ_INLINE_BYTES = 128 * 1024

#: Validation context marking values read off a topic (as opposed to built in code).
_WIRE = "wire"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, Field(min_length=1)]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def doc_id_of(data: bytes) -> str:
    """A document's id is the sha256 of its bytes: the same file always gets the same id."""
    return sha256_hex(data)


def chunk_id_of(doc_id: str, index: int) -> str:
    return f"{doc_id}:{index}"


_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form in which two texts count as equal."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def pair_id_of(instruction: str, input: str, output: str) -> str:
    """The id of an instruction pair: sha256 of its normalised triple (unit separator between)."""
    joined = "\x1f".join(normalise(part) for part in (instruction, input, output))
    return sha256_hex(joined.encode("utf-8"))


class Message(BaseModel):
    """Base of every topic's value. Subclasses set SCHEMA, TOPIC and say which field is the key."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    SCHEMA: ClassVar[str]
    TOPIC: ClassVar[str]
    KEY_FIELD: ClassVar[str]

    # `schema` shadows a deprecated BaseModel method, hence the alias.
    schema_: str = Field("", alias="schema")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "SCHEMA" in cls.__dict__:
            # Every subclass defaults its own schema tag, so producers never write it by hand.
            cls.model_fields["schema_"].default = cls.SCHEMA
            cls.model_rebuild(force=True)

    @model_validator(mode="before")
    @classmethod
    def _check_schema(cls, data: Any, info: ValidationInfo) -> Any:
        # Checked before the fields, so a value of another schema (or version) is reported as
        # such, not as a list of missing fields. Code may omit the tag; the wire may not.
        if isinstance(data, dict):
            if info.context == _WIRE:
                got = data.get("schema")
            else:
                got = data.get("schema", data.get("schema_", cls.SCHEMA))
            if got is None:
                raise PydanticCustomError(
                    "wrong_schema",
                    "no 'schema' field; this topic carries '{want}'",
                    {"want": cls.SCHEMA},
                )
            if got != cls.SCHEMA:
                raise PydanticCustomError(
                    "wrong_schema",
                    "wrong schema: '{got}', this topic carries '{want}'",
                    {"got": got, "want": cls.SCHEMA},
                )
        elif not isinstance(data, BaseModel):
            raise ValueError(f"a {cls.SCHEMA} value must be a JSON object")
        return data

    def key(self) -> bytes | None:
        return str(getattr(self, self.KEY_FIELD)).encode("utf-8")


# --- sources: what to scrape ----------------------------------------------------------------


class ArxivSource(BaseModel):
    """With a category: that category's listing, `query` filtering titles and abstracts by
    keywords. Without one: arXiv's search for `query`. `since` keeps papers first submitted
    on or after that day."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["arxiv"] = "arxiv"
    query: str | None = None
    category: str | None = None
    listing: Literal["new", "recent", "pastweek"] = "recent"
    since: date | None = None
    max_papers: int = Field(50, ge=1)
    #: Fetch from private or loopback addresses (a mirror on the local network; tests).
    allow_private: bool = False

    @model_validator(mode="after")
    def _query_or_category(self) -> ArxivSource:
        if not (self.query or self.category):
            raise ValueError("an arxiv source needs a query, a category, or both")
        return self


class SiteSource(BaseModel):
    """Crawl from `start_url` within its registered domain (plus `allow_hosts`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["site"] = "site"
    start_url: NonEmpty
    max_pages: int = Field(200, ge=1)
    max_depth: int = Field(5, ge=0)
    allow_hosts: tuple[str, ...] = ()
    allow_private: bool = False


class FolderSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["folder"] = "folder"
    path: NonEmpty
    recursive: bool = True


SourceSpec = Annotated[ArxivSource | SiteSource | FolderSource, Field(discriminator="kind")]


class SourceRequest(Message):
    SCHEMA = "source-request/1"
    TOPIC = topics.SOURCES
    KEY_FIELD = "run_id"

    run_id: NonEmpty
    source: SourceSpec


# --- raw-docs: fetched documents --------------------------------------------------------------


class SourceInfo(BaseModel):
    """Where a document came from; travels with every chunk and pair for provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["arxiv", "web", "local"]
    url: str
    title: str | None = None
    authors: tuple[str, ...] = ()
    published: date | None = None
    license: str | None = None
    #: arXiv id with version ("2106.09685v2"); absent for other kinds.
    external_id: str | None = None
    #: arXiv categories, primary first ("cs.CL", "cs.LG").
    categories: tuple[str, ...] = ()


class RawDoc(Message):
    SCHEMA = "raw-doc/1"
    TOPIC = topics.RAW_DOCS
    KEY_FIELD = "doc_id"

    doc_id: Sha256
    uri: NonEmpty
    content_type: NonEmpty
    size: int = Field(ge=0)
    source: SourceInfo
    run_id: NonEmpty
    #: The abstract as the source lists it (arXiv); not copied onto chunks.
    abstract: str | None = None


# --- parsed-text: clean chunks ----------------------------------------------------------------


class ParsedChunk(Message):
    SCHEMA = "chunk/1"
    TOPIC = topics.PARSED_TEXT
    KEY_FIELD = "doc_id"

    chunk_id: NonEmpty
    doc_id: Sha256
    index: int = Field(ge=0)
    total: int = Field(ge=1)
    text: NonEmpty
    section: str | None = None
    #: First and last page (1-based, inclusive); absent for HTML.
    pages: tuple[int, int] | None = None
    n_tokens: int = Field(ge=0)
    source: SourceInfo
    run_id: NonEmpty

    @model_validator(mode="after")
    def _check_ids(self) -> ParsedChunk:
        if self.index >= self.total:
            raise ValueError(f"index {self.index} is not below total {self.total}")
        if self.chunk_id != chunk_id_of(self.doc_id, self.index):
            raise ValueError(f"chunk_id {self.chunk_id!r} is not doc_id:index")
        return self


# --- pairs: instruction triples ---------------------------------------------------------------


class GeneratorInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    provider: NonEmpty
    model: NonEmpty
    prompt_id: NonEmpty
    prompt_hash: NonEmpty
    temperature: float = Field(ge=0)
    #: Id of the terms the model's outputs come under (pipeline.terms), when known.
    terms: str | None = None


class Pair(Message):
    SCHEMA = "pair/1"
    TOPIC = topics.PAIRS
    KEY_FIELD = "doc_id"

    pair_id: Sha256
    chunk_id: NonEmpty
    doc_id: Sha256
    instruction: NonEmpty
    input: str = ""
    output: NonEmpty
    task: NonEmpty
    generator: GeneratorInfo
    license: str | None = None
    run_id: NonEmpty
    #: The document's source (title, url, kind), for the dataset card; absent from older pairs.
    source: SourceInfo | None = None

    @model_validator(mode="after")
    def _check_id(self) -> Pair:
        expected = pair_id_of(self.instruction, self.input, self.output)
        if self.pair_id != expected:
            raise ValueError("pair_id is not the sha256 of the normalised triple")
        return self


# --- checkpoints and eval-results -------------------------------------------------------------


class DatasetRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: NonEmpty
    sha256: Sha256
    train_n: int = Field(ge=0)
    eval_n: int = Field(ge=0)
    uri: NonEmpty


Scalar = str | int | float | bool | None


class Checkpoint(Message):
    SCHEMA = "checkpoint/1"
    TOPIC = topics.CHECKPOINTS
    KEY_FIELD = "run_id"

    checkpoint_id: NonEmpty
    run_id: NonEmpty
    base_model: NonEmpty
    method: Literal["lora", "qlora", "full"]
    adapter_uri: NonEmpty
    dataset: DatasetRef
    hyperparameters: dict[str, Scalar] = {}
    metrics: dict[str, float] = {}
    #: What goes with the adapter, by kind: tokenizer, recipe, trainer_state, dataset_card.
    artifacts: dict[str, NonEmpty] = {}


class TaskScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: NonEmpty
    base: float
    tuned: float
    delta: float
    ci_low: float | None = None
    ci_high: float | None = None
    #: False for perplexity and bits per byte: there a negative delta is the gain.
    higher_is_better: bool = True


class EvalResult(Message):
    SCHEMA = "eval-result/1"
    TOPIC = topics.EVAL_RESULTS
    KEY_FIELD = "checkpoint_id"

    checkpoint_id: NonEmpty
    run_id: NonEmpty
    base_model: NonEmpty
    adapter_uri: NonEmpty
    scores: dict[str, TaskScore]
    verdict: Literal["promote", "reject"]
    reason: str
    report_uri: NonEmpty


# --- dead letters ------------------------------------------------------------------------------


class DlqRecord(Message):
    """A message that could not be handled, with everything needed to understand or replay it."""

    SCHEMA = "dlq/1"
    TOPIC = ""  # always <topic>.dlq of the topic it came from
    KEY_FIELD = "original_key"

    original_key: str | None = None  # keys are ids, so UTF-8 text
    #: The original bytes, exactly: inline (base64) when small, else in the blob store.
    value_b64: str | None = None
    value_uri: str | None = None
    size: int = Field(ge=0)
    preview: str  # the first characters of the value, for people reading the topic
    error_type: NonEmpty
    reason: NonEmpty
    error: str
    service: NonEmpty
    attempts: int = Field(ge=0)
    topic: NonEmpty
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    failed_at: datetime

    @classmethod
    def of(
        cls,
        *,
        key: bytes | None,
        value: bytes,
        error: BaseException,
        reason: str,
        service: str,
        attempts: int,
        topic: str,
        partition: int,
        offset: int,
        spill: Callable[[bytes], str],
    ) -> DlqRecord:
        """`spill` stores a value too big to travel inline and returns its URI."""
        inline = len(value) <= DLQ_INLINE_BYTES
        return cls(
            original_key=key.decode("utf-8", "replace") if key is not None else None,
            value_b64=base64.b64encode(value).decode("ascii") if inline else None,
            value_uri=None if inline else spill(value),
            size=len(value),
            preview=value[:200].decode("utf-8", "replace"),
            error_type=type(error).__name__,
            reason=reason,
            error=str(error)[:2000],
            service=service,
            attempts=attempts,
            topic=topic,
            partition=partition,
            offset=offset,
            failed_at=datetime.now(UTC),
        )

    @model_validator(mode="after")
    def _one_value(self) -> DlqRecord:
        if (self.value_b64 is None) == (self.value_uri is None):
            raise ValueError("exactly one of value_b64 and value_uri must be set")
        return self

    def original_value(self, fetch: Callable[[str], bytes] | None = None) -> bytes:
        """The original bytes; `fetch` (a blob store's `get`) is needed when they were spilled."""
        if self.value_b64 is not None:
            return base64.b64decode(self.value_b64)
        if fetch is None:
            raise ValueError(f"the value is in the blob store at {self.value_uri}: pass fetch")
        return fetch(str(self.value_uri))

    def key(self) -> bytes | None:
        return None if self.original_key is None else self.original_key.encode("utf-8")


# --- codec ------------------------------------------------------------------------------------

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    """JSON bytes of a message; refuses values over the contract's size limit."""
    raw = message.model_dump_json().encode("utf-8")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadInput(
            f"{message.SCHEMA} message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} limit",
            reason="message_too_large",
        )
    return raw


def decode(model: type[M], raw: bytes | None) -> M:
    """Parse and validate `raw` as `model`, or raise BadInput saying exactly why not."""
    if raw is None:
        raise BadInput("empty value (tombstone)", reason="empty")
    try:
        return model.model_validate_json(raw, context=_WIRE)
    except ValidationError as exc:
        raise BadInput(_explain(model, exc), reason=_reason(exc)) from None


def _reason(exc: ValidationError) -> str:
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        return "not_json"
    if any(e["type"] == "wrong_schema" for e in errors):
        return "wrong_schema"
    return "invalid"


def _explain(model: type[Message], exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False)[:5]:
        if e["type"] == "json_invalid":
            return f"not valid JSON: {e['msg']}"
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"].removeprefix("Value error, "))
    more = exc.error_count() - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{model.SCHEMA}: " + "; ".join(parts) + suffix
