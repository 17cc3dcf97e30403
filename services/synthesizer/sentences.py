"""The text of a chunk as the reading-comprehension tasks (reading.py) see it: its sentences,
which of them are clean prose, the stretches they form, and the topic its heading names."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

STOP = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    may might more most much must my no nor not of off on once only or other our ours out over own
    same she should so some such than that the their theirs them then there these they this those
    through to too under until up upon very via was we were what when where which while who whom
    why will with would you your within across among using without whether onto thus however
    yet per every either neither whose""".split()
)
# Headings that name a part of every paper say nothing about this passage.
_GENERIC = frozenset(
    """abstract introduction conclusion conclusions related work works experiment experiments
    experimental result results discussion background acknowledgement acknowledgements
    acknowledgment acknowledgments appendix reference references limitation limitations method
    methods methodology approach evaluation setup set-up setting settings main future broader
    impact impacts ethics ethical statement additional details detail dataset datasets
    hyperparameters ablation ablations proof proofs overview analysis summary preliminaries
    empirical supplementary material baselines baseline implementation further other model models
    sample samples example examples training data qualitative quantitative considerations remarks
    final tasks task metrics challenges opportunities open questions directions our the and of on
    a an in for &""".split()
)
_ABBREV = frozenset(
    """e.g. i.e. al. fig. figs. eq. eqs. sec. secs. vs. cf. resp. approx. incl. dr. mr. ms.
    prof. st. jr. viz. w.r.t. a.k.a. appx. ca. no. tab. ref. refs. ch. esp.""".split()
)
# A full stop before a space; a blank line or a bullet ends a sentence whatever precedes it.
_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)|\n[ \t]*\n|\s[•●▪◦‣∙\x95]\s")
CITATION = re.compile(r"\[\d+(?:\s*[,–-]\s*\d+)*\]|\([^()]*\b(?:19|20)\d\d[a-z]?\)")
_FIGURE = re.compile(r"\b(?:Figure|Fig\.|Figs\.|Table|Tab\.|Algorithm|Listing)\s*\d", re.I)
_URL = re.compile(r"https?:|www\.|\.com\b|\.org\b|github|@\w", re.I)
# Footnote marks glued to words ("2They", "task.1", "biases2"), words split at a line end
# ("of- Experts"), spaced punctuation, a full stop inside one sentence, and math.
_BROKEN = re.compile(
    r"\b\d+[A-Z][a-z]|[a-z]\.\d+(?:\s|$)|\b[a-z]{4,}\d\d?\b|[A-Za-z]- (?!and\b|or\b|to\b)\w"
    r"|\w [,.;:](?:\s|$)|\. \([a-z]\) |[A-Za-z]\d+ \d\b|(?::\s*|\.\s+)\(?\d+\)?\.?$"
    r"|(?<![A-Za-z.])(?!(?:al|vs|cf|etc|approx|resp|incl|viz|esp|eq|fig|sec|no)\.)"
    r"[A-Za-z]*[a-z]\. [a-z]"
    r"|[=^{}|\\<>]"
)
# A capitalised function word inside a sentence: a figure's labels or a run-in heading merged in.
_MIDCAP = re.compile(
    r"[a-z0-9,%)] (?:The|We|Our|This|These|In|It|For|To|However|Then|There|When|While|As|If"
    r"|Many|Most|Several|Some|Each|Not|No|Yes) [a-z]"
)
# Transcripts and prompts quoted in appendices: "Prompt: ...", "Assistant(to Executor): ...".
SPEAKER = re.compile(
    r"\b(?:User|Assistant|Human|AI|GPT|Prompt|Completion|Answer|Question|Response|Input|Output"
    r"|Target|Premise|Hypothesis|OPTIONS|Executor|Player[\w ]{0,10}|[A-Z]\w*Agent|UserProxy"
    r"|[\w-]+ completion|Passage|Example prompt)(?:\s?\([^()]{0,30}\))?:\s"
    r"|\b(?:INPUT|OUTPUT|TARGET|OPTIONS|ANSWER|QUESTION|PREMISE|HYPOTHESIS)\b"
)
# ... or a label opening the sentence: a colon within its first three words ("Step 1: ...").
_LABEL = re.compile(r"^(?:\S+\s){0,2}\S*:\s|" + SPEAKER.pattern)
# A sentence opening with these leans on the one before; it cannot stand alone as an answer.
LEANS = re.compile(
    r"(?:This|These|That|Those|It|Its|They|Their|Such|Here|However|Therefore|Thus|Hence|Moreover"
    r"|Furthermore|Also|Additionally|In addition|Similarly|Likewise|Consequently|Instead|Finally"
    r"|Then|Nevertheless|Nonetheless|Otherwise|Meanwhile|As a result|In contrast|By contrast"
    r"|On the other hand|In other words|That is|For example|For instance|Specifically"
    r"|In particular|Second|Secondly|Third|Thirdly|Lastly|Again|Besides|Accordingly|Yet|But|And"
    r"|Or|So)\b"
)
_ANAPHORA = re.compile(r"(?:This|These|That|Those|It|Its|They|Their|Such|Here)\b")
# More than one character outside prose punctuation means math or a broken glyph.
_ODD = re.compile(r"[^\w\s.,;:!?'\"()\[\]%&/+–—‘’“”-]")
_WORDY = re.compile(r"[A-Za-z][\w'’.-]*")


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    text: str
    clean: bool  # fit to be an output: a whole sentence of prose


@dataclass(frozen=True)
class Doc:
    text: str
    sents: list[Sentence]
    topic: str | None  # what the passage is about, in words fit for an instruction
    freq: Counter[str]

    def joined(self, i: int, j: int) -> bool:
        """Sentences i..j follow each other with only spaces between (no dropped text)."""
        return all(
            not self.text[a.end : b.start].strip() and "\n\n" not in self.text[a.end : b.start]
            for a, b in zip(self.sents[i:j], self.sents[i + 1 : j + 1], strict=False)
        )

    def span(self, i: int, j: int) -> str:
        return self.text[self.sents[i].start : self.sents[j].end]


def parse(text: str, *, section: str | None, title: str | None) -> Doc:
    """The chunk split into sentences, with its topic and word counts."""
    return Doc(text, sentences(text), _topic(section, title, text), _frequencies(text))


def sentences(text: str) -> list[Sentence]:
    """Split where a full stop meets a capital and the word before it is no abbreviation
    (e.g., et al., Fig.); decimals and arXiv ids never meet a space. Blank lines and bullets
    split too."""
    sents: list[Sentence] = []
    start = 0
    for m in _END.finditer(text):
        stop = m.group()[0] in ".!?"
        if stop:
            after = text[m.end() :].lstrip()[:1]
            if not after or not (after.isupper() or after in '"“') or _abbreviation(text, m):
                continue
        _add(sents, text, start, m.end() if stop else m.start())
        start = m.end()
    _add(sents, text, start, len(text))
    return sents


def _abbreviation(text: str, m: re.Match[str]) -> bool:
    word = text[: m.start() + 1].rsplit(maxsplit=1)[-1].lstrip("([\"'“").lower()
    return word in _ABBREV


def _add(sents: list[Sentence], text: str, start: int, end: int) -> None:
    piece = text[start:end].strip()
    if not piece:
        return
    start = text.index(piece, start)
    end = start + len(piece)
    start += _run_in_heading(piece)
    s = text[start:end]
    clean = bool(re.match(r"[\"“]?[A-Z]", s) and re.search(r"[.!?][\"”’)]?$", s))
    clean = clean and not _MIDCAP.search(s) and not _LABEL.search(s) and not _FIGURE.search(piece)
    # Neither a paragraph heading nor a numbered one ("B.4 What is more important: ...?").
    clean = clean and not _title_case(s) and not re.match(r"[A-Z\d]+(?:\.\d+)+\.?\s", s)
    # The words after "Table 4." are that table's caption, not running text.
    caption = bool(sents) and re.search(r"\b(?:Figure|Fig\.|Table|Tab\.)\s*\d+\.$", sents[-1].text)
    sents.append(Sentence(start, end, s, clean and not caption and is_prose(s, 5, 80)))


_OPENERS = frozenset(
    "The We Our In This These A An There When While As To For Here Many Most Several Some".split()
)


def _title_case(s: str) -> bool:
    """A paragraph heading ("A Generalization of Full Fine-tuning."), not a sentence."""
    words = [w for w in re.findall(r"[A-Za-z][\w'’-]*", s) if w.lower() not in STOP]
    return len(s.split()) <= 12 and all(w[0].isupper() for w in words)


def _run_in_heading(s: str) -> int:
    """Offset past a run-in paragraph heading the extractor glued to the sentence:
    "Longform The LongForm dataset is ...", "k-bit Quantization Quantization is ..."."""
    words = list(re.finditer(r"\S+", s))[:9]
    for k, w in enumerate(words[1:], 1):
        said = w.group().lower() in (words[0].group().lower(), words[k - 1].group().lower())
        if said and w.group()[0].isupper():  # the heading's word again, opening the sentence
            return w.start()
        heading = all(not v.group()[0].islower() for v in words[:k])
        if heading and w.group() in _OPENERS:
            return w.start()
    return 0


def is_prose(s: str, least: int, most: int) -> bool:
    """Running English of least..most words: no caption, URL, glued footnote, unbalanced
    bracket, stray symbol or control character; mostly words, some of them function words."""
    if not least <= len(s.split()) <= most:
        return False
    if _FIGURE.search(s) or _URL.search(s) or _BROKEN.search(s) or len(_ODD.findall(s)) > 1:
        return False
    if any(unicodedata.category(c) in ("Cc", "Co", "Cn", "Mn") for c in s if c not in "\n\t"):
        return False
    pairs = (("(", ")"), ("[", "]"), ("“", "”"))
    if any(s.count(a) != s.count(b) for a, b in pairs) or s.count('"') % 2:
        return False
    bare = CITATION.sub("", s)
    if len(bare) < 0.6 * len(s) or len(CITATION.findall(s)) > 3:
        return False  # mostly references
    words = [w.strip(".,;:()[]\"'“”’") for w in bare.split()]
    wordy = sum(bool(_WORDY.fullmatch(w)) for w in words)
    stops = sum(w.lower() in STOP for w in words)
    return wordy >= 0.85 * len(words) and stops >= 0.1 * len(words)


def clean_runs(doc: Doc, least: int) -> list[range]:
    """Maximal stretches of clean, adjacent sentences, longest first."""
    runs: list[range] = []
    i = 0
    while i < len(doc.sents):
        j = i
        while doc.sents[i].clean and j + 1 < len(doc.sents) and doc.sents[j + 1].clean:
            if not doc.joined(j, j + 1):
                break
            j += 1
        if doc.sents[i].clean and j - i + 1 >= least:
            runs.append(range(i, j + 1))
        i = j + 1
    return sorted(runs, key=lambda r: (-len(r), r.start))


def self_contained(doc: Doc, i: int) -> bool:
    """Sentence i names what it speaks of: it opens with no pronoun pointing back."""
    return not _ANAPHORA.match(doc.sents[i].text)


def premise_start(doc: Doc, j: int) -> int | None:
    """Where a self-contained premise ending with sentence j starts, or None."""
    if not doc.sents[j].clean or not doc.joined(j, j + 1):
        return None
    if self_contained(doc, j):
        return j
    if j > 0 and doc.sents[j - 1].clean and doc.joined(j - 1, j) and self_contained(doc, j - 1):
        return j - 1
    return None


_NAMES = re.compile(
    r"\b[A-Z][\w-]+(?: (?:and|&) [A-Z][\w-]+| et al\.)?(?: \((?:19|20)\d\d[a-z]?\))"
    r"|\b[A-Z][\w-]+ et al\."
)
_NOT_KEYWORDS = frozenset("figure table section appendix eq equation et al we".split())


def keywords(doc: Doc, sentence: str) -> list[tuple[str, int]]:
    """Two to four of the sentence's domain words with their scores: acronyms, CamelCase and
    hyphenated terms, capitalised names inside the sentence, the chunk's repeated content words."""
    bare = CITATION.sub(" ", _NAMES.sub(" ", sentence))
    found: dict[str, tuple[str, int, int]] = {}
    for k, m in enumerate(re.finditer(r"[A-Za-z][\w'’-]*[A-Za-z0-9]", bare)):
        w = re.sub(r"['’]s$", "", m.group())
        low = w.lower()
        if low in STOP or low in _NOT_KEYWORDS or low.rstrip("s") in found or "_" in w:
            continue
        if any(c.isupper() or c.isdigit() for c in w[1:]):
            score = 3
        elif "-" in w or (w[0].isupper() and k > 0):
            score = 2
        elif len(w) >= 5 and doc.freq[low] >= 2:
            score = 1 + (doc.freq[low] >= 3)
        else:
            continue
        found[low.rstrip("s")] = (w, score, k)  # one of "expert" and "experts"
    best = sorted(found.values(), key=lambda f: (-f[1], f[2]))
    keep = 4 if len(sentence.split()) > 25 else 3
    return [(w, score) for w, score, _ in best[:keep]]


def _frequencies(text: str) -> Counter[str]:
    return Counter(w.lower() for w in re.findall(r"[A-Za-z][\w-]+", text))


# --- topic --------------------------------------------------------------------------------------

_NUMBERING = re.compile(r"\s*(?:(?:[A-Z]|\d+)(?:\.\d+)*\.?\s+(?=[A-Z])|\d+(?:\.\d+)*\.?\s+)")


def bare_heading(section: str | None) -> str | None:
    """The heading without its number ("3.2 Low-Rank Adaptation" -> "Low-Rank Adaptation"), a
    verbatim span of it; None for a heading any paper has, or one that is no heading at all."""
    if not section:
        return None
    m = _NUMBERING.match(section)
    head = section[m.end() if m else 0 :].strip()
    words = [w.lower().strip(":,.?()") for w in head.split()]
    if not 2 <= len(words) <= 12 or all(w in _GENERIC for w in words):
        return None
    if CITATION.search(head) or "et al" in head or len(re.findall(r"[A-Za-z]", head)) < 6:
        return None
    return head


def covers(head: str, passage: str, share: float) -> bool:
    """The passage names at least `share` of what the heading names (and something): a title
    one could guess from it, or a sentence on the heading's topic."""
    low = passage.lower()
    words = [w for w in re.findall(r"[a-z][\w-]+", head.lower()) if w not in STOP | _GENERIC]
    named = sum(w[:5] in low for w in words)
    return named > 0 and named >= share * len(words)


def _topic(section: str | None, title: str | None, text: str) -> str | None:
    head = bare_heading(section)
    if head and not head.endswith("?"):
        shouting = head.isupper()
        return re.sub(r"[A-Za-z][\w'’-]*", lambda m: recase(m.group(), text, shouting), head)
    return title.strip() if title and title.strip() else None


def recase(word: str, text: str, shouting: bool) -> str:
    """A heading's word as the text writes it inside a sentence (LORA -> LoRA, Tiling ->
    tiling, Transformer stays), for an instruction that names the section's topic."""
    if not word.replace("-", "").isalpha() or not (shouting or word[1:].islower()):
        return word  # a name with digits (Avg-7), an acronym, CamelCase in a quiet heading
    forms = re.findall(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text, re.I)
    camel = [f for f in forms if not f.isupper() and not f[1:].islower()]
    lower = [f for f in forms if f.islower()]
    inside = re.findall(rf"(?<=[a-z,] ){re.escape(word.capitalize())}(?![\w-])", text)
    if shouting and camel:
        return str(Counter(camel).most_common(1)[0][0])
    if lower or not (inside or (shouting and word in forms)):
        return word.lower()
    return word.capitalize() if inside else word
