"""A container's health check, with nothing but the image's own Python:

    python -m pipeline.healthcheck metrics 9100   # a worker's metrics endpoint answers
    python -m pipeline.healthcheck grpc 50051     # grpc.health.v1 says SERVING

Exit 0 when healthy, 1 otherwise with the reason on stderr (Docker keeps it in the
container's health log)."""

from __future__ import annotations

import sys
import urllib.request

TIMEOUT_S = 5.0


def metrics(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S) as answer:
        if answer.status != 200:
            raise RuntimeError(f"/metrics answered {answer.status}")


def grpc_health(port: int) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
        )
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(
            f"health is {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
        )


CHECKS = {"metrics": metrics, "grpc": grpc_health}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CHECKS or not argv[1].isdigit():
        print(f"usage: python -m pipeline.healthcheck {{{'|'.join(CHECKS)}}} PORT", file=sys.stderr)
        return 2
    try:
        CHECKS[argv[0]](int(argv[1]))
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
