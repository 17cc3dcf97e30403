"""docker-compose.yml, validated without Docker: it is a valid Compose file, and what it names
agrees with the code (every variable a service is given is one it reads, topics come from
pipeline/topics.py, ports, metrics and the dashboard's queries)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from pipeline.runconfig import service_variables
from tests.support.deploy import (
    METRICS_PORT,
    REPO_ROOT,
    SERVICES,
    exported_metrics,
    image_env,
    promql_metrics,
    required_env,
    settings_load,
)

pytestmark = pytest.mark.deploy

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES_IN_COMPOSE: dict[str, Any] = COMPOSE["services"]
#: Compose service -> the Distillery service it runs (the gpu profile has its own copies).
RUNS = {name: name.removesuffix("-gpu") for name in SERVICES_IN_COMPOSE
        if name.removesuffix("-gpu") in SERVICES}  # fmt: skip
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")
#: .env as a user starts it: a copy of .env.example.
EXAMPLE = dict(line.split("=", 1) for line in (REPO_ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))  # fmt: skip


def value(text: object) -> str:
    """A compose value as compose reads it with .env a copy of .env.example."""
    return INTERPOLATION.sub(lambda m: EXAMPLE.get(m.group(1)) or m.group(2) or "", str(text))


def test_it_is_a_valid_compose_file() -> None:
    checker = [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
               "vendor.compose-spec", str(COMPOSE_FILE)]  # fmt: skip
    result = subprocess.run(checker, capture_output=True, text=True, check=False)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_it_interpolates_is_in_env_example_and_none_is_left_over() -> None:
    used = {m.group(1) for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text())}
    assert used <= set(EXAMPLE), f"not in .env.example: {sorted(used - set(EXAMPLE))}"
    assert set(EXAMPLE) - used == {"COMPOSE_PROFILES"}, "what .env.example sets, compose uses"
    assert EXAMPLE["COMPOSE_PROFILES"] == "cpu"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_services_settings_load_from_what_its_container_is_given(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its image's variables, then compose's, with .env a copy of .env.example; paths under
    a bind mount read from the host directory behind it (../shared by default)."""
    service = SERVICES_IN_COMPOSE[name]
    dockerfile = REPO_ROOT / service["build"]["dockerfile"]
    env = image_env(dockerfile) | {k: value(v) for k, v in service["environment"].items()}
    mounts = {}
    for volume in service.get("volumes", []):
        host, inside = value(volume).split(":")[:2]
        if host.startswith((".", "/")):
            mounts[inside] = str((REPO_ROOT / host).resolve())
    for key, text in env.items():
        for inside, host in mounts.items():
            if text == inside or text.startswith(inside + "/"):
                env[key] = host + text[len(inside) :]
    settings_load(RUNS[name], env, monkeypatch)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_service_gets_only_variables_it_reads_and_all_it_needs(name: str) -> None:
    service = RUNS[name]
    env = {k: value(v) for k, v in SERVICES_IN_COMPOSE[name]["environment"].items()}
    assert set(env) <= service_variables(service), (
        f"{name} reads none of {set(env) - service_variables(service)}"
    )
    for needed in required_env(service):
        assert needed & set(env), f"{name} cannot start without one of {needed}"
    assert env[f"{service.upper()}_METRICS_PORT"] == str(METRICS_PORT)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["BLOB_S3_ENDPOINT_URL"] == "http://minio:9000"
    # After the topics and the bucket exist.
    after = SERVICES_IN_COMPOSE[name]["depends_on"]
    assert after["topic-init"]["condition"] == after["minio-init"]["condition"] == (
        "service_completed_successfully")  # fmt: skip


def test_kafka_topics_and_the_bucket_are_set_up_by_the_code_that_defines_them() -> None:
    kafka = SERVICES_IN_COMPOSE["kafka"]["environment"]
    assert "INTERNAL://kafka:9092" in value(kafka["KAFKA_ADVERTISED_LISTENERS"]).split(",")
    # The topics live on the volume, not in the container.
    volumes = dict(v.split(":")[::-1] for v in SERVICES_IN_COMPOSE["kafka"]["volumes"])
    assert volumes[kafka["KAFKA_LOG_DIRS"]] in COMPOSE["volumes"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # `distillery topics --create` makes pipeline/topics.py's topics (tests/integration).
    init = SERVICES_IN_COMPOSE["topic-init"]
    assert init["command"] == ["distillery", "topics", "--create"]
    assert init["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    bucket = SERVICES_IN_COMPOSE["minio-init"]["command"][0]
    store = value(SERVICES_IN_COMPOSE["extractor"]["environment"]["BLOB_STORE_URI"])
    assert f"local/{store.removeprefix('s3://').split('/')[0]}" in bucket


def test_synthesizers_scale_and_the_gpu_profile_swaps_trainer_and_inference() -> None:
    assert not any("container_name" in s for s in SERVICES_IN_COMPOSE.values())
    synthesizer = SERVICES_IN_COMPOSE["synthesizer"]
    assert "ports" not in synthesizer  # `--scale synthesizer=4`: no host port to fight over
    for name in ("trainer", "inference"):
        assert SERVICES_IN_COMPOSE[name]["profiles"] == ["cpu"]
        gpu = SERVICES_IN_COMPOSE[f"{name}-gpu"]
        assert gpu["profiles"] == ["gpu"]
        (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        # The other services, clients and Prometheus use one name, whichever profile runs.
        assert gpu["networks"]["default"]["aliases"] == [name]
    assert "Dockerfile.vllm" in SERVICES_IN_COMPOSE["inference-gpu"]["build"]["dockerfile"]
    others = set(SERVICES_IN_COMPOSE) - {"trainer", "inference", "trainer-gpu", "inference-gpu"}
    assert not any("profiles" in SERVICES_IN_COMPOSE[n] for n in others)


def test_inference_ports_are_the_ones_its_clients_use() -> None:
    inference = SERVICES_IN_COMPOSE["inference"]
    env = {k: value(v) for k, v in inference["environment"].items()}
    (mapping,) = inference["ports"]
    assert value(mapping).split(":")[-1] == env["INFERENCE_PORT"]
    synthesizer = {
        k: value(v) for k, v in SERVICES_IN_COMPOSE["synthesizer"]["environment"].items()
    }
    assert (
        synthesizer["SYNTHESIZER_BASE_URL"] == f"http://inference:{env['INFERENCE_OPENAI_PORT']}/v1"
    )


def test_prometheus_scrapes_every_service_and_the_dashboard_reads_what_they_export() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (found,) = job["dns_sd_configs"]
    assert set(found["names"]) == set(SERVICES) and found["port"] == METRICS_PORT
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/distillery.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in promql_metrics(target["expr"])}  # fmt: skip
    assert asked and asked <= exported_metrics(), sorted(asked - exported_metrics())
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in ("lag", "topic", "dead-letter", "synthesizer tokens", "cost", "trainer loss",
                    "trainer tokens", "inference latency", "inference tokens"):  # fmt: skip
        assert subject in titles
