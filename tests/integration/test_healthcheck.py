"""`python -m pipeline.healthcheck`, the images' HEALTHCHECK, against a real metrics endpoint
and a real inference server on loopback: 0 when they answer, 1 when not, 2 when misused."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from pipeline.blobstore import open_store
from pipeline.healthcheck import main
from pipeline.metrics import WorkerMetrics
from pipeline.settings import BlobSettings
from tests.support.inference import Server
from tests.support.service_rig import REPO_ROOT

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_answer_or_the_check_fails() -> None:
    port = WorkerMetrics("probe", "t", CollectorRegistry()).serve(0)
    assert main(["metrics", str(port)]) == 0
    assert main(["metrics", str(closed_port())]) == 1
    # As Docker runs it: a process of its own, the reason on stderr.
    failed = subprocess.run([sys.executable, "-m", "pipeline.healthcheck", "metrics",  # noqa: S603
                             str(closed_port())], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert failed.returncode == 1 and "unhealthy" in failed.stderr


def test_grpc_health_serving_or_the_check_fails(test_data: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        blobs = open_store(BlobSettings(store_uri=Path(scratch).as_uri()))
        with Server(str(test_data / "models" / "stories260K"), blobs, Path(scratch),
                    token="secret") as server:  # fmt: skip  # noqa: S106 - a test server's
            assert main(["grpc", str(server.port)]) == 0  # no token: probes have none
            server.run(server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
            assert main(["grpc", str(server.port)]) == 1
    assert main(["grpc", str(closed_port())]) == 1


@pytest.mark.parametrize("argv", [[], ["metrics"], ["http", "80"], ["metrics", "port"]])
def test_a_wrong_call_is_a_usage_error(argv: list[str]) -> None:
    assert main(argv) == 2
