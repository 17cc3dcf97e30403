"""Tokens/s through the gRPC server's streaming vs calling the engine in-process.

    python -m benchmarks.inference   # BENCH_INF_TOKENS=64 _REPEATS=3

One transformers engine (CPU, one torch thread, batches of up to 32, the service's stream
settings) on two models in turn: stories260K, and a model of stories15M's shapes with random
weights and the Llama 2 tokenizer (a forward step 7x longer, closer to what a served model
costs). In-process: N concurrent
callers of `engine.generate` on the engine's own event loop. Through gRPC: the same engine
behind the real server on loopback, and N client threads streaming (`GenerateStream`) from a
separate process, as a client would. Each caller sends its requests (16 on stories260K, 8 on
the other) one after another, greedy, BENCH_INF_TOKENS tokens each, on prompts that differ
per caller, after one untimed round at that concurrency (so both sides start from batches of
N). N is 1, 8 and 32; the two sides alternate, median of the repeats. overhead_N =
1 - grpc / in-process. The headline figures are stories260K's, the worst case.
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
TOKENS = int(os.environ.get("BENCH_INF_TOKENS", "64"))
REPEATS = int(os.environ.get("BENCH_INF_REPEATS", "3"))
CLIENTS = (1, 8, 32)
MAX_BATCH = 32


def prompt(client: int, request: int) -> str:
    return f"Once upon a time, child {client} found toy {request} and"


def stories15m(directory: Path) -> Path:
    """stories15M's shapes (llama2.c), random weights, the Llama 2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=288, intermediate_size=768,
                         num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6,
                         max_position_embeddings=1024)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(SHARED / "models" / "llama2-tokenizer").save_pretrained(directory)
    return directory


def _client(address: str, clients: int, requests: int, models: list[str]) -> tuple[int, float]:
    """N threads, each streaming its requests after a warm one, caller i asking for model
    i mod len(models): completion tokens and seconds."""
    from pipeline.inference_api import inference_pb2 as pb
    from pipeline.inference_client import InferenceClient

    with InferenceClient(address) as client:
        counts = [0] * clients
        warm = threading.Barrier(clients + 1)

        def stream(i: int, j: int) -> int:
            params = pb.SamplingParams(max_tokens=TOKENS)
            model = models[i % len(models)]
            request = pb.GenerateRequest(prompt=prompt(i, j), model=model, sampling=params)
            return sum(chunk.usage.completion_tokens
                       for chunk in client.stream_chunks(client.stub.GenerateStream, request)
                       if chunk.HasField("usage"))  # fmt: skip

        def run(i: int) -> None:
            stream(i, -1)
            warm.wait()
            for j in range(requests):
                counts[i] += stream(i, j)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        warm.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        return sum(counts), time.perf_counter() - started


def through_grpc(
    address: str, clients: int, requests: int, models: tuple[str, ...] = ("base",)
) -> float:
    """The clients in a process of their own (`--client`), as a client would be."""
    out = subprocess.run(  # noqa: S603 - this module
        [sys.executable, "-m", "benchmarks.inference", "--client", address, str(clients),
         str(requests), ",".join(models)],
        capture_output=True, text=True, check=True, timeout=900,
    ).stdout.split()  # fmt: skip
    return int(out[0]) / float(out[1])


def in_process(
    server: object, clients: int, requests: int, models: tuple[str, ...] = ("base",)
) -> float:
    from services.inference.core import Sampling
    from services.inference.engine import Request

    engine = server.engine  # type: ignore[attr-defined]

    async def caller(i: int, warm: asyncio.Barrier) -> int:
        n = 0
        for j in range(-1, requests):
            if j == 0:
                await warm.wait()
            model = models[i % len(models)]
            adapter = None if model == "base" else model
            request = Request(engine.encode(prompt(i, j)), adapter, Sampling(TOKENS))
            async for step in engine.generate(request):
                n += len(step.token_ids) if j >= 0 else 0
        return n

    async def everyone() -> tuple[int, float]:
        warm = asyncio.Barrier(clients + 1)
        callers = [asyncio.create_task(caller(i, warm)) for i in range(clients)]
        await warm.wait()
        started = time.perf_counter()
        counts = await asyncio.gather(*callers)
        return sum(counts), time.perf_counter() - started

    tokens, seconds = server.run(everyone())  # type: ignore[attr-defined]
    return tokens / seconds  # type: ignore[no-any-return]


def measure(model: str, requests: int, scratch: Path) -> dict[str, float]:
    from pipeline.blobstore import open_store
    from pipeline.settings import BlobSettings
    from services.inference.config import InferenceSettings
    from tests.support.inference import Server

    scratch.mkdir()
    blobs = open_store(BlobSettings(store_uri=scratch.as_uri()))
    results: dict[int, dict[str, list[float]]] = {n: {"grpc": [], "local": []} for n in CLIENTS}
    defaults = InferenceSettings.model_fields  # the service's stream settings
    interval_s = defaults["stream_interval_ms"].default / 1000
    per_s = defaults["stream_messages_per_s"].default
    with Server(model, blobs, scratch, max_batch_size=MAX_BATCH, stream_interval_s=interval_s,
                stream_messages_per_s=per_s) as server:  # fmt: skip
        for repeat in range(REPEATS):
            for n in CLIENTS:
                results[n]["local"].append(in_process(server, n, requests))
                results[n]["grpc"].append(through_grpc(server.address, n, requests))
                print(f"{Path(model).name} {repeat + 1}/{REPEATS} clients {n}: in-process "
                      f"{results[n]['local'][-1]:,.0f} tokens/s, gRPC "
                      f"{results[n]['grpc'][-1]:,.0f} tokens/s", flush=True)  # fmt: skip
    summary: dict[str, float] = {}
    for n in CLIENTS:
        local = statistics.median(results[n]["local"])
        remote = statistics.median(results[n]["grpc"])
        summary[f"overhead_{n}"] = round(1 - remote / local, 4)
        summary[f"tokens_per_s_{n}"] = round(remote, 1)
        summary[f"in_process_tokens_per_s_{n}"] = round(local, 1)
    return summary


def main() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    with tempfile.TemporaryDirectory() as scratch:
        small = measure(str((SHARED / "models" / "stories260K").resolve()), 16,
                        Path(scratch) / "260k")  # fmt: skip
        shaped = measure(str(stories15m(Path(scratch) / "stories15M")), 8,
                         Path(scratch) / "15m")  # fmt: skip
    summary: dict[str, object] = {**small, "stories15M_shapes": shaped}
    summary |= {"max_tokens": TOKENS, "requests_per_client": {"stories260K": 16,
                "stories15M_shapes": 8}, "repeats": REPEATS, "engine": "transformers",
                "max_batch_size": MAX_BATCH}  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        print(*_client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(",")))
    else:
        main()
