"""Tokens/s through the gRPC server's streaming vs calling the engine in-process.

    python -m benchmarks.inference   # BENCH_INF_TOKENS=64 _REQUESTS=16 _REPEATS=3 _INTERVAL_MS=20

One transformers engine on stories260K (CPU, batches of up to 32). In-process: N concurrent
callers of `engine.generate` on the engine's own event loop. Through gRPC: the same engine
behind the real server on loopback, and N client threads streaming (`GenerateStream`) from a
separate process, as a client would. Each caller sends BENCH_INF_REQUESTS greedy requests one
after another, each for BENCH_INF_TOKENS tokens, on prompts that differ per caller. N is 1, 8
and 32; the two sides alternate, median of the repeats. overhead_N = 1 - grpc / in-process.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(os.environ.get("DISTILLERY_TEST_DATA", "../shared"))
MODEL = str((SHARED / "models" / "stories260K").resolve())
TOKENS = int(os.environ.get("BENCH_INF_TOKENS", "64"))
REQUESTS = int(os.environ.get("BENCH_INF_REQUESTS", "16"))
REPEATS = int(os.environ.get("BENCH_INF_REPEATS", "3"))
INTERVAL_MS = float(os.environ.get("BENCH_INF_INTERVAL_MS", "20"))  # the service's default
CLIENTS = (1, 8, 32)


def prompt(client: int, request: int) -> str:
    return f"Once upon a time, child {client} found toy {request} and"


def _client(address: str, clients: int) -> tuple[int, float]:
    """N threads, each streaming its requests: completion tokens and seconds."""
    from pipeline.inference_api import inference_pb2 as pb
    from pipeline.inference_client import InferenceClient

    with InferenceClient(address) as client:
        client.generate("warm", max_tokens=1)
        counts = [0] * clients

        def run(i: int) -> None:
            for j in range(REQUESTS):
                params = pb.SamplingParams(max_tokens=TOKENS)
                request = pb.GenerateRequest(prompt=prompt(i, j), model="base", sampling=params)
                for chunk in client.stream_chunks(client.stub.GenerateStream, request):
                    if chunk.HasField("usage"):
                        counts[i] += chunk.usage.completion_tokens

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts), time.perf_counter() - started


def through_grpc(address: str, clients: int) -> float:
    """The clients in a process of their own (`--client`), as a client would be."""
    out = subprocess.run(  # noqa: S603 - this module
        [sys.executable, "-m", "benchmarks.inference", "--client", address, str(clients)],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout.split()  # fmt: skip
    return int(out[0]) / float(out[1])


def in_process(server: object, clients: int) -> float:
    from services.inference.core import Sampling
    from services.inference.engine import Request

    engine = server.engine  # type: ignore[attr-defined]

    async def caller(i: int) -> int:
        n = 0
        for j in range(REQUESTS):
            request = Request(engine.encode(prompt(i, j)), None, Sampling(TOKENS))
            async for step in engine.generate(request):
                n += len(step.token_ids)
        return n

    async def everyone() -> tuple[int, float]:
        started = time.perf_counter()
        counts = await asyncio.gather(*(caller(i) for i in range(clients)))
        return sum(counts), time.perf_counter() - started

    tokens, seconds = server.run(everyone())  # type: ignore[attr-defined]
    return tokens / seconds  # type: ignore[no-any-return]


def main() -> None:
    import torch

    from pipeline.blobstore import open_store
    from pipeline.settings import BlobSettings
    from tests.support.inference import Server

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    with tempfile.TemporaryDirectory() as scratch:
        blobs = open_store(BlobSettings(store_uri=Path(scratch).as_uri()))
        with Server(
            MODEL, blobs, Path(scratch), max_batch_size=32, stream_interval_s=INTERVAL_MS / 1000
        ) as server:
            results: dict[int, dict[str, list[float]]] = {n: {"grpc": [], "local": []}
                                                          for n in CLIENTS}  # fmt: skip
            in_process(server, 1)  # warm-up
            for repeat in range(REPEATS):
                for n in CLIENTS:
                    results[n]["local"].append(in_process(server, n))
                    results[n]["grpc"].append(through_grpc(server.address, n))
                    print(f"{repeat + 1}/{REPEATS} clients {n}: in-process "
                          f"{results[n]['local'][-1]:,.0f} tokens/s, gRPC "
                          f"{results[n]['grpc'][-1]:,.0f} tokens/s", flush=True)  # fmt: skip
    summary: dict[str, object] = {}
    for n in CLIENTS:
        local = statistics.median(results[n]["local"])
        remote = statistics.median(results[n]["grpc"])
        summary[f"overhead_{n}"] = round(1 - remote / local, 4)
        summary[f"tokens_per_s_{n}"] = round(remote, 1)
        summary[f"in_process_tokens_per_s_{n}"] = round(local, 1)
    summary |= {"max_tokens": TOKENS, "requests_per_client": REQUESTS, "repeats": REPEATS,
                "model": "stories260K", "engine": "transformers", "max_batch_size": 32,
                "stream_interval_ms": INTERVAL_MS}  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        print(*_client(sys.argv[2], int(sys.argv[3])))
    else:
        main()
