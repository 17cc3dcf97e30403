"""Topic schemas: JSON round-trips, schema tags, deterministic ids and decode's precise errors."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline import topics
from pipeline.blobstore import FileBlobStore
from pipeline.errors import BadInput
from pipeline.messages import (
    DLQ_INLINE_BYTES,
    MAX_MESSAGE_BYTES,
    Checkpoint,
    DatasetRef,
    DlqRecord,
    EvalResult,
    FolderSource,
    GeneratorInfo,
    Message,
    Pair,
    ParsedChunk,
    RawDoc,
    SiteSource,
    SourceInfo,
    SourceRequest,
    TaskScore,
    chunk_id_of,
    decode,
    doc_id_of,
    encode,
    normalise,
    pair_id_of,
)

pytestmark = pytest.mark.unit

DOC = doc_id_of(b"%PDF-1.7 a small paper about low-rank adapters")
SOURCE = SourceInfo(
    kind="arxiv",
    url="https://arxiv.org/abs/2106.09685v2",
    title="LoRA",
    authors=("Hu", "Shen"),
    published=date(2021, 6, 17),
    license="CC-BY-4.0",
    external_id="2106.09685v2",
)
GENERATOR = GeneratorInfo(
    provider="groq", model="llama-3.1-8b", prompt_id="qa", prompt_hash="abc", temperature=0.7
)


def chunk(**changes: object) -> ParsedChunk:
    fields: dict[str, object] = {
        "chunk_id": chunk_id_of(DOC, 1),
        "doc_id": DOC,
        "index": 1,
        "total": 3,
        "text": "LoRA freezes the pretrained weights.",
        "section": "Method",
        "pages": (2, 3),
        "n_tokens": 7,
        "source": SOURCE,
        "run_id": "run-1",
    }
    return ParsedChunk(**{**fields, **changes})


def pair(instruction: str = "What does LoRA freeze?", input: str = "", **changes: object) -> Pair:
    output = "The pretrained weights."
    fields: dict[str, object] = {
        "pair_id": pair_id_of(instruction, input, output),
        "chunk_id": chunk_id_of(DOC, 1),
        "doc_id": DOC,
        "instruction": instruction,
        "input": input,
        "output": output,
        "task": "qa",
        "generator": GENERATOR,
        "license": "CC-BY-4.0",
        "run_id": "run-1",
    }
    return Pair(**{**fields, **changes})


def _no_spill(value: bytes) -> str:
    raise AssertionError(f"a {len(value)}-byte value should travel inline")


def dlq_record(
    key: bytes | None = b"doc-1",
    value: bytes = b"{}",
    spill: Callable[[bytes], str] = _no_spill,
    error: BaseException | None = None,
) -> DlqRecord:
    return DlqRecord.of(
        key=key,
        value=value,
        error=error or BadInput("bad", reason="invalid"),
        reason="invalid",
        service="extractor",
        attempts=1,
        topic=topics.RAW_DOCS,
        partition=2,
        offset=41,
        spill=spill,
    )


REQUEST = SourceRequest(run_id="run-1", source=FolderSource(path="/data/papers"))
RAW_DOC = RawDoc(
    doc_id=DOC,
    uri="file:///blobs/x.pdf",
    content_type="application/pdf",
    size=1234,
    source=SOURCE,
    run_id="run-1",
)
CHECKPOINT = Checkpoint(
    checkpoint_id="ckpt-1",
    run_id="run-1",
    base_model="Qwen/Qwen2.5-0.5B",
    method="lora",
    adapter_uri="s3://blobs/adapters/ckpt-1",
    dataset=DatasetRef(id="ds-1", sha256=DOC, train_n=900, eval_n=100, uri="s3://blobs/ds-1"),
    hyperparameters={"lr": 2e-4, "rank": 16, "packing": True, "note": None},
    metrics={"train_loss": 0.42},
)
EVAL = EvalResult(
    checkpoint_id="ckpt-1",
    run_id="run-1",
    base_model="Qwen/Qwen2.5-0.5B",
    adapter_uri="s3://blobs/adapters/ckpt-1",
    scores={"qa": TaskScore(metric="f1", base=0.3, tuned=0.5, delta=0.2, ci_low=0.1, ci_high=0.3)},
    verdict="promote",
    reason="beats base on qa",
    report_uri="s3://blobs/reports/ckpt-1.json",
)
SAMPLES: list[Message] = [
    REQUEST,
    SourceRequest(run_id="run-2", source=SiteSource(start_url="https://example.org")),
    RAW_DOC,
    chunk(),
    pair(),
    CHECKPOINT,
    EVAL,
    dlq_record(value=b"\xff\xfenot utf-8"),
]
IDS = [type(m).__name__ for m in SAMPLES]


def wire(message: Message) -> dict[str, object]:
    """The message as a JSON object, to tamper with before decoding."""
    return json.loads(encode(message))


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode("utf-8")


def decode_error(model: type[Message], value: bytes | None) -> BadInput:
    with pytest.raises(BadInput) as caught:
        decode(model, value)
    return caught.value


# --- ids ------------------------------------------------------------------------------------------


def test_doc_id_is_the_sha256_of_the_bytes():
    data = b"the same file"
    assert doc_id_of(data) == hashlib.sha256(data).hexdigest()
    assert doc_id_of(data) != doc_id_of(data + b" ")


def test_chunk_id_is_doc_id_and_index():
    assert chunk_id_of(DOC, 7) == f"{DOC}:7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  What is\tLoRA?\n", "what is lora?"),
        ("ＬｏＲＡ", "lora"),  # full-width letters
        ("\ufb01ne-tuning", "fine-tuning"),  # the "fi" ligature
        ("Straße", "strasse"),  # case folding, not just lower()
        ("a\u00a0\u2003b", "a b"),  # no-break and em spaces
    ],
)
def test_normalise(text, expected):
    assert normalise(text) == expected


BASE_TRIPLE = ("What is LoRA?", "", "A low-rank adapter.")


@pytest.mark.parametrize(
    "variant",
    [
        ("WHAT IS LORA?", "", "a low-rank adapter."),
        ("  What   is\nLoRA? ", "   ", "A low-rank adapter.\n"),
        ("Ｗhat is ＬoＲA?", "", "A low-rank adapter."),
    ],
)
def test_pair_id_ignores_case_whitespace_and_compatibility_forms(variant):
    assert pair_id_of(*variant) == pair_id_of(*BASE_TRIPLE)


@pytest.mark.parametrize(
    "other",
    [
        ("What is LoRA?", "", "A high-rank adapter."),
        ("What is LoRA?", "context", "A low-rank adapter."),
        ("Who made LoRA?", "", "A low-rank adapter."),
    ],
)
def test_pair_id_differs_for_different_triples(other):
    assert pair_id_of(*other) != pair_id_of(*BASE_TRIPLE)


def test_pair_id_respects_field_boundaries():
    assert pair_id_of("ab", "", "c") != pair_id_of("a", "b", "c")
    assert pair_id_of("a", "", "bc") != pair_id_of("a", "b", "c")


def test_a_separator_inside_a_field_cannot_forge_a_boundary():
    # \x1f joins the fields; inside a field it is whitespace and normalises to a space.
    assert pair_id_of("a\x1fb", "", "c") != pair_id_of("a", "b", "c")


# --- round trips and the schema tag ---------------------------------------------------------------


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_encode_then_decode_gives_the_same_message(message):
    assert decode(type(message), encode(message)) == message


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_schema_tag_is_written_on_the_wire(message):
    value = wire(message)
    assert value["schema"] == type(message).SCHEMA
    assert "schema_" not in value


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_schema_tag_defaults_to_the_models_own(message):
    assert message.schema_ == type(message).SCHEMA


def test_every_model_has_a_distinct_schema():
    models = {type(m) for m in SAMPLES}
    assert len({m.SCHEMA for m in models}) == len(models)


def test_code_may_not_set_another_models_schema():
    with pytest.raises(ValidationError, match="wrong schema"):
        SourceRequest(schema="pair/1", run_id="r", source=FolderSource(path="/x"))


def test_key_is_the_key_field_as_utf8():
    assert REQUEST.key() == b"run-1"
    assert chunk().key() == DOC.encode()  # all chunks of a document share a partition
    assert EVAL.key() == b"ckpt-1"


def test_source_request_picks_the_source_kind_from_the_tag():
    source = {"kind": "site", "start_url": "https://example.org"}
    message = decode(
        SourceRequest, raw({"schema": "source-request/1", "run_id": "r", "source": source})
    )
    assert message.source == SiteSource(start_url="https://example.org")


# --- decode errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_missing_schema_on_the_wire_is_wrong_schema(message):
    value = wire(message)
    del value["schema"]
    error = decode_error(type(message), raw(value))
    assert error.reason == "wrong_schema"
    assert f"no 'schema' field; this topic carries {type(message).SCHEMA!r}" in str(error)


def test_another_version_is_wrong_schema():
    value = wire(pair())
    value["schema"] = "pair/2"
    error = decode_error(Pair, raw(value))
    assert error.reason == "wrong_schema"
    assert str(error) == "pair/1: wrong schema: 'pair/2', this topic carries 'pair/1'"


def test_another_topics_value_is_wrong_schema_not_a_list_of_fields():
    error = decode_error(Pair, encode(chunk()))
    assert error.reason == "wrong_schema"
    assert "'chunk/1'" in str(error) and "'pair/1'" in str(error)
    assert "Field required" not in str(error)


def test_tombstone_is_empty():
    error = decode_error(Pair, None)
    assert error.reason == "empty"
    assert "tombstone" in str(error)


@pytest.mark.parametrize("value", [b"{not json", b"", b'{"schema": "pair/1"'])
def test_malformed_json_is_not_json(value):
    error = decode_error(Pair, value)
    assert error.reason == "not_json"
    assert str(error).startswith("not valid JSON: ")


@pytest.mark.parametrize("value", [b"[]", b"42", b'"pair/1"', b"null"])
def test_json_that_is_not_an_object_is_invalid(value):
    error = decode_error(Pair, value)
    assert error.reason == "invalid"
    assert str(error) == "pair/1: a pair/1 value must be a JSON object"


def test_invalid_field_is_named():
    value = wire(RAW_DOC)  # RawDoc
    value["size"] = -1
    error = decode_error(RawDoc, raw(value))
    assert error.reason == "invalid"
    assert str(error).startswith("raw-doc/1: size: Input should be greater than or equal to 0")


def test_missing_field_is_named():
    value = wire(pair())
    del value["run_id"]
    error = decode_error(Pair, raw(value))
    assert error.reason == "invalid"
    assert str(error) == "pair/1: run_id: Field required"


def test_nested_field_is_named_by_its_path():
    value = wire(chunk())
    value["source"]["kind"] = "ftp"
    error = decode_error(ParsedChunk, raw(value))
    assert error.reason == "invalid"
    assert "source.kind: Input should be 'arxiv', 'web' or 'local'" in str(error)


def test_many_errors_are_summarised_after_five():
    error = decode_error(RawDoc, raw({"schema": "raw-doc/1"}))  # six required fields missing
    assert error.reason == "invalid"
    assert str(error).count("Field required") == 5
    assert str(error).endswith(" (and 1 more)")


def test_extra_field_on_the_wire_is_rejected():
    value = wire(pair())
    value["score"] = 0.9
    error = decode_error(Pair, raw(value))
    assert error.reason == "invalid"
    assert "score: Extra inputs are not permitted" in str(error)


def test_extra_field_in_code_is_rejected():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RawDoc(**{**RAW_DOC.model_dump(), "priority": 1})


def test_extra_field_in_a_nested_model_is_rejected():
    value = wire(chunk())
    value["source"]["doi"] = "10.1/x"
    assert "source.doi" in str(decode_error(ParsedChunk, raw(value)))


@pytest.mark.parametrize("message", SAMPLES, ids=IDS)
def test_messages_are_frozen(message):
    with pytest.raises(ValidationError, match="frozen"):
        message.schema_ = "other/1"  # type: ignore[misc]


def test_nested_models_are_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        SOURCE.url = "https://evil.example"  # type: ignore[misc]


# --- encode's size limit --------------------------------------------------------------------------


def _chunk_of_size(n_bytes: int) -> ParsedChunk:
    overhead = len(encode(chunk(text="x"))) - 1
    return chunk(text="x" * (n_bytes - overhead))


def test_a_message_at_the_limit_is_encoded():
    value = encode(_chunk_of_size(MAX_MESSAGE_BYTES))
    assert len(value) == MAX_MESSAGE_BYTES


def test_a_message_over_the_limit_is_refused():
    with pytest.raises(BadInput) as caught:
        encode(_chunk_of_size(MAX_MESSAGE_BYTES + 1))
    assert caught.value.reason == "message_too_large"
    assert str(caught.value) == (
        f"chunk/1 message is {MAX_MESSAGE_BYTES + 1} bytes, over the {MAX_MESSAGE_BYTES} limit"
    )


# --- pair ids -------------------------------------------------------------------------------------


def test_pair_with_a_tampered_triple_is_rejected_in_code():
    with pytest.raises(ValidationError, match="pair_id is not the sha256"):
        pair(output="Something else entirely.")


def test_pair_with_a_tampered_triple_is_rejected_on_the_wire():
    value = wire(pair())
    value["output"] = "The adapter weights."
    error = decode_error(Pair, raw(value))
    assert error.reason == "invalid"
    assert str(error) == "pair/1: pair_id is not the sha256 of the normalised triple"


def test_pair_id_may_come_from_another_spelling_of_the_triple():
    spelled = pair(instruction="WHAT does  LoRA freeze?")
    assert spelled.pair_id == pair().pair_id


def test_pair_input_defaults_to_empty():
    value = wire(pair())
    del value["input"]
    assert decode(Pair, raw(value)).input == ""


def test_pair_id_must_be_lowercase_sha256_hex():
    with pytest.raises(ValidationError, match="pair_id"):
        pair(pair_id=pair().pair_id.upper())


# --- parsed chunks --------------------------------------------------------------------------------


def test_last_chunk_index_is_total_minus_one():
    last = chunk(index=2, chunk_id=chunk_id_of(DOC, 2), total=3)
    assert last.index == 2


@pytest.mark.parametrize("index", [3, 4])
def test_chunk_index_must_be_below_total(index):
    with pytest.raises(ValidationError, match=f"index {index} is not below total 3"):
        chunk(index=index, chunk_id=chunk_id_of(DOC, index))


def test_chunk_id_must_be_doc_id_and_index():
    with pytest.raises(ValidationError, match="is not doc_id:index"):
        chunk(chunk_id=chunk_id_of(DOC, 2))  # index is 1


@pytest.mark.parametrize(("field", "value"), [("index", -1), ("total", 0), ("doc_id", "abc")])
def test_chunk_field_bounds(field, value):
    with pytest.raises(ValidationError, match=field):
        chunk(**{field: value})


def test_chunk_id_mismatch_on_the_wire_is_invalid():
    value = wire(chunk())
    value["chunk_id"] = chunk_id_of(DOC, 0)
    error = decode_error(ParsedChunk, raw(value))
    assert error.reason == "invalid"
    assert "is not doc_id:index" in str(error)


def test_bad_chunk_id_is_invalid_whatever_its_text():
    value = wire(chunk())
    value["chunk_id"] = "schema:1"
    assert decode_error(ParsedChunk, raw(value)).reason == "invalid"


# --- dead letters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"", b"plain text", b"\xff\xfe\x00\x80 not utf-8", bytes(range(256)), "é".encode() * 300],
)
def test_dlq_record_keeps_the_value_bytes_exactly(value):
    record = dlq_record(value=value)
    assert record.original_value() == value
    assert decode(DlqRecord, encode(record)).original_value() == value
    assert base64.b64decode(wire(record)["value_b64"]) == value


def test_dlq_record_keeps_the_key():
    record = decode(DlqRecord, encode(dlq_record(key=b"doc-\xc3\xa9")))
    assert record.original_key == "doc-é"
    assert record.key() == b"doc-\xc3\xa9"


def test_dlq_record_of_a_keyless_message_has_no_key():
    record = dlq_record(key=None)
    assert record.original_key is None
    assert record.key() is None


def test_dlq_record_accepts_a_key_that_is_not_utf8():
    # Keys are ids and so UTF-8; a stray binary key is replaced, but must not stop dead-lettering.
    record = dlq_record(key=b"\xff\x00", value=b"\xff")
    assert record.original_key == "\ufffd\x00"
    assert record.original_value() == b"\xff"


def test_dlq_record_describes_the_failure():
    record = dlq_record(value=b"x" * 500)
    assert record.preview == "x" * 200
    assert (record.error_type, record.reason, record.error) == ("BadInput", "invalid", "bad")
    assert (record.topic, record.partition, record.offset) == (topics.RAW_DOCS, 2, 41)
    assert record.failed_at.tzinfo is not None
    assert abs((datetime.now(UTC) - record.failed_at).total_seconds()) < 60


def test_dlq_record_truncates_a_long_error():
    record = dlq_record(error=ValueError("e" * 5000))
    assert record.error == "e" * 2000
    assert record.error_type == "ValueError"


def test_dlq_record_at_the_inline_limit_travels_inline_and_fits_a_message():
    # Worst case for the record's size: control bytes preview as six-character JSON escapes.
    value = b"\x00" * DLQ_INLINE_BYTES
    record = dlq_record(value=value, error=ValueError("\x00" * 5000))
    assert record.value_uri is None and record.size == DLQ_INLINE_BYTES
    assert decode(DlqRecord, encode(record)).original_value() == value


def test_dlq_record_over_the_inline_limit_spills_to_the_blob_store(tmp_path: Path):
    store = FileBlobStore(tmp_path)
    value = b"\xff" + bytes(DLQ_INLINE_BYTES)
    record = decode(DlqRecord, encode(dlq_record(value=value, spill=store.put)))
    assert record.value_b64 is None
    assert record.value_uri == store.put(value)
    assert record.size == len(value)
    assert record.original_value(fetch=store.get) == value


def test_spilled_value_needs_a_fetch(tmp_path: Path):
    record = dlq_record(value=bytes(DLQ_INLINE_BYTES + 1), spill=FileBlobStore(tmp_path).put)
    with pytest.raises(ValueError, match="pass fetch"):
        record.original_value()


@pytest.mark.parametrize("values", [{}, {"value_b64": "", "value_uri": "file:///x"}])
def test_dlq_record_holds_exactly_one_value(values):
    record = wire(dlq_record())
    record.pop("value_b64"), record.pop("value_uri")
    error = decode_error(DlqRecord, raw({**record, **values}))
    assert error.reason == "invalid"
    assert "exactly one of value_b64 and value_uri must be set" in str(error)


def test_the_wire_tag_is_schema_not_the_python_field_name():
    raw = json.dumps(
        {"schema_": "source-request/1", "run_id": "r", "source": {"kind": "folder", "path": "/x"}}
    ).encode()
    with pytest.raises(BadInput) as info:
        decode(SourceRequest, raw)
    assert info.value.reason == "wrong_schema"
