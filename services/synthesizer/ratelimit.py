"""Keeping to a provider's limits: token buckets for requests/min and tokens/min, pauses the
provider asks for (429 Retry-After, x-ratelimit headers), and a per-run budget of tokens and
money that is reserved before a request and settled with the real usage after it."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.errors import BadInput

Clock = Callable[[], float]


class TokenBucket:
    """`per_minute` units refilled continuously, at most `burst_s` seconds' worth held.

    Providers enforce per-minute limits in sub-minute quanta (OpenAI: 3,000/min is about 50
    per second), so a bucket holding a whole minute would be refused at once; one second's
    worth is what they let through.
    """

    def __init__(self, per_minute: float, *, burst_s: float = 1.0, clock: Clock = time.monotonic):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, not {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self._clock = clock
        self._level = self.capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self, n: float) -> float:
        """Seconds until `n` units may be taken (a request larger than the bucket waits for a
        full bucket and then overdraws it, so it is slowed, never refused)."""
        self._refill()
        missing = min(n, self.capacity) - self._level
        return max(0.0, missing / self.rate)

    def take(self, n: float) -> None:
        self._refill()
        self._level -= n

    def give(self, n: float) -> None:
        """Return units taken on an estimate that proved too high (or take more: n < 0)."""
        self._refill()
        self._level = min(self.capacity, self._level + n)

    def empty(self) -> None:
        """The provider says we are ahead of it: start from nothing."""
        self._refill()
        self._level = min(self._level, 0.0)


class Limiter:
    """One per provider and process: every request of every task waits its turn here."""

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.requests = (
            TokenBucket(requests_per_minute, clock=clock) if requests_per_minute else None
        )
        self.tokens = TokenBucket(tokens_per_minute, clock=clock) if tokens_per_minute else None
        self._clock = clock
        self._paused_until = 0.0
        # Waiters go one at a time, in arrival order: no request is starved by later ones.
        self._turn = asyncio.Lock()
        #: Seconds spent waiting for the limiter, for the metrics.
        self.waited_s = 0.0

    async def acquire(self, tokens: int) -> None:
        async with self._turn:
            start = self._clock()
            while (delay := self._delay(tokens)) > 0:
                await asyncio.sleep(delay)
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(tokens)
            self.waited_s += self._clock() - start

    def _delay(self, tokens: int) -> float:
        delays = [self._paused_until - self._clock()]
        if self.requests:
            delays.append(self.requests.wait_time(1))
        if self.tokens:
            delays.append(self.tokens.wait_time(tokens))
        return max(delays)

    def settle(self, estimated: int, actual: int) -> None:
        if self.tokens:
            self.tokens.give(estimated - actual)

    def pause(self, seconds: float) -> None:
        """Nobody sends for `seconds` (the provider said so), and the buckets start empty."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.empty()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Follow the provider's own count (x-ratelimit-*): when it says nothing remains, wait
        for its reset even if our bucket thinks otherwise (other clients share the key)."""
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and reset is not None and _number(remaining) == 0:
                self.pause(reset)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """How long a 429 asks us to wait: retry-after-ms, retry-after (seconds or a date is not
    used by these providers), or the x-ratelimit reset of what ran out."""
    if (ms := _number(headers.get("retry-after-ms"))) is not None:
        return ms / 1000.0
    if (seconds := _number(headers.get("retry-after"))) is not None:
        return seconds
    resets = [
        parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) for kind in ("requests", "tokens")
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """OpenAI's and Groq's reset format ("20ms", "1s", "6m0s", "2m59.56s") in seconds."""
    if not text:
        return None
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return _number(text)
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


# --- budget -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


class BudgetExhausted(BadInput):
    """The run has spent what it may: its remaining chunks go to the DLQ, replayable later."""

    reason = "budget_exhausted"


@dataclass(frozen=True)
class Reservation:
    tokens: int
    usd: float


class Budget:
    """What one run may spend in tokens and dollars. A request reserves its worst case
    (prompt estimate + max_tokens) before it is sent, so concurrent requests cannot overspend;
    the real usage replaces the reservation when the answer arrives."""

    def __init__(self, max_tokens: int | None, max_usd: float | None, price: Price | None) -> None:
        if max_usd is not None and price is None:
            raise ValueError("a budget in dollars needs the model's price")
        self.max_tokens = max_tokens
        self.max_usd = max_usd
        self.price = price or Price(0.0, 0.0)
        self.tokens = 0
        self.usd = 0.0

    def reserve(self, prompt_tokens: int, max_completion: int) -> Reservation:
        held = Reservation(
            prompt_tokens + max_completion, self.price.cost(prompt_tokens, max_completion)
        )
        if self.max_tokens is not None and self.tokens + held.tokens > self.max_tokens:
            raise BudgetExhausted(
                f"token budget spent: {self.tokens} of {self.max_tokens} used or reserved"
            )
        if self.max_usd is not None and self.usd + held.usd > self.max_usd:
            raise BudgetExhausted(
                f"money budget spent: ${self.usd:.4f} of ${self.max_usd:.2f} used or reserved"
            )
        self.tokens += held.tokens
        self.usd += held.usd
        return held

    def settle(self, held: Reservation, prompt_tokens: int, completion_tokens: int) -> float:
        """Replace a reservation by what was used; returns the request's cost in dollars."""
        cost = self.price.cost(prompt_tokens, completion_tokens)
        self.tokens += prompt_tokens + completion_tokens - held.tokens
        self.usd += cost - held.usd
        return cost
