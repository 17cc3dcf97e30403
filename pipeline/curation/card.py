"""The dataset card: README.md beside the data, in the Hugging Face layout (YAML front matter
whose `configs` let `datasets.load_dataset(DIR, FORMAT)` find the files), saying what is in the
dataset, where it came from, under which terms, and what every filter dropped."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

import yaml

from pipeline.curation.dataset import FILTERS, Curated
from pipeline.curation.neardup import tokenize
from pipeline.messages import Pair
from pipeline.terms import DEFAULT_RULES

_TERMS = {rule.terms.id: rule.terms for rule in DEFAULT_RULES}
_CC_URL = re.compile(
    r"creativecommons\.org/(?:licenses/(?P<kind>[a-z-]+)/(?P<version>\d\.\d)"
    r"|publicdomain/zero/(?P<zero>\d\.\d))"
)
_HUB_ID = re.compile(r"cc-by(?:-nc)?(?:-sa|-nd)?-[1-4]\.0|cc0-1\.0|apache-2\.0|mit|bsd-3-clause")
MAX_ROWS = 30  # per table: the full lists are in provenance.jsonl


def render_card(
    curated: Curated,
    sha256: str,
    formats: Sequence[str],
    splits: Sequence[str],
    name: str,
    notes: Sequence[str] = (),
) -> str:
    pairs = curated.train + curated.eval
    config = curated.config
    tokenless = sum(not tokenize(config.fields.text(p)) for p in pairs)
    if tokenless:
        notes = [*notes, f"{tokenless} pairs have no ROUGE token (rouge-score keeps only "
                 "[a-z0-9] runs, so non-Latin text is invisible to it): for them only exact "
                 "duplicates are caught."]  # fmt: skip
    if not curated.eval:
        notes = [*notes, "There are no evaluation pairs (one document, a fraction of 0, or "
                 "every held-out pair contaminated)."]  # fmt: skip
    sections = [
        "---\n" + yaml.safe_dump(_front_matter(pairs, formats, splits), sort_keys=False) + "---",
        f"# {name}",
        f"Content sha256: `{sha256}`",
        f"{len(curated.train)} training pairs and {len(curated.eval)} evaluation pairs from "
        f"{len({p.doc_id for p in pairs})} documents. The split is by document: "
        f"{len(curated.eval_docs)} documents are held out (those whose salted doc_id hash "
        f"falls below {config.eval_fraction}, at least one when there are two or more) and "
        "give no training pair.",
        *(["## Notes", "\n".join(f"- {note}" for note in notes)] if notes else []),
        "## Filters",
        _table(
            ("filter", "dropped", "rule"),
            [(name, str(n), FILTERS[name]) for name, n in curated.drop_counts().items()],
        ),
        f"Pairs are compared on `{config.fields}` (near duplicates: ROUGE-L F > "
        f"{config.threshold}) and on `{config.contamination_fields}` for contamination "
        f"(ROUGE-L F >= {config.contamination_threshold}). `dropped.jsonl` lists every drop "
        "with the pair it matched.",
        "## Sources",
        _by(pairs, curated, _source_of, ("source", "licence")),
        "## Tasks",
        _by(pairs, curated, lambda p: (p.task,), ("task",)),
        "## Generators",
        _by(pairs, curated, _generator_of, ("provider", "model", "prompt", "terms")),
        "## Licences and terms",
        _licences(pairs),
        "## Files",
        "\n".join(
            [f"- `{fmt}/train.jsonl`, `{fmt}/eval.jsonl`" for fmt in formats]
            + [
                "- `provenance.jsonl`: each pair's split, document, chunk, task, generator, "
                "licence and source",
                "- `dropped.jsonl`: each dropped pair, the filter and the pair it matched",
                "- `manifest.json`: counts, hash and configuration, for programs",
                "",
                "`load_dataset(DIR, FORMAT)` reads the files through the configs above; "
                "after curating into the same directory again, pass "
                '`download_mode="force_redownload"` (`datasets` caches a directory by its name).',
            ]
        ),
    ]
    return "\n\n".join(sections) + "\n"


def hub_licence(licence: str | None) -> str | None:
    """The Hugging Face hub's id for a licence given as a name or a Creative Commons URL."""
    if licence is None:
        return None
    url = _CC_URL.search(licence.lower())
    if url:
        return f"cc0-{url['zero']}" if url["zero"] else f"cc-{url['kind']}-{url['version']}"
    name = "-".join(licence.lower().replace("cc ", "cc-").split())
    return name if _HUB_ID.fullmatch(name) else None


def _front_matter(
    pairs: list[Pair], formats: Sequence[str], splits: Sequence[str]
) -> dict[str, object]:
    given = {p.license for p in pairs}
    ids = {hub_licence(licence) for licence in given}
    restricted = {p.generator.terms for p in pairs} - {"none", None}
    if given == {None}:
        licence = "unknown"
    elif len(ids) == 1 and None not in ids and not restricted:
        licence = str(ids.pop())
    else:  # several licences, one the hub has no id for, or a generator's terms on top
        licence = "other"
    return {
        "license": licence,
        "task_categories": ["text-generation"],
        "configs": [
            {
                "config_name": fmt,
                "data_files": [
                    {"split": split, "path": f"{fmt}/{split}.jsonl"} for split in splits
                ],
                **({"default": True} if i == 0 else {}),
            }
            for i, fmt in enumerate(formats)
        ],
    }


def _source_of(pair: Pair) -> tuple[str, ...]:
    source = pair.source
    label = (source.title or source.url) if source else f"document {pair.doc_id[:12]}"
    return label, pair.license or "unknown"


def _generator_of(pair: Pair) -> tuple[str, ...]:
    g = pair.generator
    return g.provider, g.model, f"{g.prompt_id} ({g.prompt_hash[:8]})", g.terms or "unknown"


def _by(
    pairs: Iterable[Pair],
    curated: Curated,
    key: Callable[[Pair], tuple[str, ...]],
    header: tuple[str, ...],
) -> str:
    """Rows of train/eval counts per distinct key, most pairs first."""
    counts: defaultdict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    eval_ids = {p.pair_id for p in curated.eval}
    for pair in pairs:
        counts[key(pair)]["eval" if pair.pair_id in eval_ids else "train"] += 1
    rows = sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    lines = [(*k, str(c["train"]), str(c["eval"])) for k, c in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        rest = [c for _, c in rows[MAX_ROWS:]]
        lines.append(
            (f"{len(rest)} more", *[""] * (len(header) - 1),
             str(sum(c["train"] for c in rest)), str(sum(c["eval"] for c in rest)))
        )  # fmt: skip
    return _table((*header, "train", "eval"), lines)


def _licences(pairs: list[Pair]) -> str:
    lines = []
    for licence, n in sorted(Counter(p.license or "unknown" for p in pairs).items()):
        lines.append(f"- source licence {licence}: {n} pairs")
    for terms_id, n in sorted(Counter(p.generator.terms or "unknown" for p in pairs).items()):
        terms = _TERMS.get(terms_id)
        detail = f" ({terms.name}: {terms.note})" if terms and terms.note else ""
        lines.append(f"- generator terms {terms_id}: {n} pairs{detail}")
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
