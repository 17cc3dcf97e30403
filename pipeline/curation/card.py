"""The dataset card: README.md beside the data, in the Hugging Face layout (YAML front matter
whose `configs` let `datasets.load_dataset(DIR, FORMAT)` find the files), saying what is in the
dataset, where it came from, under which terms, and what every filter dropped."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

import yaml

from pipeline.curation.dataset import FILTERS, Curated
from pipeline.messages import Pair
from pipeline.terms import DEFAULT_RULES

_TERMS = {rule.terms.id: rule.terms for rule in DEFAULT_RULES}
MAX_ROWS = 30  # per table: the full lists are in provenance.jsonl


def render_card(curated: Curated, sha256: str, formats: Sequence[str], name: str) -> str:
    pairs = curated.train + curated.eval
    config = curated.config
    sections = [
        "---\n" + yaml.safe_dump(_front_matter(pairs, formats), sort_keys=False) + "---",
        f"# {name}",
        f"Content sha256: `{sha256}`",
        f"{len(curated.train)} training pairs and {len(curated.eval)} evaluation pairs from "
        f"{len({p.doc_id for p in pairs})} documents. The split is by document: the "
        f"{len(curated.eval_docs)} evaluation documents (a hash of the doc_id below "
        f"{config.eval_fraction}) give no training pair.",
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


def _front_matter(pairs: list[Pair], formats: Sequence[str]) -> dict[str, object]:
    licences = {p.license for p in pairs}
    single = next(iter(licences)) if len(licences) == 1 else None
    return {
        # The hub's licence ids are lower-case and hyphenated ("cc-by-nc-4.0").
        "license": "-".join(single.lower().split()) if single and "//" not in single else "other",
        "task_categories": ["text-generation"],
        "configs": [
            {
                "config_name": fmt,
                "data_files": [
                    {"split": split, "path": f"{fmt}/{split}.jsonl"} for split in ("train", "eval")
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
