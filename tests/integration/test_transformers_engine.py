"""The transformers engine's batcher on stories260K: before starting a batch smaller than the
last one, it waits (up to its limit) for the last batch's callers to come back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.inference.core import Sampling
from services.inference.engine import Request
from services.inference.transformers_engine import TransformersEngine, _Row

pytestmark = pytest.mark.integration


@pytest.fixture
def model(test_data: Path) -> str:
    return str(test_data / "models" / "stories260K")


@pytest.fixture
def batches() -> Iterator[list[int]]:
    """The size of every batch the engines of the test run."""
    sizes: list[int] = []
    real = TransformersEngine._run

    def run(engine: TransformersEngine, rows: list[_Row]) -> None:
        sizes.append(len(rows))
        real(engine, rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransformersEngine, "_run", run)
        yield sizes


async def answer(engine: TransformersEngine, prompt: str, after_s: float = 0.0) -> int:
    await asyncio.sleep(after_s)
    request = Request(engine.encode(prompt), None, Sampling(max_tokens=8))
    return sum([len(step.token_ids) async for step in engine.generate(request)])


async def three_then_three(engine: TransformersEngine) -> None:
    """A batch of three (the model held while they queue), then three more callers that
    come back 0.5 s apart."""
    with engine._lock:  # the first request's batch waits for the model: the rest queue
        first = asyncio.create_task(answer(engine, "One day"))
        await asyncio.sleep(0.2)
        rest = [asyncio.create_task(answer(engine, f"Tom had {n} cats")) for n in (1, 2, 3)]
        await asyncio.sleep(0.2)
    assert await asyncio.gather(first, *rest) == [8] * 4
    again = [answer(engine, f"Sue had {n} dogs", after_s=0.5 * n) for n in range(3)]
    assert await asyncio.gather(*again) == [8] * 3


@pytest.mark.parametrize(("wait_s", "expected"), [(5.0, [1, 3, 3]), (0.0, [1, 3, 1, 1, 1])])
def test_a_batch_waits_for_the_callers_of_the_last_one(
    model: str, batches: list[int], wait_s: float, expected: list[int]
) -> None:
    engine = TransformersEngine(model, max_batch_size=8, batch_wait_s=wait_s)
    try:
        asyncio.run(three_then_three(engine))
    finally:
        engine.close()
    assert batches == expected


def test_the_wait_ends_when_nobody_comes_back(model: str, batches: list[int]) -> None:
    engine = TransformersEngine(model, max_batch_size=8, batch_wait_s=0.3)

    async def four_then_one() -> None:
        with engine._lock:
            waiting = [asyncio.create_task(answer(engine, f"Ann saw {n} birds"))
                       for n in range(4)]  # fmt: skip
            await asyncio.sleep(0.2)
        await asyncio.gather(*waiting)
        # Alone, once the wait is over (the last batch's callers are not coming back).
        assert await asyncio.wait_for(answer(engine, "Then"), timeout=30) == 8

    try:
        asyncio.run(four_then_one())
    finally:
        engine.close()
    assert batches[-1] == 1
