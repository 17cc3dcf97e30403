"""What the deployment files must agree with, read from the code: each service's settings
class and the variables it reads, the metrics the services export."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices

from pipeline.metrics import WorkerMetrics
from pipeline.runconfig import service_variables, settings_class
from pipeline.settings import BlobSettings, KafkaSettings, load

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("scraper", "extractor", "synthesizer", "trainer", "evaluator", "inference")
METRICS_PORT = 9100


def required_env(service: str) -> list[set[str]]:
    """The variables a service cannot start without: one of each set (aliases)."""
    out = []
    for cls in (settings_class(service), KafkaSettings, BlobSettings):
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        for name, field in cls.model_fields.items():
            if field.is_required() and name not in ("kafka", "blobs"):
                alias = field.validation_alias
                out.append({str(c) for c in alias.choices} if isinstance(alias, AliasChoices)
                           else {prefix + name.upper()})  # fmt: skip
    return out


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split()[0].upper(), line.partition(" ")[2].strip())
            for line in lines if line and not line.startswith("#")]  # fmt: skip


def image_env(dockerfile: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for kind, args in instructions(dockerfile):
        if kind == "ENV":
            found |= dict(pair.split("=", 1) for pair in args.split())
    return found


def settings_load(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's settings from `env` alone, as its process would build them (raises
    SettingsError naming every bad variable)."""
    # The container's environment, not the test's: validators look at the hub's too.
    read = service_variables(service) | {
        "DISTILLERY_BASE_MODEL",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
    }
    for name in [n for n in os.environ if n in read]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    load(settings_class(service))


def exported_metrics() -> set[str]:
    """Every metric name the services export, as Prometheus sees it (counters with _total,
    histograms with _bucket, _sum and _count)."""
    registry = CollectorRegistry()
    WorkerMetrics("any", "any", registry)
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.metrics")
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == module.__name__:
                extra = ("openai", "model") if service == "synthesizer" else ()
                cls(service, registry, *extra)
    # From the families: a labelled metric has no sample until a label is used.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes.get(family.type, ("",))}  # fmt: skip


def promql_metrics(expr: str) -> set[str]:
    """The distillery_* metric names a PromQL expression reads."""
    return set(re.findall(r"\bdistillery_[a-z_]+\b", expr))
