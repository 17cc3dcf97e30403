"""Wiring: settings, the blob store, the judge (checked now, not at the first checkpoint), the
evaluator's handler and the worker loop (which publishes each `eval-results` message) until
SIGTERM. See evaluation.py."""

from __future__ import annotations

import asyncio
import logging

import openai
from prometheus_client import CollectorRegistry

from pipeline.blobstore import open_store
from pipeline.messages import Checkpoint
from pipeline.settings import load
from pipeline.worker import run_service
from services.evaluator.config import EvaluatorSettings
from services.evaluator.evaluation import Evaluator
from services.evaluator.judge import Judge
from services.evaluator.metrics import EvaluatorMetrics

log = logging.getLogger("evaluator")


def _judge(settings: EvaluatorSettings) -> Judge | None:
    if settings.judge_base_url is None or settings.judge_model is None:
        return None
    key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else "none"
    client = openai.AsyncOpenAI(api_key=key, base_url=settings.judge_base_url,
                                timeout=settings.judge_timeout_s, max_retries=5)  # fmt: skip
    _check(settings.judge_base_url, key, settings.judge_model)
    return Judge(client, settings.judge_model, limit=settings.judge_limit,
                 concurrency=settings.judge_concurrency)  # fmt: skip


def _check(base_url: str, key: str, model: str) -> None:
    """A bad key or model is the service's configuration, not any checkpoint's fault: refuse
    to start. A judge that cannot be reached yet may come up later."""

    async def ask() -> None:
        async with openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0,
                                      timeout=30) as client:  # fmt: skip
            await client.chat.completions.create(
                model=model, max_tokens=1, messages=[{"role": "user", "content": "Say A."}]
            )

    try:
        asyncio.run(ask())
    except (openai.AuthenticationError, openai.PermissionDeniedError,
            openai.NotFoundError) as exc:  # fmt: skip
        raise SystemExit(f"evaluator: the judge {model} at {base_url}: {exc}") from None
    except openai.OpenAIError as exc:
        log.warning("the judge at %s does not answer yet: %s", base_url, exc)


def main() -> None:
    settings = load(EvaluatorSettings)
    registry = CollectorRegistry()
    metrics = EvaluatorMetrics(settings.service_name, registry)
    evaluator = Evaluator(settings, open_store(settings.blobs), metrics, _judge(settings))
    try:
        run_service(settings, Checkpoint, evaluator.handle, registry=registry)
    finally:
        evaluator.close()  # what the loop gave up on at its stop grace
