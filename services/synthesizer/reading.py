"""LLM-free instruction triples mined from a paper's own text by reading-comprehension patterns,
after Cheng et al. 2023, "Adapting Large Language Models via Reading Comprehension" (AdaptLLM).

Every output is a verbatim span of the chunk (or of its heading, or of the paper's title), so a
triple is grounded by construction; the work here is refusing spans that are not clean prose.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from services.synthesizer.core import Triple
from services.synthesizer.sentences import (
    CITATION,
    LEANS,
    SPEAKER,
    STOP,
    Doc,
    bare_heading,
    clean_runs,
    covers,
    is_prose,
    keywords,
    parse,
    premise_start,
    recase,
    self_contained,
)

TASKS: tuple[str, ...] = (
    "title",
    "summary",
    "word_to_text",
    "definition",
    "acronym",
    "completion",
    "nli",
    "causal",
    "paraphrase",
    "example",
    "detail",
)

# Small words an acronym may skip or take a letter from (MoE: Mixture of Experts).
_SMALL = frozenset("a an and for from in of on the to via with by".split())
# Sections of thanks, quoted model samples and prompts: text, but not the paper's knowledge.
_SKIPPED = re.compile(
    r"acknowledg|contributions|model samples|generations from|example outputs|outputs from"
    r"|illustrative|qualitative examples|system message",
    re.I,
)


# Several phrasings per task, one chosen by a stable hash of the source span, so the dataset is
# not monotonous yet the same chunk always gives the same triples. {about}, {on} and {ctx} name
# the section's topic when it has one and vanish when it does not.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "title": (
        "Suggest a title for this section of a paper.",
        "What would be a fitting heading for the following passage from a research paper?",
        "Write a short section heading for this passage.",
    ),
    "paper_title": (
        "What is a good title for a paper with this abstract?",
        "Suggest a title for the paper this abstract comes from.",
        "Write a title for a research paper with the following abstract.",
    ),
    "summary": (
        "Summarise the main point of this passage in one sentence.",
        "State the main point of the following passage{about} in one sentence.",
        "In one sentence, what is this passage mainly about?",
    ),
    "word_to_text": (
        "Write a sentence{about} that uses these words: {words}.",
        "Use the following terms in one sentence{about}: {words}.",
        "Compose one sentence from a research paper{on} containing these words: {words}.",
    ),
    "definition": (
        "What {be} {x}?",
        "Define {x}{ctx}.",
        "Explain what {x} {be}{ctx}.",
    ),
    "acronym": (
        "What {does} {x} stand for?",
        "Expand the abbreviation {x}{ctx}.",
        "What is the full form of {x}{ctx}?",
    ),
    "completion": (
        "Complete the following passage from a paper{on}.",
        "Continue this text from a research paper{on} with the next few sentences.",
        "How does this passage from a paper{on} go on? Write the next sentences.",
    ),
    "conclude": (
        "What conclusion does the text draw from the following statement?",
        "According to the text, what follows from this?",
        "What does the text infer from the following?",
    ),
    "contrast": (
        "What qualification or contrast follows this statement in the text?",
        "What caveat or contrast does the text add to the following statement?",
        "The text goes on to qualify the following statement. What does it say?",
    ),
    "rephrase": (
        "Restate the following in other words.",
        "Rephrase this statement the way the text does.",
        "Say the following more plainly, in other words.",
    ),
    "example": (
        "Give an example that illustrates the following statement.",
        "What example does the text give for this?",
        "Illustrate the following claim with an example from the text.",
    ),
    "detail": (
        "What specific detail does the text give about the following statement?",
        "Make the following statement more specific, as the text does.",
        "Elaborate on the following statement with the detail the text gives.",
    ),
    "why": (
        "Why is this so, according to the text?",
        "What reason does the text give for the following?",
        "Explain the cause of the following, according to the text.",
    ),
    "effect": (
        "What does the following lead to, according to the text?",
        "What is the effect of the following?",
        "What outcome does the text attribute to the following?",
    ),
}

# Sentence openers that tie a sentence to the one before: (task, template, pattern).
_LINKS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    (
        "nli",
        "conclude",
        re.compile(
            r"(?:(?:Therefore|Thus|Hence|Consequently|As a result|Accordingly|As a consequence)"
            r",? |(?:This means|It follows) that )"
        ),
    ),
    (
        "nli",
        "contrast",
        re.compile(
            r"(?:However|In contrast|By contrast|Nevertheless|Nonetheless|On the other hand"
            r"|Conversely), "
        ),
    ),
    ("paraphrase", "rephrase", re.compile(r"(?:In other words|That is|Put differently), ")),
    ("example", "example", re.compile(r"(?:For example|For instance|As an example), ")),
    ("detail", "detail", re.compile(r"(?:Specifically|In particular|More specifically), ")),
)


def mine(
    text: str, *, section: str | None = None, title: str | None = None, max_per_task: int = 2
) -> list[Triple]:
    """The triples the patterns find in one chunk, at most `max_per_task` of each task, in the
    order of TASKS; the same arguments always give the same list, [] when nothing is clean."""
    if max_per_task <= 0 or not text.strip() or _SKIPPED.search(section or ""):
        return []
    if len(SPEAKER.findall(text)) >= 3:
        return []  # a transcript or a prompt template: the model's words, not the paper's
    doc = parse(text, section=section, title=title)
    found = [
        *_titles(doc, section, title),
        *_summaries(doc, section),
        *_word_to_text(doc),
        *_definitions(doc),
        *_acronyms(doc),
        *_completions(doc),
        *_links(doc),
        *_causes(doc),
        *_restatements(doc),
    ]
    out: list[Triple] = []
    for task in TASKS:
        seen: set[str] = set()
        for triple in found:
            if triple.task == task and triple.output not in seen and len(seen) < max_per_task:
                seen.add(triple.output)
                out.append(triple)
    return out


# --- phrasing -----------------------------------------------------------------------------------


def _say(doc: Doc, kind: str, key: str, **fields: str) -> str:
    digest = hashlib.sha256(f"{kind}\0{key}".encode()).digest()
    options = _TEMPLATES[kind]
    template = options[int.from_bytes(digest[:4], "big") % len(options)]
    t = doc.topic
    said = template.format(
        about=f" about {t}" if t else "",
        on=f" on {t}" if t else "",
        ctx=f" in the context of {t}" if t else "",
        **fields,
    )
    return " ".join(CITATION.sub("", said).split())


# --- tasks ----------------------------------------------------------------------------------------

# What the authors say they do, the main point wherever it stands in the passage.
_PROPOSE = re.compile(r"In this (?:paper|work|survey|article|section),? we \w+|We propose\b")


def _titles(doc: Doc, section: str | None, title: str | None) -> Iterator[Triple]:
    runs = clean_runs(doc, 3)
    if not runs or len(doc.span(runs[0][0], runs[0][-1]).split()) < 50:
        return
    passage = doc.span(runs[0][0], runs[0][-1])
    head = bare_heading(section)
    if head and covers(head, passage, 0.5):
        yield Triple(_say(doc, "title", passage), passage, head, "title")
    abstract = section is not None and section.strip().lower() == "abstract"
    if abstract and title and 2 <= len(title.split()) <= 30:
        yield Triple(_say(doc, "paper_title", passage), passage, title.strip(), "title")


def _summaries(doc: Doc, section: str | None) -> Iterator[Triple]:
    """The sentence stating what the authors propose, or a chunk's opening sentence when it
    names the section's topic; the passage it opens is the input."""
    head = bare_heading(section)
    for run in clean_runs(doc, 3):
        passage = doc.span(run[0], run[-1])
        for i in run:
            s = doc.sents[i].text
            n = len(s.split())
            proposes = _PROPOSE.match(s) is not None and n <= 50
            opens = i == run[0] == 0 and not doc.text[: doc.sents[0].start].strip()
            topical = opens and head is not None and covers(head, s, 0.0) and 8 <= n <= 45
            if proposes or (topical and not LEANS.match(s) and not CITATION.search(s)):
                yield Triple(_say(doc, "summary", s), passage, s, "summary")


def _word_to_text(doc: Doc) -> Iterator[Triple]:
    scored: list[tuple[int, int, list[str]]] = []
    for i, s in enumerate(doc.sents):
        if s.clean and 10 <= len(s.text.split()) <= 45 and not LEANS.match(s.text):
            found = keywords(doc, s.text)
            if len(found) >= 2 and sum(score for _, score in found) >= 4:
                scored.append((-sum(score for _, score in found), i, [w for w, _ in found]))
    for _, i, words in sorted(scored):
        sentence = doc.sents[i].text
        # Listed in a hashed order, not the sentence's, so the task is more than copying.
        listed = sorted(words, key=lambda w: hashlib.sha256(f"{w}\0{sentence}".encode()).digest())
        instruction = _say(doc, "word_to_text", sentence, words=", ".join(listed))
        yield Triple(instruction, "", sentence, "word_to_text")


_DEFINES = re.compile(
    r"(?P<x>[A-Z][\w’'/-]*(?: [\w’'/-]+){0,5}?(?: \([A-Za-z][\w-]*\))?)"
    r" (?P<v>is|are|refers to|refer to|denotes|is defined as|are defined as) (?P<rest>\S.*)$"
)
_COPULA_REST = re.compile(r"(?:a|an|the|one of the) ")
_NOT_DEFINING = re.compile(
    r"(?:the (?:same|first|best|most|only|case|key|main|primary|number|result|reason|goal"
    r"|following|\w+est)"
    r"|an? (?:bit|lot|result|function|part|key|major|good|great|big|example|important|few|order))\b"
)
_NOT_TERM = frozenset(
    """this that these those it its there here which what one each our their his her such another
    other all both some many most we they he she results result goal idea key reason problem
    difference main aim purpose intuition motivation contribution advantage benefit drawback
    challenge question answer hope assumption hypothesis observation finding insight solution
    outcome effect case point focus issue consequence exception example first second latter
    former rest remainder only same performance x-axis y-axis axis metric score accuracy value
    values number shown reported used following team obstacle since although though while when
    whether if unless once because as after before given unlike like""".split()
)
_LINKING = frozenset("of for in with to".split())


def _definitions(doc: Doc) -> Iterator[Triple]:
    """ "X is a/an/the ...", "X refers to ...": "What is X?" answered by the sentence."""
    for s in doc.sents:
        m = _DEFINES.match(s.text) if s.clean and len(s.text.split()) <= 50 else None
        if m is None:
            continue
        copula = m["v"] in ("is", "are")
        if copula and (not _COPULA_REST.match(m["rest"]) or _NOT_DEFINING.match(m["rest"])):
            continue
        term = _term(doc, m["x"])
        if term is not None:
            be = "are" if m["v"] in ("are", "refer to", "are defined as") else "is"
            yield Triple(_say(doc, "definition", s.text, x=term, be=be), "", s.text, "definition")


def _term(doc: Doc, x: str) -> str | None:
    """A short noun phrase fit to ask about, as it would read inside a question; else None."""
    words = x.split()
    first = words[0].lower()
    core = words[1:] if first in ("the", "a", "an") else words
    plain = [w.lower() for w in core if not w.startswith("(")]  # without its "(LoRA)"
    if not plain or first in _NOT_TERM or plain[-1] in _NOT_TERM | _LINKING:
        return None
    if any(w in STOP - _LINKING or w in _NOT_TERM for w in plain) or len(x) < 3:
        return None
    if plain[0].endswith("ing") and len(plain) > 1:
        return None  # "Improving base LMs is ...": a claim, not a term
    named = any(any(c.isupper() or c.isdigit() for c in w[1:]) or "-" in w for w in core)
    if not named and max(doc.freq[w] for w in plain) < 2:
        return None  # a common noun the chunk names once: often a quoted model sample
    if re.search(r"[A-Za-z]\d$", x) and re.search(rf"\b{re.escape(x[:-1])}\b", doc.text):
        return None  # a footnote mark glued on: "AutoGen2"
    return recase(words[0], doc.text, False) + x[len(words[0]) :]


_PAREN_SHORT = re.compile(r"\((?P<a>[A-Z][A-Za-z-]{1,11})\)")
_PAREN_LONG = re.compile(
    r"(?<![\w-])(?P<a>[A-Z][A-Za-z-]{1,11}) \((?P<e>[A-Za-z][A-Za-z -]{3,80})\)"
)
_EXPANSION_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def _acronyms(doc: Doc) -> Iterator[Triple]:
    """ "Long Short-Term Memory (LSTM)" and "LSTM (Long Short-Term Memory)", when the initials
    really spell the acronym; "(Hu et al., 2021)" and "(GPT-3)" are no acronyms."""
    found: list[tuple[int, str, str]] = []
    for m in _PAREN_SHORT.finditer(doc.text):
        before = re.split(r"[^\sA-Za-z-]", doc.text[max(0, m.start() - 160) : m.start()])[-1]
        words = list(re.finditer(r"\S+", before))
        offset = m.start() - len(before)
        letters = _letters(m["a"])
        if letters is None:
            continue
        for n in range(1, min(len(words), len(letters) + 3) + 1):
            tail = [w.group() for w in words[-n:]]
            if all(_EXPANSION_WORD.fullmatch(w) for w in tail) and _spells(letters, _parts(tail)):
                expansion = doc.text[offset + words[-n].start() : m.start()].rstrip()
                found.append((m.start(), m["a"], expansion))
                break
    for m in _PAREN_LONG.finditer(doc.text):
        letters, tail = _letters(m["a"]), m["e"].split()
        if letters and all(_EXPANSION_WORD.fullmatch(w) for w in tail):
            if _spells(letters, _parts(tail)):
                found.append((m.start(), m["a"], m["e"]))
    seen: set[str] = set()
    for _, acronym, expansion in sorted(found):
        if acronym not in seen and expansion.lower() != acronym.lower():
            seen.add(acronym)
            does = "do" if acronym.endswith("s") else "does"
            instruction = _say(doc, "acronym", acronym, x=acronym, does=does)
            yield Triple(instruction, "", expansion, "acronym")


def _letters(acronym: str) -> str | None:
    """The letters to spell ("LLMs" -> "LLM"), or None when this is no acronym."""
    letters = acronym.replace("-", "")
    if letters.endswith("s") and sum(c.isupper() for c in letters[:-1]) >= 2:
        letters = letters[:-1]
    if not letters.isalpha() or sum(c.isupper() for c in letters) < 2:
        return None
    return letters


def _parts(words: list[str]) -> list[str]:
    return [p for w in words for p in w.split("-")]


def _spells(acronym: str, words: list[str]) -> bool:
    """Whether the acronym is the words' initials in order, every word used: a small word may
    be skipped, and a word may give a few more letters (Lo-w Rank Adaptation, FlashAttention)."""
    if not words:
        return not acronym
    word, rest = words[0], words[1:]
    if word.lower() in _SMALL and _spells(acronym, rest):
        return True
    if not acronym or acronym[0].lower() != word[0].lower():
        return False
    return any(
        _inside(acronym[1:j], word[1:]) and _spells(acronym[j:], rest)
        for j in range(1, min(len(acronym), 3) + 1)
    )


def _inside(extra: str, word: str) -> bool:
    """The acronym's extra letters appear in order in the word: its lowercase ones anywhere
    (LoRA's o), its capitals only as the word's own capitals (FlashAttention's A)."""
    rest = iter(word)
    return all(
        any(c.lower() == ch.lower() and (ch.islower() or c.isupper()) for c in rest) for ch in extra
    )


def _completions(doc: Doc) -> Iterator[Triple]:
    """The first half of a stretch of clean prose in, the next sentences (at most three and
    90 words) out; long stretches give one example per eight sentences."""
    for run in sorted(clean_runs(doc, 4), key=lambda r: r.start):
        for at in range(run.start, run.stop - 3, 8):
            stretch = range(at, min(at + 8, run.stop))
            cut = stretch.start + max(2, len(stretch) // 2)
            starts = range(stretch.start, cut - 1)
            first = next((i for i in starts if not LEANS.match(doc.sents[i].text)), None)
            end = min(cut + 3, stretch.stop)
            while end > cut + 1 and len(doc.span(cut, end - 1).split()) > 90:
                end -= 1
            if first is None or len(doc.span(cut, end - 1).split()) > 90:
                continue
            passage, rest = doc.span(first, cut - 1), doc.span(cut, end - 1)
            yield Triple(_say(doc, "completion", passage), passage, rest, "completion")


def _links(doc: Doc) -> Iterator[Triple]:
    """A sentence opened by "Therefore", "However", "In other words", "For example"... answers
    the sentence before it (two, when that one leans on its own predecessor)."""
    for i, s in enumerate(doc.sents[1:], 1):
        link = next((k for k in _LINKS if k[2].match(s.text)), None) if s.clean else None
        start = premise_start(doc, i - 1) if link else None
        if link is not None and start is not None:
            task, kind, _ = link
            premise = doc.span(start, i - 1)
            yield Triple(_say(doc, kind, s.text), premise, s.text, task)


_CAUSE_AFTER = re.compile(
    r"(?:,? (?=because\b)|,? (?=(?:is|are|was|were) due to\b)|, (?=due to\b)|, (?=since\b(?! \d)))"
)
_CAUSE_FIRST = re.compile(r"(?:Because|Since|Due to) (?!\d)[^,;:()]+, ")
_LEADS = re.compile(r" (?:leads to|led to) ")
# Words a clause cannot end on and still say something whole ("... does not", "... which can").
_DANGLING = frozenset(
    "not can could may might will would which that to also and or the a has have had often".split()
)
_SUBJECTS = frozenset(
    "we it they this these the a an our its their each all there such one most many some".split()
)


def _causes(doc: Doc) -> Iterator[Triple]:
    """ "Y because X" / "Since X, Y": why Y? -> the cause span; "X leads to Y": X -> Y."""
    for i, s in enumerate(doc.sents):
        if not s.clean:
            continue
        if m := _CAUSE_AFTER.search(s.text):
            why, cause = _clause(doc, i, m.start()), s.text[m.end() :]
            if why is not None and is_prose(cause, 5, 40):
                yield Triple(_say(doc, "why", s.text), why, cause, "causal")
        elif m := _CAUSE_FIRST.match(s.text):
            cause, effect = s.text[: m.end() - 2], s.text[m.end() :]
            subject = effect[:1].isupper() or effect.split(" ", 1)[0] in _SUBJECTS
            if subject and is_prose(cause, 5, 30) and is_prose(effect, 5, 50):
                yield Triple(_say(doc, "why", s.text), effect, cause, "causal")
        elif m := _LEADS.search(s.text):
            what, effect = _clause(doc, i, m.start()), s.text[m.end() :]
            if what is not None and "," not in what and is_prose(effect, 3, 40):
                yield Triple(_say(doc, "effect", s.text), what, effect, "causal")


def _clause(doc: Doc, i: int, end: int) -> str | None:
    """Sentence i up to `end` when that is one whole clause, with the sentence before when this
    one leans on it; None otherwise."""
    s = doc.sents[i]
    clause = s.text[:end]
    last = clause.split()[-1] if clause.split() else ""
    if not is_prose(clause, 4, 40) or ";" in clause or last.endswith((",", "ly")):
        return None
    if last.lower() in _DANGLING:
        return None
    if self_contained(doc, i):
        return clause
    start = premise_start(doc, i - 1) if i > 0 else None
    return None if start is None else doc.text[doc.sents[start].start : s.start + end]


_RESTATE = re.compile(r", (?:i\.e\.,?|that is,|in other words,) ")


_ENUMERATION = re.compile(r"\((?:i|ii|iii|iv|\d|[a-c])\)")
_VERB = re.compile(r"\b(?:is|are|was|were|has|have|had|can|could|does|do|did|will|would|means?)\b")


def _whole_clause(span: str) -> bool:
    """A restatement that is a clause of its own, not a gloss of the last noun ("i.e., a
    special module that ...", "i.e., ArXiv and Books3")."""
    first = span.split()[0] if span.split() else ""
    return first in ("we", "they", "it", "this", "these", "there") or (
        first in _SUBJECTS and _VERB.search(span) is not None
    )


def _restatements(doc: Doc) -> Iterator[Triple]:
    """ "X, i.e., Y." and "X, that is, Y.": restate X -> Y, when Y ends the sentence."""
    for s in doc.sents:
        m = _RESTATE.search(s.text) if s.clean and not LEANS.match(s.text) else None
        restated = s.text[m.end() :] if m else ""
        if m and _whole_clause(restated) and not _ENUMERATION.search(s.text):
            if not is_prose(s.text[: m.start()], 5, 50) or not is_prose(restated, 6, 40):
                continue
            yield Triple(_say(doc, "rephrase", s.text), s.text[: m.start()], restated, "paraphrase")
