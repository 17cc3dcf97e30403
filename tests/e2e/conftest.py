"""The undisturbed demo run, made once: the demo test checks it, the chaos test compares its
own run with it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli_stages import Summary
from tests.support.service_rig import REPO_ROOT


@dataclass(frozen=True)
class Demo:
    home: Path
    summary: Summary


def clean_env(test_data: Path) -> dict[str, str]:
    """This environment less any stack or service setting the test runner may carry."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "BLOB_", "EVALUATOR_", "DISTILLERY_BASE"))}  # fmt: skip
    return env | {"DISTILLERY_TEST_DATA": str(test_data), "COLUMNS": "200"}


def distillery(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=REPO_ROOT,  # noqa: S603
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="session")
def demo_run(test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`distillery demo` as `make demo` runs it, on the 13 shared PDFs with stories260K."""
    home = tmp_path_factory.mktemp("e2e") / "demo"
    demo = distillery("demo", "--home", str(home), env=clean_env(test_data), timeout=1500)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    return Demo(home, Summary.model_validate_json((home / "summary.json").read_text()))
