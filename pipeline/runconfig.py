"""A run described in one file (`distillery run CONFIG.yaml`): its sources, and each service's
settings for it.

A service section holds that service's settings by field name (`synthesizer: {temperature:
0.2}` is `SYNTHESIZER_TEMPERATURE=0.2`), so the file can say everything the environment can,
and is checked by the services' own settings classes before anything starts. On the embedded
stack the sections become the services' environment; a deployed stack has its own, so there
the sections are only rendered (`distillery run --env SERVICE`) for its ConfigMap or `.env`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings

from pipeline.embedded import API_PORTS, SERVICES
from pipeline.messages import FolderSource, SourceSpec
from pipeline.settings import BlobSettings, KafkaSettings, ServiceSettings, SettingsError, load

# The trainer's rule for run ids (they name blob paths), checked here before anything starts.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Set by the stack itself, per replica: a run file that set them would break the supervisor.
_STACK_FIELDS = {"service_name", "input_topic", "metrics_port", "kafka", "blobs"}


class RunConfigError(ValueError):
    """The file does not describe a run; the message says where and why, one line each."""


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Names the run on every message; reuse it to resume. Default: the file's name.
    run_id: str | None = None
    description: str = ""
    #: The base model the trainer tunes and inference serves (DISTILLERY_BASE_MODEL): a hub
    #: id or a directory. Left out, the recipe's and the environment's decide.
    base_model: str | None = None
    sources: list[SourceSpec] = Field(min_length=1)
    scraper: dict[str, Any] = {}
    extractor: dict[str, Any] = {}
    synthesizer: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    evaluator: dict[str, Any] = {}
    inference: dict[str, Any] = {}
    #: Seconds the run may wait at any one stage before it is reported stuck.
    stage_timeout_s: float = Field(3600.0, gt=0)

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        if value is not None and not RUN_ID.fullmatch(value):
            raise ValueError(
                "letters, digits, '.', '_' and '-' (up to 128, starting with a letter or digit)"
            )
        return value

    def section(self, service: str) -> dict[str, Any]:
        section: dict[str, Any] = getattr(self, service)
        return section

    def _recipe_base_model(self) -> str | None:
        """The recipe's base model, when the file names a recipe: what the trainer tunes is
        what inference must serve the adapter on."""
        recipe = self.trainer.get("recipe")
        if not isinstance(recipe, str):
            return None
        from services.trainer.recipe import load_recipe  # the trainer extra: yaml and pydantic

        try:
            return load_recipe(Path(recipe)).base_model
        except ValueError:
            return None  # the trainer's settings check says what is wrong with it

    def environment(self) -> dict[str, str | None]:
        """Each service section as the variables its settings read; None unsets one (a
        `null` in the file: the field's default, whatever the caller's environment says)."""
        env: dict[str, str | None] = {}
        base_model = self.base_model or self._recipe_base_model()
        if base_model is not None:
            env["DISTILLERY_BASE_MODEL"] = base_model
        for service in SERVICES:
            section = self.section(service)
            if not section:
                continue
            cls = settings_class(service)
            for field, value in section.items():
                env[variable(cls, field)] = None if value is None else _env_value(value)
        return env


def load_run_config(path: Path, *, embedded: bool = True) -> RunConfig:
    """The run in `path`, its relative paths made absolute from the file's directory, checked
    down to every service setting (with what the embedded stack sets itself, when `embedded`);
    or RunConfigError naming each problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise RunConfigError(f"{path}: not YAML ({exc})") from None
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: a run file is a mapping (sources:, trainer:, ...)")
    data.setdefault("run_id", path.stem if RUN_ID.fullmatch(path.stem) else None)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise RunConfigError(f"{path}:\n" + "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or 'run'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )) from None  # fmt: skip
    config = _absolute(config, path.resolve().parent)
    problems = [f"  {p}" for p in check_sections(config, embedded=embedded)]
    if problems:
        raise RunConfigError(f"{path}:\n" + "\n".join(problems))
    return config


def check_sections(config: RunConfig, *, embedded: bool) -> list[str]:
    """Every unknown field and every invalid value of the service sections. On the embedded
    stack, as the services will see them: their settings built from this environment with the
    file's on top and the loopback addresses the supervisor sets, so checks across settings
    (a provider's key, ARC offline) run too. A deployed stack's environment is not this one:
    there each value is checked alone."""
    problems: list[str] = []
    for service in SERVICES:
        cls = settings_class(service)
        for field, value in config.section(service).items():
            if field not in settings_fields(cls):
                close = difflib.get_close_matches(field, settings_fields(cls), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"{service}.{field}: {service} has no such setting{hint}")
            elif not embedded and value is not None:
                info = cls.model_fields[field]
                try:
                    kind: Any = (Annotated[(info.annotation, *info.metadata)]
                                 if info.metadata else info.annotation)  # fmt: skip
                    TypeAdapter(kind).validate_python(value)
                except ValidationError as exc:
                    problems += [f"{service}.{field}: {e['msg']}" for e in exc.errors()]
    if problems or not embedded:
        return problems
    names = {name: key for service in SERVICES for name, key in _names(config, service)}
    env = config.environment() | {host: "127.0.0.1" for host, _port in API_PORTS.values()}
    with environment(env):
        for service in SERVICES:
            try:
                load(settings_class(service))
            except SettingsError as exc:
                for line in str(exc).splitlines()[1:]:
                    name, _, why = line.strip().partition(": ")
                    where = names.get(name) or f"{name} (from the environment)"
                    if name == settings_class(service).__name__:
                        where = service  # a check of several fields together
                    if name in ("INFERENCE_BASE_MODEL", "DISTILLERY_BASE_MODEL"):
                        where = "base_model"  # required: no environment and no file set it
                    problems.append(f"{where}: {why}")
    return sorted(set(problems))


def settings_class(service: str) -> type[ServiceSettings]:
    """The settings class of `service` (services/<service>/config.py)."""
    module = importlib.import_module(f"services.{service}.config")
    (cls,) = [v for v in vars(module).values() if inspect.isclass(v)
              and issubclass(v, ServiceSettings) and v.__module__ == module.__name__]  # fmt: skip
    return cls


def settings_fields(cls: type[ServiceSettings]) -> list[str]:
    """The fields a run file may set for a service."""
    return [name for name in cls.model_fields if name not in _STACK_FIELDS]


def variable(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` (its first alias, if it has any)."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(cls.model_config.get("env_prefix", "")).upper() + field.upper()


def variables(cls: type[BaseSettings]) -> set[str]:
    """Every variable a settings class reads (all the aliases of a field)."""
    out: set[str] = set()
    for name, field in cls.model_fields.items():
        if name in ("kafka", "blobs"):
            continue
        alias = field.validation_alias
        out |= ({str(c) for c in alias.choices} if isinstance(alias, AliasChoices)
                else {variable(cls, name)})  # fmt: skip
    return out


def service_variables(service: str) -> set[str]:
    """Everything a service's process reads: its own variables, Kafka's and the blob store's."""
    return variables(settings_class(service)) | variables(KafkaSettings) | variables(BlobSettings)


def env_file(config: RunConfig, service: str) -> str:
    """A service's section as `NAME=value` lines (an env file, a ConfigMap's data)."""
    env = config.environment()
    out = []
    for name, _key in _names(config, service):
        value = env[name]
        out.append(f"{name}={value}" if value is not None else f"# {name} left to its default")
    if service in ("trainer", "inference") and env.get("DISTILLERY_BASE_MODEL"):
        out.append(f"DISTILLERY_BASE_MODEL={env['DISTILLERY_BASE_MODEL']}")
    return "\n".join(out) + ("\n" if out else "")


def apply(changes: Mapping[str, str | None]) -> None:
    """Set each variable of `changes` in os.environ; None removes one."""
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """os.environ with `changes` (None removes a variable) until the block ends, and a
    placeholder broker address where none is set: the stack sets the real one later."""
    saved = dict(os.environ)
    try:
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "placeholder:9092")
        apply(changes)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _names(config: RunConfig, service: str) -> Iterator[tuple[str, str]]:
    """(variable, `service.field`) of each field a section sets."""
    cls = settings_class(service)
    for field in config.section(service):
        yield variable(cls, field), f"{service}.{field}"


def _env_value(value: Any) -> str:
    # pydantic-settings reads lists, dicts and models as JSON, and strings as they are.
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _absolute(config: RunConfig, base: Path) -> RunConfig:
    """Relative paths in the file are the file's: made absolute before the services, which run
    elsewhere, see them. A value is a path when its field is one, or when it names a file or a
    directory beside the file (a recipe, a base model)."""

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value and not os.path.isabs(value):
            candidate = os.path.normpath(base / value)
            if os.path.exists(candidate):
                return candidate
        return value

    updates: dict[str, Any] = {}
    sources = [
        s.model_copy(update={"path": os.path.normpath(base / s.path)})
        if isinstance(s, FolderSource) and not os.path.isabs(s.path) else s
        for s in config.sources
    ]  # fmt: skip
    updates["sources"] = sources
    if config.base_model:
        updates["base_model"] = resolve(config.base_model)
    for service in SERVICES:
        cls = settings_class(service)
        section = {}
        for field, value in config.section(service).items():
            info = cls.model_fields.get(field)
            is_path = info is not None and "Path" in str(info.annotation)
            if is_path and isinstance(value, str) and not os.path.isabs(value):
                section[field] = os.path.normpath(base / value)
            else:
                section[field] = resolve(value)
        updates[service] = section
    return config.model_copy(update=updates)
