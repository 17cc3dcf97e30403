"""Wiring: settings, the recipe, the blob store, the scheduler on its own thread and the
worker loop (which hands the scheduler each pair) until SIGTERM. See scheduler.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from transformers import AutoConfig

from pipeline import bus, logs, topics
from pipeline.blobstore import BlobStore, open_store
from pipeline.messages import Message, Pair, encode
from pipeline.settings import load
from pipeline.worker import Worker
from services.trainer.config import TrainerSettings
from services.trainer.metrics import TrainerMetrics
from services.trainer.recipe import Recipe, load_recipe
from services.trainer.scheduler import Scheduler
from services.trainer.store import TrainerStore


def _publisher(settings: TrainerSettings) -> tuple[Callable[[Message], None], Callable[[], None]]:
    """Send one message and wait for its acknowledgement (acks=all); and a closer."""
    producer = bus.producer(settings.kafka)

    def publish(message: Message) -> None:
        producer.send(topics.CHECKPOINTS, key=message.key(), value=encode(message)).get(60)

    return publish, producer.close


def _recipe(settings: TrainerSettings) -> Recipe:
    """The recipe, its base model checked now rather than after the first snapshot."""
    try:
        recipe = load_recipe(Path(settings.recipe))
    except ValueError as exc:
        raise SystemExit(f"trainer: TRAINER_RECIPE: {exc}") from None
    if settings.base_model:
        recipe = recipe.model_copy(update={"base_model": settings.base_model})
    try:
        AutoConfig.from_pretrained(recipe.base_model)
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"trainer: base model {recipe.base_model!r} cannot be loaded: {exc}"
        ) from None
    return recipe


def main() -> None:
    settings = load(TrainerSettings)
    logs.configure(settings.service_name, settings.log_level)
    recipe = _recipe(settings)
    registry = CollectorRegistry()
    metrics = TrainerMetrics(settings.service_name, registry)
    blobs: BlobStore = open_store(settings.blobs)
    publish, close = _publisher(settings)
    try:
        scheduler = Scheduler(settings, TrainerStore(blobs), recipe, publish, metrics)
    except (OSError, ValueError) as exc:
        close()
        raise SystemExit(f"trainer: TRAINER_TERMS_TABLE: {exc}") from None
    worker = Worker(settings, Pair, scheduler.handle, registry=registry)
    thread = threading.Thread(target=scheduler.loop, name="scheduler", daemon=True)
    thread.start()
    try:
        worker.run()  # until SIGTERM
    finally:
        scheduler.stop()
        thread.join()
        close()
