"""k8s/, validated offline: every overlay builds with `kubectl kustomize` and passes
`kubernetes-validate --strict`; Strimzi's and KEDA's resources match their CRDs' schemas
(which kubernetes-validate skips); and what the manifests name agrees with the code: topics
and partitions, variables, ports, the synthesizers' consumer group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline import topics
from pipeline.runconfig import service_variables, settings_class
from tests.support.deploy import (
    METRICS_PORT,
    REPO_ROOT,
    SERVICES,
    image_env,
    required_env,
    settings_load,
)

pytestmark = pytest.mark.deploy

OVERLAYS = sorted(p.name for p in (REPO_ROOT / "k8s" / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.30.0"
CUSTOM = {"kafka.strimzi.io", "keda.sh"}


def kustomize(directory: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to build the overlays (`kubectl kustomize`); install it")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,  # noqa: S603
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_valid(manifest: str, scratch: Path) -> None:
    """`kubernetes-validate --strict` passes on `manifest` (custom resources it skips)."""
    path = scratch / "manifest.yaml"
    path.write_text(manifest)
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validate), "--strict", "-k", KUBERNETES_VERSION, str(path)],  # noqa: S603
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@cache
def built(overlay: str) -> str:
    return kustomize(REPO_ROOT / "k8s" / "overlays" / overlay)


def resources(overlay: str) -> list[dict[str, Any]]:
    return [r for r in yaml.safe_load_all(built(overlay)) if r]


def of_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in resources(overlay) if r["kind"] == kind]


def containers(overlay: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    for r in resources(overlay):
        if r["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = r["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield r["metadata"]["name"], spec, c


def test_there_are_the_two_overlays() -> None:
    assert OVERLAYS == ["dev", "gpu-cloud"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_passes_kubernetes_validate_strict(overlay: str, tmp_path: Path) -> None:
    assert_valid(built(overlay), tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_and_keda_resources_match_their_crds(overlay: str, test_data: Path) -> None:
    schemas = {}
    for path in sorted((test_data / "data" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
        key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
        schemas[key] = version["schema"]["openAPIV3Schema"]
    custom = [r for r in resources(overlay) if r["apiVersion"].split("/")[0] in CUSTOM]
    assert {r["kind"] for r in custom} >= {"Kafka", "KafkaNodePool", "KafkaTopic", "ScaledObject"}
    for resource in custom:
        schema = schemas[(resource["apiVersion"], resource["kind"])]
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft4Validator(schema).iter_errors(resource)]  # fmt: skip
        assert not errors, f"{resource['kind']} {resource['metadata']['name']}: {errors}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_topics_are_the_codes_with_their_partitions(overlay: str) -> None:
    declared = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"]["partitions"]
                for t in of_kind(overlay, "KafkaTopic")}  # fmt: skip
    assert declared == topics.all_topics()
    (kafka,) = of_kind(overlay, "Kafka")
    clusters = {
        t["metadata"]["labels"]["strimzi.io/cluster"] for t in of_kind(overlay, "KafkaTopic")
    }
    assert clusters == {kafka["metadata"]["name"]}


SHARED_CONFIG = "distillery-config"  # every service's: Kafka, the blob store, the base model


def env_of(
    overlay: str, container: dict[str, Any], *, shared: bool = True
) -> dict[str, str | None]:
    """A container's variables: its own, and those of the ConfigMaps it takes whole (None: a
    value from a Secret or a field); with `shared` False, not those of SHARED_CONFIG."""
    maps = {m["metadata"]["name"]: m.get("data", {}) for m in of_kind(overlay, "ConfigMap")}
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "Secrets are named one variable at a time"
        if shared or source["configMapRef"]["name"] != SHARED_CONFIG:
            env |= maps[source["configMapRef"]["name"]]
    for var in container.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def service_of(container: dict[str, Any]) -> str | None:
    image = container["image"].rsplit("/", 1)[-1].split(":")[0]
    return next((s for s in SERVICES if image in (s, f"{s}-vllm")), None)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_gets_only_variables_it_reads_and_all_it_needs(overlay: str) -> None:
    seen = set()
    for name, _, container in containers(overlay):
        service = service_of(container)
        if service is None:
            continue
        seen.add(service)
        env = env_of(overlay, container)
        own = set(env_of(overlay, container, shared=False))
        assert own <= service_variables(service), (
            f"{name} never reads {sorted(own - service_variables(service))}")  # fmt: skip
        for needed in required_env(service):
            assert needed & set(env), f"{name} cannot start without one of {needed}"
        assert env[f"{service.upper()}_METRICS_PORT"] == str(METRICS_PORT)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == METRICS_PORT
    assert seen == set(SERVICES)
    # The shared settings: each read by some service, and every service takes them.
    (shared,) = [m for m in of_kind(overlay, "ConfigMap") if m["metadata"]["name"] == SHARED_CONFIG]
    assert set(shared["data"]) <= set().union(*map(service_variables, SERVICES))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_services_settings_load_from_what_its_pod_is_given(
    overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its image's variables, then the pod's: ConfigMaps whole, Secrets' values stood in
    for, and files from mounted Secrets written where the settings read them."""
    for _, spec, container in containers(overlay):
        service = service_of(container)
        if service is None:
            continue
        vllm = container["image"].split(":")[0].endswith("-vllm")
        dockerfile = (
            REPO_ROOT / "services" / service / ("Dockerfile.vllm" if vllm else "Dockerfile")
        )
        env = image_env(dockerfile) | {k: v or "from-a-secret"
                                       for k, v in env_of(overlay, container).items()}  # fmt: skip
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", [])
                   if "secret" in v}  # fmt: skip
        for mount in container.get("volumeMounts", []):
            if mount["name"] in secrets:
                for key, path in env.items():
                    if path.startswith(mount["mountPath"] + "/"):
                        stand_in = tmp_path / service / path.lstrip("/")
                        stand_in.parent.mkdir(parents=True, exist_ok=True)
                        stand_in.write_text("from-a-secret\n")
                        env[key] = str(stand_in)
        with monkeypatch.context() as patch:
            settings_load(service, env, patch)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_is_where_the_services_look_for_it(overlay: str) -> None:
    (kafka,) = of_kind(overlay, "Kafka")
    (listener,) = [li for li in kafka["spec"]["kafka"]["listeners"] if not li["tls"]]
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    for _, _, container in containers(overlay):
        if service_of(container):
            assert env_of(overlay, container)["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
    (scaler,) = of_kind(overlay, "ScaledObject")
    (trigger,) = scaler["spec"]["triggers"]
    synthesizer = settings_class("synthesizer").model_fields
    assert trigger["type"] == "kafka"
    # Fully qualified: KEDA's operator asks from a namespace of its own.
    namespace = kafka["metadata"]["namespace"]
    host, port = bootstrap.split(":")
    assert trigger["metadata"]["bootstrapServers"] == f"{host}.{namespace}.svc:{port}"
    assert trigger["metadata"]["topic"] == synthesizer["input_topic"].default == topics.PARSED_TEXT
    assert trigger["metadata"]["consumerGroup"] == synthesizer["service_name"].default
    # More synthesizers than parsed-text's partitions would idle.
    assert scaler["spec"]["maxReplicaCount"] <= topics.PARTITIONS[topics.PARSED_TEXT]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_is_probed_and_served_on_its_grpc_port(overlay: str) -> None:
    (container,) = [c for _, _, c in containers(overlay) if service_of(c) == "inference"]
    env = env_of(overlay, container)
    port = int(
        env.get("INFERENCE_PORT") or settings_class("inference").model_fields["port"].default
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port
    (service,) = [s for s in of_kind(overlay, "Service") if s["metadata"]["name"] == "inference"]
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}["grpc"] in (port, "grpc")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_limited_and_runs_as_non_root(overlay: str) -> None:
    for name, spec, container in containers(overlay):
        resources_ = container.get("resources", {})
        assert resources_.get("requests") and resources_.get("limits"), name
        pod, own = spec.get("securityContext", {}), container.get("securityContext", {})
        assert pod.get("runAsNonRoot") or own.get("runAsNonRoot"), name
        assert own.get("allowPrivilegeEscalation") is False, name
    names = {r["metadata"]["name"] for r in of_kind(overlay, "Deployment")}
    budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for p in of_kind(overlay, "PodDisruptionBudget")}  # fmt: skip
    assert set(SERVICES) <= names and set(SERVICES) <= budgets


def test_gpu_cloud_puts_trainer_and_inference_on_gpu_nodes() -> None:
    for name, spec, container in containers("gpu-cloud"):
        if service_of(container) in ("trainer", "inference"):
            assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1"), name
            assert any(t.get("key") == "nvidia.com/gpu" for t in spec["tolerations"]), name
            assert spec.get("nodeSelector"), name
    (inference,) = [c for _, _, c in containers("gpu-cloud") if service_of(c) == "inference"]
    assert inference["image"].split(":")[0].endswith("inference-vllm")
    for _, _, container in containers("dev"):
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_filled(overlay: str) -> None:
    assert not of_kind(overlay, "Secret")
    assert of_kind(overlay, "NetworkPolicy")


@pytest.mark.parametrize("component", ["hpa-fallback", "external-kafka"])
def test_each_component_builds_on_an_overlay_and_validates(component: str, tmp_path: Path) -> None:
    overlay = tmp_path / "with-component"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(REPO_ROOT / "k8s" / "overlays" / "dev", overlay)],
        "components": [os.path.relpath(REPO_ROOT / "k8s" / "components" / component, overlay)],
    }))  # fmt: skip
    manifest = kustomize(overlay)
    assert_valid(manifest, tmp_path)
    kinds = {r["kind"] for r in yaml.safe_load_all(manifest) if r}
    groups = {r["apiVersion"].split("/")[0] for r in yaml.safe_load_all(manifest) if r}
    if component == "hpa-fallback":  # one autoscaler for the synthesizer, not two
        assert "HorizontalPodAutoscaler" in kinds and "ScaledObject" not in kinds
    else:
        assert "kafka.strimzi.io" not in groups and "Deployment" in kinds
