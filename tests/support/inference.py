"""The inference server in the test's process, on loopback: the real grpc.aio server and an
engine (transformers unless given) on an event loop thread, as main.py runs them, without the
worker loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from pipeline.blobstore import BlobStore
from pipeline.inference_api import inference_pb2 as pb
from pipeline.inference_client import InferenceClient
from services.inference.adapters import Adapters
from services.inference.core import BASE, Limits, Model, Models
from services.inference.engine import Engine
from services.inference.server import InferenceService, start
from services.inference.transformers_engine import TransformersEngine

T = TypeVar("T")


class Server:
    def __init__(
        self,
        base_model: str,
        blobs: BlobStore,
        work: Path,
        *,
        token: str | None = None,
        limits: Limits | None = None,
        max_concurrency: int = 64,
        max_batch_size: int = 16,
        stream_interval_s: float = 0.0,
        stream_messages_per_s: float = 0.0,
        engine: Engine | None = None,
    ) -> None:
        self.token = token
        self.engine = engine or TransformersEngine(base_model, max_batch_size=max_batch_size)
        self.models = Models(Model(BASE, "base", base_model))
        self.adapters = Adapters(self.engine, self.models, blobs, work / "adapters")
        limits = limits or Limits(max_prompt_tokens=256, max_tokens=512, default_max_tokens=32)
        self.service = InferenceService(self.engine, self.models, self.adapters, limits,
                                        max_concurrency, stream_interval_s,
                                        stream_messages_per_s)  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server, self.port, self.health = self.run(
            start(self.service, "127.0.0.1:0", token=token)
        )
        self.address = f"127.0.0.1:{self.port}"

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=120)

    def close(self) -> None:
        async def stop() -> None:
            await self.server.stop(grace=1)
            self.engine.close()  # on the loop's thread, as main.py does

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_answer(
    client: InferenceClient, prompt: str, log: Path, *, max_tokens: int, timeout_s: float
) -> pb.GenerateResponse:
    """The service's first answer, once it is up (loading a model takes a while); the end
    of its log if it never comes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.generate(prompt, max_tokens=max_tokens)
        except grpc.RpcError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
