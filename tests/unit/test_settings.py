"""Settings from the environment: `load` naming each bad variable, hidden secrets, Kafka options."""

from __future__ import annotations

import os

import pytest
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from pipeline.settings import (
    BlobSettings,
    KafkaSettings,
    ServiceSettings,
    SettingsError,
    load,
)

pytestmark = pytest.mark.unit

SECRET = "sk-demo-7f3a9c"  # noqa: S105 - a test value


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", frozen=True, extra="ignore")

    api_key: SecretStr
    batch_size: int = Field(8, ge=1)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment: none of the variables these settings read leak in from outside."""
    for name in list(os.environ):
        if name.upper().startswith(("KAFKA_", "BLOB_", "DEMO_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def good_env(env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    env.setenv("DEMO_SERVICE_NAME", "demo")
    env.setenv("DEMO_INPUT_TOPIC", "parsed-text")
    env.setenv("DEMO_API_KEY", SECRET)
    return env


def load_error(cls: type = DemoSettings) -> str:
    with pytest.raises(SettingsError) as caught:
        load(cls)
    return str(caught.value)


# --- load -----------------------------------------------------------------------------------------


def test_load_reads_the_service_prefix_and_the_shared_ones(good_env):
    good_env.setenv("DEMO_BATCH_SIZE", "32")
    good_env.setenv("BLOB_STORE_URI", "s3://blobs/distillery")
    settings = load(DemoSettings)
    assert (settings.service_name, settings.input_topic) == ("demo", "parsed-text")
    assert settings.batch_size == 32
    assert settings.api_key.get_secret_value() == SECRET
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.blobs.store_uri == "s3://blobs/distillery"


def test_defaults_apply_when_unset(good_env):
    settings = load(DemoSettings)
    assert settings.max_attempts == 5 and settings.batch_size == 8
    assert settings.metrics_port is None
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.blobs == BlobSettings()


def test_group_defaults_to_the_service_name(good_env):
    assert load(DemoSettings).group == "demo"
    good_env.setenv("DEMO_GROUP_ID", "demo-blue")
    assert load(DemoSettings).group == "demo-blue"


def test_variable_names_are_case_insensitive(good_env):
    good_env.delenv("DEMO_API_KEY")
    good_env.setenv("demo_api_key", SECRET)
    assert load(DemoSettings).api_key.get_secret_value() == SECRET


def test_an_empty_environment_names_every_missing_variable_at_once(env):
    message = load_error()
    assert message.startswith("DemoSettings: the environment is incomplete:\n")
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DEMO_SERVICE_NAME",
        "DEMO_INPUT_TOPIC",
        "DEMO_API_KEY",
    ):
        assert f"  {name}: Field required" in message.splitlines()


def test_a_missing_kafka_variable_does_not_hide_the_services_own(env):
    env.setenv("DEMO_SERVICE_NAME", "demo")
    env.setenv("DEMO_INPUT_TOPIC", "t")
    message = load_error()
    assert message.splitlines()[1:] == [
        "  KAFKA_BOOTSTRAP_SERVERS: Field required",
        "  DEMO_API_KEY: Field required",
    ]


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("DEMO_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("DEMO_BATCH_SIZE", "many", "valid integer"),
        ("DEMO_LOG_LEVEL", "TRACE", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("DEMO_METRICS_PORT", "70000", "less than or equal to 65535"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
        ("KAFKA_SESSION_TIMEOUT_MS", "10", "greater than or equal to 1000"),
        ("KAFKA_BOOTSTRAP_SERVERS", "", "at least 1 character"),
    ],
)
def test_an_invalid_variable_is_named_with_the_reason(good_env, name, value, why):
    good_env.setenv(name, value)
    problems = load_error().splitlines()[1:]
    assert len(problems) == 1
    assert problems[0].startswith(f"  {name}: ") and why in problems[0]


def test_invalid_shared_and_service_variables_are_reported_together(good_env):
    good_env.setenv("KAFKA_SASL_MECHANISM", "GSSAPI")
    good_env.setenv("DEMO_CONCURRENCY", "0")
    good_env.delenv("DEMO_API_KEY")
    names = [line.split(":")[0].strip() for line in load_error().splitlines()[1:]]
    assert names == ["KAFKA_SASL_MECHANISM", "DEMO_CONCURRENCY", "DEMO_API_KEY"]


def test_settings_error_exits_the_process():
    assert issubclass(SettingsError, SystemExit)


def test_load_works_for_a_shared_settings_class_alone(env):
    assert "  KAFKA_BOOTSTRAP_SERVERS: Field required" in load_error(KafkaSettings)
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    assert load(KafkaSettings).bootstrap_servers == "localhost:9092"


def test_settings_are_frozen(good_env):
    settings = load(DemoSettings)
    with pytest.raises(ValidationError, match="frozen"):
        settings.max_attempts = 9  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        settings.kafka.bootstrap_servers = "elsewhere:9092"  # type: ignore[misc]


# --- secrets --------------------------------------------------------------------------------------


def test_secrets_never_show_in_repr_str_or_json(good_env):
    good_env.setenv("KAFKA_SASL_PASSWORD", "kafka-pw-1d2e")
    good_env.setenv("BLOB_S3_SECRET_ACCESS_KEY", "s3-secret-9b8a")
    settings = load(DemoSettings)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in (SECRET, "kafka-pw-1d2e", "s3-secret-9b8a"):
            assert secret not in text
    assert settings.blobs.s3_secret_access_key == SecretStr("s3-secret-9b8a")


def test_secrets_never_show_in_the_error_of_another_variable(good_env):
    good_env.setenv("DEMO_BATCH_SIZE", "0")
    assert SECRET not in load_error()


# --- Kafka client options -------------------------------------------------------------------------


def test_client_config_without_sasl(env):
    kafka = KafkaSettings(bootstrap_servers="k1:9092,k2:9093", sasl_username="ignored")
    assert kafka.client_config() == {
        "bootstrap_servers": ["k1:9092", "k2:9093"],
        "security_protocol": "PLAINTEXT",
    }


def test_client_config_with_sasl_passes_the_password_in_clear_to_the_client(env):
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9094")
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("KAFKA_SASL_USERNAME", "distillery")
    env.setenv("KAFKA_SASL_PASSWORD", "kafka-pw-1d2e")
    assert load(KafkaSettings).client_config() == {
        "bootstrap_servers": ["broker:9094"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "distillery",
        "sasl_plain_password": "kafka-pw-1d2e",
    }


def test_client_config_with_sasl_and_no_password(env):
    kafka = KafkaSettings(bootstrap_servers="b:9092", sasl_mechanism="PLAIN", sasl_username="u")
    config = kafka.client_config()
    assert config["sasl_plain_username"] == "u"
    assert config["sasl_plain_password"] is None


def test_a_sasl_protocol_without_credentials_is_refused_at_start_up(good_env, monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError) as info:
        load(DemoSettings)
    assert "KAFKA_SASL_MECHANISM" in str(info.value) and "KAFKA_SASL_PASSWORD" in str(info.value)
