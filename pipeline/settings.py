"""Settings shared by every service (Kafka, blob store, the worker loop), read from the environment.

Each service subclasses `ServiceSettings` with its own env prefix (EXTRACTOR_, TRAINER_, ...);
Kafka and blob-store settings are shared by all and keep their own prefixes (KAFKA_, BLOB_).
`load` fails fast at start-up with the name of every missing or invalid variable.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(SystemExit):
    """Raised at start-up when the environment does not describe a runnable service."""


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # Short session and heartbeat: with the client's 45 s default a consumer joining a group
    # waits ~25 s for its first record, and a killed member holds its partitions that long.
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs KAFKA_SASL_MECHANISM, "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return self

    def client_config(self) -> dict[str, object]:
        """Connection options common to producers, consumers and admin clients."""
        config: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return config


class BlobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOB_", frozen=True, extra="ignore")

    #: file:///abs/dir (default ./.distillery/blobs) or s3://bucket/prefix
    store_uri: str = "file://.distillery/blobs"
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None


class ServiceSettings(BaseSettings):
    """What the worker loop needs; each service extends it with an env prefix of its own."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    service_name: str
    input_topic: str
    #: Consumer group; replicas of a service share it. Defaults to the service name.
    group_id: str | None = None
    max_attempts: int = Field(5, ge=1)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    #: Messages handled at once by an async handler (ignored by sync handlers).
    concurrency: int = Field(1, ge=1)
    commit_interval_s: float = Field(1.0, gt=0)
    #: Seconds a stopping worker lets async handlers finish before it abandons them
    #: uncommitted, to be handled again. (A rebalance waits for no handler at all.)
    stop_grace_s: float = Field(20.0, gt=0)
    max_poll_records: int = Field(500, ge=1)
    #: Prometheus port; 0 picks a free one, unset disables the endpoint.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings())
    blobs: BlobSettings = Field(default_factory=BlobSettings)

    @property
    def group(self) -> str:
        return self.group_id or self.service_name


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """Build settings from the environment or exit naming every bad variable and why."""
    problems: list[str] = []
    nested: dict[str, Any] = {}
    if issubclass(cls, ServiceSettings):
        # Built apart so that a missing KAFKA_ variable does not hide the service's own.
        for field, part in (("kafka", KafkaSettings), ("blobs", BlobSettings)):
            try:
                nested[field] = part()
            except ValidationError as exc:
                problems += _describe(part, exc)
                nested[field] = part.model_construct()
    try:
        settings = cls(**nested)
    except ValidationError as exc:
        problems += _describe(cls, exc)
    if problems:
        raise SettingsError(
            f"{cls.__name__}: the environment is incomplete:\n" + "\n".join(problems)
        )
    return settings


def _describe(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    lines = []
    for err in exc.errors(include_url=False):
        loc = "_".join(str(p) for p in err["loc"])
        # A field read through an alias is located by the alias, already a variable's name;
        # a check of several fields together has no location: the class names it.
        name = loc if loc.isupper() else prefix + loc.upper() if loc else cls.__name__
        lines.append(f"  {name}: {err['msg'].removeprefix('Value error, ')}")
    return lines
