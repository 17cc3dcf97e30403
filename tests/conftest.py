"""Shared fixtures: one embedded broker per session, unique topics per test, the test data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# Torch and numpy spin up one thread per core; on a loaded 2-core machine that is 30x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never download: the hub libraries (transformers, datasets, lm-eval) must not try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from pipeline import bus
from pipeline.embedded import Broker
from pipeline.settings import KafkaSettings

if TYPE_CHECKING:
    from tests.support.trainer import Trained

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The shared real data (PDFs, web pages, ARC, models): DISTILLERY_TEST_DATA or ../shared."""
    root = Path(os.environ.get("DISTILLERY_TEST_DATA", REPO_ROOT.parent / "shared"))
    if not (root / "data").is_dir():
        pytest.fail(f"test data not found at {root}: set DISTILLERY_TEST_DATA")
    return root


@pytest.fixture(scope="session")
def paper_adapter(test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """stories260K with a LoRA adapter trained 300 steps on pairs from the shared papers,
    and the snapshot it was trained on (its held-out documents unseen)."""
    from tests.support.trainer import train_on_papers  # torch and TRL: only when asked

    return train_on_papers(test_data, tmp_path_factory.mktemp("paper-adapter"), steps=300)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    with Broker() as b:
        yield b


@pytest.fixture
def kafka(broker: Broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap)


@pytest.fixture
def make_topic(kafka: KafkaSettings) -> Callable[..., str]:
    """Create a topic with a unique name (and its .dlq), so tests never see each other's data."""

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        bus.ensure_topics(kafka, {name: partitions, name + ".dlq": 1})
        return name

    return make
