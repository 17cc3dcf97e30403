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

from tests.support.deploy import METRICS_PORT, REPO_ROOT, SERVICES, service_env

pytestmark = pytest.mark.deploy

DOCKERFILES = sorted(REPO_ROOT.glob("services/*/Dockerfile*"))
#: Variables images set for the libraries beneath the services, not for the services.
LIBRARY_ENV = {"HF_HOME", "NUMBA_CACHE_DIR", "SE_OFFLINE"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split()[0].upper(), line.partition(" ")[2].strip())
            for line in lines if line and not line.startswith("#")]  # fmt: skip


def env_of(dockerfile: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for kind, args in instructions(dockerfile):
        if kind == "ENV":
            found |= dict(pair.split("=", 1) for pair in args.split())
    return found


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
    env = env_of(dockerfile)
    assert env[f"{service.upper()}_METRICS_PORT"] == str(METRICS_PORT)
    assert any(kind == "HEALTHCHECK" and "pipeline.healthcheck" in args for kind, args in steps)
    assert set(env) - LIBRARY_ENV <= service_env(service)


def test_the_build_context_leaves_out_what_images_never_copy() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-vllm", ".distillery", "tests"} <= ignored
