"""Prompts are versioned files: YAML with an id, the templates and the answer's JSON schema.
Every pair records the prompt's id and the sha256 of the file's bytes, so a dataset says
exactly which words made it. Templates use `$name` placeholders (JSON braces stay literal)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml

BUNDLED = Path(__file__).parent / "prompts"
Kind = Literal["triples", "qa", "self-instruct", "judge"]
KINDS: tuple[Kind, ...] = ("triples", "qa", "self-instruct", "judge")


@dataclass(frozen=True)
class Prompt:
    id: str
    hash: str
    kind: Kind
    #: Whether outputs must be supported by the source chunk (self-instruct's are not).
    grounded: bool
    system: str
    templates: dict[str, str]
    #: Answer format instructions: "json" (JSON modes) and "text" (no structured output).
    formats: dict[str, str] = field(default_factory=dict)
    schema: dict[str, Any] | None = None

    def render(self, template: str, **values: str) -> str:
        """`template` filled in; every placeholder must be given (a typo is an error)."""
        return Template(self.templates[template]).substitute(values)


def bundled() -> list[str]:
    return sorted(p.stem for p in BUNDLED.glob("*.yaml"))


def load_prompt(ref: str) -> Prompt:
    """A bundled prompt by id ("triples-v1") or a prompt file by path."""
    path = BUNDLED / f"{ref}.yaml"
    if not path.is_file():
        path = Path(ref)
    if not path.is_file():
        raise ValueError(f"no prompt {ref!r}: neither a file nor one of {', '.join(bundled())}")
    raw = path.read_bytes()
    try:
        spec = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"prompt {path} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"prompt {path} must be a YAML mapping")
    return _build(path, spec, hashlib.sha256(raw).hexdigest())


def _build(path: Path, spec: dict[str, Any], digest: str) -> Prompt:
    missing = [k for k in ("id", "kind", "system") if not spec.get(k)]
    if missing:
        raise ValueError(f"prompt {path} lacks {', '.join(missing)}")
    if spec["kind"] not in KINDS:
        raise ValueError(f"prompt {path}: kind {spec['kind']!r} is not one of {KINDS}")
    skip = {"id", "kind", "grounded", "system", "formats", "schema"}
    templates = {k: v for k, v in spec.items() if k not in skip and isinstance(v, str)}
    needed = {"triples": ("user", "repair"), "qa": ("user", "repair"), "judge": ("user",)}.get(
        spec["kind"], ()
    )
    if absent := [t for t in needed if t not in templates]:
        raise ValueError(f"prompt {path} lacks the template(s) {', '.join(absent)}")
    return Prompt(
        id=str(spec["id"]),
        hash=digest,
        kind=spec["kind"],
        grounded=bool(spec.get("grounded", True)),
        system=str(spec["system"]).strip(),
        templates=templates,
        formats=dict(spec.get("formats") or {}),
        schema=spec.get("schema"),
    )
