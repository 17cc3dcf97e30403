"""Rate limits and budgets: token buckets on a controlled clock, the providers' header formats,
the limiter's pauses, and a budget that concurrent requests cannot overspend."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.synthesizer.ratelimit import (
    Budget,
    BudgetExhausted,
    Limiter,
    Price,
    TokenBucket,
    parse_duration,
    retry_after,
)
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


def test_bucket_holds_one_second_and_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(3000, clock=clock)  # 50/s
    assert bucket.capacity == 50
    bucket.take(50)
    assert bucket.wait_time(1) == pytest.approx(0.02)
    clock.now += 0.5
    assert bucket.wait_time(25) == 0
    assert bucket.wait_time(26) == pytest.approx(0.02)
    clock.now += 10
    assert bucket.wait_time(50) == 0  # never more than capacity
    bucket.take(50)
    assert bucket.wait_time(1) > 0


def test_a_request_larger_than_the_bucket_waits_for_a_full_one_then_overdraws() -> None:
    clock = Clock()
    bucket = TokenBucket(6000, clock=clock)  # tokens/min: capacity 100
    bucket.take(60)
    assert bucket.wait_time(500) == pytest.approx(0.6)  # until full, not forever
    clock.now += 0.6
    bucket.take(500)
    assert bucket.wait_time(1) == pytest.approx(4.01)  # the overdraft is paid back first


def test_give_returns_an_overestimate_and_empty_starts_from_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock=clock)  # 10/s
    bucket.take(10)
    bucket.give(4)
    assert bucket.wait_time(4) == 0
    bucket.empty()
    assert bucket.wait_time(1) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("2m59.56s", 179.56), ("1h2m", 3720.0),
     ("0.5", 0.5), ("", None), (None, None), ("soon", None), ("-1", None)],
)  # fmt: skip
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_prefers_milliseconds_then_seconds_then_resets() -> None:
    assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after({"retry-after": "2"}) == 2.0
    assert (
        retry_after({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "7.5s"}) == 7.5
    )
    assert retry_after({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after({}) is None


def test_limiter_paces_requests_at_the_rate() -> None:
    async def run() -> float:
        limiter = Limiter(requests_per_minute=1200, tokens_per_minute=None)  # 20/s, burst 20
        start = time.monotonic()
        await asyncio.gather(*(limiter.acquire(10) for _ in range(40)))
        return time.monotonic() - start

    elapsed = asyncio.run(run())
    assert 0.9 < elapsed < 3.0  # 20 at once, then 20 more at 20/s (upper bound: a loaded CI)


def test_limiter_pause_stops_everyone_and_headers_saying_none_left_pause_too() -> None:
    async def run() -> tuple[float, float]:
        limiter = Limiter(requests_per_minute=6000, tokens_per_minute=None)
        limiter.pause(0.3)
        start = time.monotonic()
        await limiter.acquire(1)
        paused = time.monotonic() - start
        limiter.observe(
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "200ms"}
        )
        start = time.monotonic()
        await limiter.acquire(1)
        return paused, time.monotonic() - start

    paused, observed = asyncio.run(run())
    assert 0.28 < paused < 2.0
    assert 0.18 < observed < 2.0


def test_budget_reserves_the_worst_case_and_settles_the_real_use() -> None:
    budget = Budget(max_tokens=1000, max_usd=None, price=None)
    a = budget.reserve(100, 300)
    b = budget.reserve(100, 300)
    with pytest.raises(BudgetExhausted) as info:
        budget.reserve(100, 300)  # 1200 > 1000 while both are in flight
    assert info.value.reason == "budget_exhausted"
    budget.settle(a, 100, 50)
    budget.settle(b, 0, 0)  # failed: nothing used
    assert budget.tokens == 150
    budget.reserve(100, 300)


def test_budget_in_dollars_at_the_price_table() -> None:
    price = Price(input=0.59, output=0.79)  # $/M tokens
    budget = Budget(max_tokens=None, max_usd=0.01, price=price)
    held = budget.reserve(1000, 1000)
    cost = budget.settle(held, 1000, 500)
    assert cost == pytest.approx((1000 * 0.59 + 500 * 0.79) / 1e6)
    with pytest.raises(BudgetExhausted):
        for _ in range(100):
            budget.settle(budget.reserve(5000, 1000), 5000, 1000)
    assert budget.usd <= 0.01
    with pytest.raises(ValueError, match="price"):
        Budget(max_tokens=None, max_usd=1.0, price=None)
