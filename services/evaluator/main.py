"""Wiring: settings, the blob store, the evaluator's handler and the worker loop (which
publishes each `eval-results` message) until SIGTERM. See evaluation.py."""

from __future__ import annotations

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


def _judge(settings: EvaluatorSettings) -> Judge | None:
    if settings.judge_base_url is None or settings.judge_model is None:
        return None
    key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else "none"
    client = openai.AsyncOpenAI(api_key=key, base_url=settings.judge_base_url,
                                timeout=settings.judge_timeout_s, max_retries=5)  # fmt: skip
    return Judge(client, settings.judge_model, limit=settings.judge_limit,
                 concurrency=settings.judge_concurrency)  # fmt: skip


def main() -> None:
    settings = load(EvaluatorSettings)
    registry = CollectorRegistry()
    metrics = EvaluatorMetrics(settings.service_name, registry)
    evaluator = Evaluator(settings, open_store(settings.blobs), metrics, _judge(settings))
    run_service(settings, Checkpoint, evaluator.handle, registry=registry)
