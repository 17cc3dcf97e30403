"""The Dockerfiles, read rather than built (no Docker engine here or in CI): hadolint passes,
and each image installs what its service needs the way CI does, runs it as a numeric
non-root user, exports its metrics and checks its health."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.runconfig import service_variables, settings_class
from tests.support.deploy import (
    METRICS_PORT,
    REPO_ROOT,
    SERVICES,
    image_env,
    instructions,
)

pytestmark = pytest.mark.deploy

DOCKERFILES = sorted(REPO_ROOT.glob("services/*/Dockerfile*"))
#: Variables images set for the libraries beneath the services, not for the services.
LIBRARY_ENV = {"HF_HOME", "NUMBA_CACHE_DIR", "SE_OFFLINE"}


def test_hadolint_passes_on_every_dockerfile() -> None:
    assert {p.parent.name for p in DOCKERFILES} == set(SERVICES)
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], cwd=REPO_ROOT,  # noqa: S603
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_each_image_runs_its_service_as_ci_installs_it(dockerfile: Path) -> None:
    service = dockerfile.parent.name
    steps = instructions(dockerfile)
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    # The project with the service's own extra, which exists (CI installs every extra).
    extras = re.search(r'pip install [^"]*"\.\[([a-z0-9,-]+)\]"', runs)
    assert extras, f"{dockerfile} does not install the project"
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert service in extras.group(1).split(",") and set(extras.group(1).split(",")) <= set(
        declared
    )
    # torch, where an image installs it, is the version the Makefile installs for CI.
    makefile_torch = set(re.findall(r"torch==[\d.]+", (REPO_ROOT / "Makefile").read_text()))
    assert set(re.findall(r"torch==[\d.]+", runs)) <= makefile_torch
    # The service's code is in the image, and it is what runs.
    copied = {args.split()[0] for kind, args in steps if kind == "COPY"}
    assert {"pipeline", f"services/{service}"} <= copied
    assert steps[-1] == ("CMD", f'["{"python3" if "vllm" in dockerfile.name else "python"}", '
                                f'"-m", "services.{service}"]')  # fmt: skip
    # A numeric user, not root (Kubernetes can then check runAsNonRoot).
    (user,) = [args for kind, args in steps if kind == "USER"]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user)
    # Metrics on the port Prometheus scrapes, a health check, and only known variables.
    env = image_env(dockerfile)
    assert env[f"{service.upper()}_METRICS_PORT"] == str(METRICS_PORT)
    (check,) = [args for kind, args in steps if kind == "HEALTHCHECK"]
    if service == "inference":  # the gRPC health service, on the port it serves
        probe = f'"grpc", "{settings_class(service).model_fields["port"].default}"'
    else:
        probe = f'"metrics", "{METRICS_PORT}"'
    assert check.endswith(f'"pipeline.healthcheck", {probe}]')
    assert set(env) - LIBRARY_ENV <= service_variables(service)


def test_the_build_context_leaves_out_what_images_never_copy() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-vllm", ".distillery", "tests"} <= ignored
