"""Pure pieces of the synthesizer: the triple every generator yields, and the quality filters
that decide which triples become pairs (duplicates, length, grounding in the source chunk)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pipeline.messages import GeneratorInfo, Pair, ParsedChunk, pair_id_of


@dataclass(frozen=True)
class Triple:
    """One instruction/input/output example and the kind of task it is ("qa", "completion"...)."""

    instruction: str
    input: str
    output: str
    task: str

    def pair(self, chunk: ParsedChunk, generator: GeneratorInfo) -> Pair:
        """The pair this triple makes from `chunk`, with the chunk's provenance."""
        return Pair(
            pair_id=pair_id_of(self.instruction, self.input, self.output),
            chunk_id=chunk.chunk_id,
            doc_id=chunk.doc_id,
            instruction=self.instruction,
            input=self.input,
            output=self.output,
            task=self.task,
            generator=generator,
            license=chunk.source.license,
            run_id=chunk.run_id,
            source=chunk.source,
        )


@dataclass(frozen=True)
class Limits:
    """Length bounds, in words: outside them a triple is dropped (`too_short`, `too_long`)."""

    instruction_min: int = 3
    instruction_max: int = 150
    output_min: int = 1
    output_max: int = 600
    input_max: int = 600


def length_problem(triple: Triple, limits: Limits) -> str | None:
    """Why a triple's length is out of bounds, or None. (Self-Instruct keeps instructions of
    more than 3 and at most 150 words; outputs are bounded so one cannot fill a sequence.)"""
    instruction, given, output = (
        len(t.split()) for t in (triple.instruction, triple.input, triple.output)
    )
    if instruction < limits.instruction_min or output < limits.output_min:
        return "too_short"
    if (
        instruction > limits.instruction_max
        or output > limits.output_max
        or given > limits.input_max
    ):
        return "too_long"
    return None


_WORD = re.compile(r"[^\W_]+")
#: Words that carry no claim: a grounded output is judged on the others.
_STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from as is are was were be
    been being it its this that these those there their they them he she we you i our your his
    her not no nor so than too very can could may might must shall should will would do does
    did done has have had having which who whom whose what when where why how all any both each
    few more most other some such only own same also just into over under about between through
    during before after above below up down out off again further once here one two""".split()
)


def content_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [w for w in _WORD.findall(folded) if w not in _STOPWORDS]


def grounding(output: str, source: str) -> float:
    """The share of the output's content words that occur in the source: 1.0 for a verbatim
    span, low for a claim the source never makes. An output with no content word (a bare
    "Yes") has nothing the source could support, and scores 0."""
    words = content_words(output)
    if not words:
        return 0.0
    vocabulary = set(content_words(source))
    return sum(w in vocabulary for w in words) / len(words)


class Quality:
    """The filters between a generator and the pairs topic, in order: length bounds, then
    grounding in the source (for grounded generators). A triple repeated within a chunk is
    published once (the handler's job); one repeated across chunks is published with each,
    and the curation drops the copies in an order independent of delivery. Remembering the
    ids already published here would keep whichever chunk came first: another dataset for
    each delivery order, replica count or restart."""

    def __init__(self, limits: Limits, grounding_min: float) -> None:
        self.limits = limits
        self.grounding_min = grounding_min

    def problem(self, triple: Triple, source: str | None) -> str | None:
        """Why the triple is dropped, or None to keep it. `source` None: not grounded."""
        if reason := length_problem(triple, self.limits):
            return reason
        if (
            source is not None
            and self.grounding_min > 0
            and grounding(triple.output, source) < self.grounding_min
        ):
            return "ungrounded"
        return None
