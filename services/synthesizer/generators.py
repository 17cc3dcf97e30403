"""Generators behind one Protocol: a chunk in, candidate triples out (with what was rejected
on the way and what it cost). Prompted LLMs and reading-comprehension mining are both here;
Self-Instruct bootstrapping lives in selfinstruct.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pipeline.messages import ParsedChunk
from services.synthesizer import reading, sentences
from services.synthesizer.core import Triple
from services.synthesizer.llm import ChatClient, Completion, Message, Usage
from services.synthesizer.parse import Malformed, Parsed, parse_answer
from services.synthesizer.prompts import Prompt
from services.synthesizer.ratelimit import Budget

T = TypeVar("T")


async def all_or_none(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; at the first failure cancel the others (they would go on spending
    for a chunk that is retried or dead-lettered) and raise that failure itself, not an
    ExceptionGroup: the worker loop routes errors by their type."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


@dataclass
class Generation:
    triples: list[Triple] = field(default_factory=list)
    #: Why answers or items were not used ("malformed_bad_json", "no_output", ...).
    rejected: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    repaired: bool = False


class Generator(Protocol):
    """What a pair records about its maker, and how candidates are made from a chunk."""

    provider: str
    model: str
    prompt_id: str
    prompt_hash: str
    temperature: float
    #: Whether outputs must be supported by the chunk (the grounding filter applies).
    grounded: bool

    async def generate(self, chunk: ParsedChunk, budget: Budget) -> Generation: ...


class ReadingComprehension:
    """LLM-free: tasks mined from the chunk's own sentences (reading.py). Its "prompt" is the
    miner's code, so the hash recorded on pairs is that of reading.py and sentences.py."""

    provider = "reading-comprehension"
    model = "reading-comprehension"
    prompt_id = "reading-comprehension-v1"
    temperature = 0.0
    grounded = True

    def __init__(self, max_per_task: int) -> None:
        self.max_per_task = max_per_task
        code = b"".join(Path(str(m.__file__)).read_bytes() for m in (reading, sentences))
        self.prompt_hash = hashlib.sha256(code).hexdigest()

    async def generate(self, chunk: ParsedChunk, budget: Budget) -> Generation:
        triples = reading.mine(
            chunk.text,
            section=chunk.section,
            title=chunk.source.title,
            max_per_task=self.max_per_task,
        )
        return Generation(triples=triples)


class Prompted:
    """One request per chunk with a triples or question/answer prompt; an answer that cannot
    be read gets one repair request, then counts as rejected with its reason."""

    def __init__(
        self,
        provider: str,
        client: ChatClient,
        prompt: Prompt,
        *,
        temperature: float,
        max_tokens: int,
    ) -> None:
        self.provider = provider
        self.model = client.model
        self.client = client
        self.prompt = prompt
        self.prompt_id = prompt.id
        self.prompt_hash = prompt.hash
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.grounded = prompt.grounded
        self.task = "qa" if prompt.kind == "qa" else "instruction"
        json_mode = client.structured != "none"
        self.schema = prompt.schema if json_mode else None
        self.format = prompt.formats.get("json" if json_mode else "text", "")

    async def generate(self, chunk: ParsedChunk, budget: Budget) -> Generation:
        messages: list[Message] = [
            {"role": "system", "content": self.prompt.system},
            {
                "role": "user",
                "content": self.prompt.render(
                    "user",
                    format=self.format,
                    title=chunk.source.title or chunk.source.url,
                    section=chunk.section or "",
                    text=chunk.text,
                ),
            },
        ]
        answer = await self._ask(messages, budget)
        usage = answer.usage
        try:
            parsed = _read(answer)
            repaired = False
        except Malformed as first:
            answer = await self._ask(self._repair(messages, answer, first), budget)
            usage += answer.usage
            try:
                parsed = _read(answer)
            except Malformed as second:
                return Generation(rejected=[f"malformed_{second.reason}"], usage=usage)
            repaired = True
        triples = [Triple(i, x, o, self.task) for i, x, o in parsed.triples]
        return Generation(triples, parsed.dropped, usage, repaired)

    async def _ask(self, messages: list[Message], budget: Budget) -> Completion:
        return await self.client.complete(
            messages,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            budget=budget,
            schema=self.schema,
        )

    def _repair(
        self, messages: list[Message], answer: Completion, problem: Malformed
    ) -> list[Message]:
        if not answer.text.strip():
            return messages  # nothing to correct: ask again
        reason = "it was cut short" if answer.finish_reason == "length" else problem.reason
        return [
            *messages,
            {"role": "assistant", "content": answer.text},
            {"role": "user", "content": self.prompt.render("repair", reason=reason)},
        ]


def _read(answer: Completion) -> Parsed:
    parsed = parse_answer(answer.text)
    if answer.finish_reason == "length" and not parsed.salvaged:
        # Cut short inside a text-format answer: its last triple is cut too.
        if len(parsed.triples) < 2:
            raise Malformed("the answer was cut short", reason="truncated")
        return Parsed(parsed.triples[:-1], [*parsed.dropped, "truncated"])
    return parsed
