"""Wiring: settings, the engine, the gRPC server on an event loop of its own, and the worker
loop on `eval-results` (promotions) in the main thread until SIGTERM; then the server drains
(health NOT_SERVING first, so load balancers stop sending) and the engine stops."""

from __future__ import annotations

import asyncio
import logging
import threading

import grpc
import torch
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from pipeline import logs
from pipeline.blobstore import open_store
from pipeline.messages import EvalResult
from pipeline.settings import load
from pipeline.worker import run_service
from services.inference.adapters import Adapters
from services.inference.config import InferenceSettings
from services.inference.core import BASE, Model, Models
from services.inference.engine import Engine
from services.inference.metrics import InferenceMetrics
from services.inference.openai_bridge import OpenAIBridge, serve_http
from services.inference.promotion import Promotions
from services.inference.server import InferenceService, start

log = logging.getLogger("inference")


def _credentials(settings: InferenceSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    return grpc.ssl_server_credentials([pair])


def _engine(settings: InferenceSettings, device: str) -> Engine:
    if settings.engine == "vllm":
        from services.inference.vllm_engine import VLLMEngine  # vLLM's own environment

        return VLLMEngine(settings.base_model, max_loras=settings.vllm_max_loras,
                          max_lora_rank=settings.vllm_max_lora_rank,
                          max_model_len=settings.vllm_max_model_len,
                          options=settings.vllm_options)  # fmt: skip
    from services.inference.transformers_engine import TransformersEngine

    return TransformersEngine(settings.base_model, device=device,
                              max_batch_size=settings.max_batch_size,
                              batch_wait_s=settings.batch_wait_ms / 1000)  # fmt: skip


def main() -> None:
    settings = load(InferenceSettings)
    logs.configure(settings.service_name, settings.log_level)
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = _engine(settings, device)
    models = Models(Model(BASE, "base", settings.base_model))
    adapters = Adapters(engine, models, open_store(settings.blobs), settings.work_dir / "adapters")
    interval_s = settings.stream_interval_ms / 1000
    registry = CollectorRegistry()
    service = InferenceService(engine, models, adapters, settings.limits,
                               settings.max_concurrency, interval_s,
                               settings.stream_messages_per_s,
                               InferenceMetrics(settings.service_name, registry))  # fmt: skip
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc", daemon=True)
    thread.start()
    address = f"{settings.host}:{settings.port}"
    serving = start(service, address, token=settings.token(), credentials=_credentials(settings))
    server, port, healthy = asyncio.run_coroutine_threadsafe(serving, loop).result()
    log.info("serving gRPC on %s:%d (%s, base %s)", settings.host, port, device,
             settings.base_model)  # fmt: skip
    if settings.openai_port is not None:
        bridge = OpenAIBridge(service, settings.token()).app()
        bound = asyncio.run_coroutine_threadsafe(
            serve_http(bridge, settings.host, settings.openai_port), loop
        ).result()
        log.info("serving the OpenAI-compatible API on http://%s:%d/v1", settings.host, bound)
    promotions = Promotions(adapters, models, loop, max_adapters=settings.max_adapters)
    try:
        run_service(settings, EvalResult, promotions.handle, registry=registry)
    finally:

        async def drain() -> None:
            await healthy.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await server.stop(grace=10)
            # On the loop's thread: vLLM's output handler is a task of this loop, and
            # cancelling it from another thread lets it log the engine's death first.
            engine.close()

        asyncio.run_coroutine_threadsafe(drain(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
