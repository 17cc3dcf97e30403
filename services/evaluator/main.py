"""Wiring: settings, the blob store, the evaluator's handler and the worker loop (which
publishes each `eval-results` message) until SIGTERM. See evaluation.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.blobstore import open_store
from pipeline.messages import Checkpoint
from pipeline.settings import load
from pipeline.worker import run_service
from services.evaluator.config import EvaluatorSettings
from services.evaluator.evaluation import Evaluator
from services.evaluator.metrics import EvaluatorMetrics


def main() -> None:
    settings = load(EvaluatorSettings)
    registry = CollectorRegistry()
    metrics = EvaluatorMetrics(settings.service_name, registry)
    evaluator = Evaluator(settings, open_store(settings.blobs), metrics)
    run_service(settings, Checkpoint, evaluator.handle, registry=registry)
