"""Model terms: under which licence a generator's outputs come, and which base models they may
train. The synthesizer records the terms on every pair; the trainer checks them against its
base model and warns or refuses. The table is configurable (a YAML file of the same shape)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Terms:
    id: str
    name: str
    url: str
    #: Globs over the lower-cased base-model name or path that outputs may train ("*": any).
    may_train: tuple[str, ...] = ("*",)
    note: str = ""


@dataclass(frozen=True)
class Rule:
    """Generator models matching any of `models` (globs, lower-cased) come under `terms`."""

    models: tuple[str, ...]
    terms: Terms


LLAMA3 = Terms(
    "llama3",
    "Meta Llama 3 Community License",
    "https://llama.meta.com/llama3/license/",
    may_train=("*llama*",),
    note="outputs may not be used to improve any large language model other than Llama 3 "
    "or its derivatives (section 1.b.v)",
)
LLAMA31 = Terms(
    "llama3.1+",
    "Llama 3.1 and later Community Licenses",
    "https://www.llama.com/llama3_1/license/",
    note="a model trained on outputs and distributed must have a name beginning with 'Llama'",
)
OPENAI = Terms(
    "openai",
    "OpenAI Terms of Use",
    "https://openai.com/policies/terms-of-use/",
    note="outputs may not be used to develop models that compete with OpenAI",
)
NO_MODEL = Terms("none", "no model: mined from the documents themselves", "")

#: First match wins, so the specific come before the general.
DEFAULT_RULES = (
    Rule(("reading-comprehension",), NO_MODEL),
    Rule(("*llama3-*", "*llama-3-*", "*meta-llama-3-*", "*llama3:*"), LLAMA3),
    Rule(("*llama-3.[1-9]*", "*llama3.[1-9]*", "*llama-4*", "*llama4*"), LLAMA31),
    Rule(("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "text-davinci-*"), OPENAI),
)


def terms_for(model: str, rules: Iterable[Rule] = DEFAULT_RULES) -> Terms | None:
    name = model.lower()
    for rule in rules:
        if any(fnmatchcase(name, glob) for glob in rule.models):
            return rule.terms
    return None


def violations(
    terms_ids: Iterable[str | None], base_model: str, rules: Iterable[Rule] = DEFAULT_RULES
) -> list[str]:
    """One message per distinct terms id whose outputs may not train `base_model`."""
    by_id = {rule.terms.id: rule.terms for rule in rules}
    base = base_model.lower()
    found = []
    for terms_id in sorted({t for t in terms_ids if t is not None}):
        terms = by_id.get(terms_id)
        if terms is not None and not any(fnmatchcase(base, g) for g in terms.may_train):
            found.append(f"{terms.name} ({terms_id}): {terms.note}; base model {base_model}")
    return found


def load_rules(path: Path) -> tuple[Rule, ...]:
    """A YAML list of {models: [globs], id, name, url, may_train: [globs], note}."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: a terms table is a YAML list of rules")
    rules = []
    for i, entry in enumerate(entries):
        try:
            rules.append(
                Rule(
                    tuple(str(m).lower() for m in entry["models"]),
                    Terms(
                        str(entry["id"]),
                        str(entry["name"]),
                        str(entry.get("url", "")),
                        tuple(str(g).lower() for g in entry.get("may_train", ["*"])),
                        str(entry.get("note", "")),
                    ),
                )
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: rule {i} lacks or mistypes {exc}") from None
    return tuple(rules)
