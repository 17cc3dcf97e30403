"""A tolerant reader of model answers: JSON (fenced, wrapped in prose, or cut short) and the
"Triple 1: Instruction: … Input: … Output: …" / "Question: … Answer: …" text family.

It never raises anything but `Malformed`, whose `reason` names what was wrong; what it can
salvage from a damaged answer (the complete triples before a truncation) it keeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: The field names models use for each part of a triple, lower-cased, without punctuation.
_ALIASES = {
    "instruction": "instruction",
    "task": "instruction",
    "prompt": "instruction",
    "question": "instruction",
    "q": "instruction",
    "input": "input",
    "context": "input",
    "output": "output",
    "answer": "output",
    "response": "output",
    "a": "output",
}
#: What models write for "no input" (Self-Instruct's own marker among them).
_NO_INPUT = {"", "none", "n/a", "na", "<noinput>", "no input", "null", "-", "empty", '""'}


class Malformed(ValueError):
    """An answer with no usable triple in it; `reason` is short and machine-readable."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Parsed:
    """Triples as (instruction, input, output), and the reason each dropped item was dropped."""

    triples: list[tuple[str, str, str]]
    dropped: list[str] = field(default_factory=list)
    #: The answer was cut short (unclosed JSON) and only its complete items were kept.
    salvaged: bool = False


def parse_answer(text: str | None) -> Parsed:
    """Triples from a model's answer, in either family; raises Malformed when there are none."""
    if text is None or not text.strip():
        raise Malformed("the answer is empty", reason="empty")
    body = _unfence(text)
    if _looks_like_json(body):
        try:
            return _from_json(body)
        except Malformed:
            if body[0] in "{[":
                raise
            # Prose with a bracket in it ("the [CLS] token", "{a, b}"): the text family.
    return _from_text(body)


# --- JSON -------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.S)


def _unfence(text: str) -> str:
    match = _FENCE.search(text)
    return (match.group(1) if match else text).strip()


def _looks_like_json(text: str) -> bool:
    start = _json_start(text)
    # JSON when the answer starts with it, or when prose around it is short ("Here you go: {").
    return start is not None and start < 200 and '"' in text[start:]


def _json_start(text: str) -> int | None:
    positions = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    return min(positions) if positions else None


def _from_json(text: str) -> Parsed:
    start = _json_start(text)
    assert start is not None  # noqa: S101 - checked by _looks_like_json
    try:
        value, _end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        # Cut short (max_tokens) or broken further in: keep every complete object inside.
        items = list(_complete_objects(text, start))
        if not items:
            raise Malformed("the answer is JSON that does not parse", reason="bad_json") from None
        return _items(items, salvaged=True)
    return _items(_find_items(value), salvaged=False)


def _complete_objects(text: str, start: int) -> Iterator[dict[str, Any]]:
    """Every innermost-complete JSON object holding triple fields, scanning from `start`."""
    decoder = json.JSONDecoder()
    i = text.find("{", start + 1) if text[start] == "{" else text.find("{", start)
    while i >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict) and _has_triple_keys(value):
            yield value
            i = text.find("{", end)
        else:
            i = text.find("{", i + 1)


def _has_triple_keys(item: dict[str, Any]) -> bool:
    return any(_ALIASES.get(_key(k)) in ("instruction", "output") for k in item)


def _find_items(value: Any) -> list[Any]:
    """The list of triples in a parsed answer: a top-level list, the first list-valued field
    of an object ({"triples": [...]}, {"pairs": [...]}), or one triple object on its own."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if _has_triple_keys(value):
            return [value]
        for inner in value.values():
            if isinstance(inner, list):
                return inner
            if isinstance(inner, dict) and not _has_triple_keys(inner):
                found = _find_items(inner)
                if found:
                    return found
        # {"triple_1": {...}, "triple_2": {...}}
        return [v for v in value.values() if isinstance(v, dict)]
    raise Malformed(f"the answer is a JSON {type(value).__name__}", reason="no_triples")


def _items(items: list[Any], *, salvaged: bool) -> Parsed:
    triples: list[tuple[str, str, str]] = []
    dropped: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            dropped.append("not_an_object")
            continue
        fields: dict[str, str] = {}
        for key, raw in item.items():
            name = _ALIASES.get(_key(key))
            if name is not None and name not in fields:
                text = _as_text(raw)
                if text is None:
                    dropped.append("bad_field")
                    break
                fields[name] = text
        else:
            _add(triples, dropped, fields)
    return _result(triples, dropped, salvaged=salvaged)


def _key(key: str) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


def _as_text(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return "\n".join(str(v) for v in value)
    return None


# --- the text family --------------------------------------------------------------------------

#: A field label at the start of a line, in the styles models use: "Instruction:",
#: "**Input:**", "### Output", "1. Question:", "Triple 2: Instruction:", "Q:".
_LABEL = re.compile(
    r"^[ \t>*#_\-]*(?:(?:triple|pair|example|task)?\s*\d+\s*[:.)\-]\s*)?[*_]*"
    r"(instruction|task|prompt|question|input|context|output|answer|response|q|a)"
    r"\s*(?:\d+\s*)?[*_]*\s*(?::|\n)[*_]*[ \t]*"
    # ...or, inside a line, a capitalised label with its colon ("... Input: none Output: ...").
    r"|(?<=[ \t])[*_]*(?-i:(Instruction|Input|Output|Question|Answer|Response|Context))"
    r"[*_]*:[*_]*[ \t]*",
    re.I | re.M,
)
#: "Triple 2:" between two triples, on its own line or trailing the previous value.
_HEADER = re.compile(r"[ \t>*#_\-]*(?:triple|pair|example)\s*\d+\s*[:.)]?[*_]*\s*$", re.I | re.M)


def _from_text(text: str) -> Parsed:
    labels = list(_LABEL.finditer(text))
    if not labels:
        raise Malformed(
            "no JSON and no Instruction:/Output: labels in the answer", reason="no_triples"
        )
    triples: list[tuple[str, str, str]] = []
    dropped: list[str] = []
    fields: dict[str, str] = {}
    for i, match in enumerate(labels):
        name = _ALIASES[(match.group(1) or match.group(2)).lower()]
        end = labels[i + 1].start() if i + 1 < len(labels) else len(text)
        value = _HEADER.sub("", text[match.end() : end]).strip()
        # A label seen again, or an instruction after an output, starts the next triple.
        if name in fields or (name == "instruction" and "output" in fields):
            _add(triples, dropped, fields)
            fields = {}
        fields[name] = value
    _add(triples, dropped, fields)
    return _result(triples, dropped, salvaged=False)


# --- shared -----------------------------------------------------------------------------------


def _add(triples: list[tuple[str, str, str]], dropped: list[str], fields: dict[str, str]) -> None:
    instruction = _clean(fields.get("instruction", ""))
    output = _clean(fields.get("output", ""))
    given = _clean(fields.get("input", ""))
    if not fields:
        return
    if not instruction:
        dropped.append("no_instruction")
    elif not output:
        dropped.append("no_output")
    else:
        triples.append((instruction, "" if given.lower() in _NO_INPUT else given, output))


def _clean(text: str) -> str:
    # JSON may carry lone surrogates ("\ud83d") that no UTF-8 message could hold.
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.strip().strip("*_").strip()
    # A value the model quoted as a whole: "\"What is LoRA?\"".
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _result(triples: list[tuple[str, str, str]], dropped: list[str], *, salvaged: bool) -> Parsed:
    if not triples:
        why = dropped[0] if dropped else "no_triples"
        raise Malformed(f"no complete triple in the answer ({why})", reason=why)
    return Parsed(triples, dropped, salvaged)
