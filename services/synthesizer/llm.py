"""Chat completions from OpenAI, Groq or any OpenAI-compatible server, through their own SDKs,
at the provider's full rate and no faster.

The SDKs' own retries are off (max_retries=0): a 429 must pause every request of the process,
not only the one that got it, so retries happen here, where the limiter is. Errors leave as the
pipeline's own: `Retryable` when the provider may recover, `BadInput` when it refuses this
chunk's request itself; a bad key or model is found at start-up (`check`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import groq
import openai

from pipeline.errors import BadInput, Retryable
from services.synthesizer.ratelimit import Budget, Limiter, retry_after

log = logging.getLogger("synthesizer.llm")

Provider = Literal["openai", "groq", "openai-compatible"]
Structured = Literal["json_schema", "json_object", "none"]
Message = dict[str, str]

_RATE_LIMITED = (openai.RateLimitError, groq.RateLimitError)
_STATUS = (openai.APIStatusError, groq.APIStatusError)
_TRANSIENT = (
    openai.APIConnectionError,  # includes timeouts
    groq.APIConnectionError,
    openai.APIResponseValidationError,  # a 200 whose body is not a completion
    groq.APIResponseValidationError,
)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    usage: Usage


class Events(Protocol):
    """What the client reports (the service's metrics)."""

    def request(self, outcome: str, seconds: float) -> None: ...
    def used(self, usage: Usage) -> None: ...


class ConfigError(RuntimeError):
    """At start-up: the provider cannot serve this configuration (key, model, address)."""


def sdk(provider: Provider, api_key: str, base_url: str | None, timeout_s: float) -> Any:
    """The provider's own async client, with its retries off (ours honour 429 for everyone)."""
    if provider == "groq":
        return groq.AsyncGroq(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)


class ChatClient:
    def __init__(
        self,
        client: Any,
        model: str,
        limiter: Limiter,
        events: Events,
        *,
        structured: Structured,
        attempts: int = 6,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.client = client
        self.model = model
        self.limiter = limiter
        self.events = events
        self.structured = structured
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    async def check(self) -> None:
        """At start-up: the endpoint answers, the key is accepted and the model is served."""
        try:
            # Awaited, both SDKs give one page (openai's is also an async paginator).
            models = [m.id for m in (await self.client.models.list()).data]
        except (openai.AuthenticationError, groq.AuthenticationError) as exc:
            raise ConfigError(f"the provider refused the API key: {exc}") from exc
        except (*_TRANSIENT, *_STATUS) as exc:
            raise ConfigError(f"cannot list the provider's models: {exc}") from exc
        if models and self.model not in models:  # some compatible servers list nothing
            raise ConfigError(
                f"model {self.model!r} is not served here; available: {', '.join(models[:20])}"
            )

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float,
        max_tokens: int,
        budget: Budget,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        estimate = sum(len(m["content"]) for m in messages) // 4 + 1
        held = budget.reserve(estimate, max_tokens)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if schema is not None and self.structured == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": dict(schema), "strict": True},
            }
        elif schema is not None and self.structured == "json_object":
            request["response_format"] = {"type": "json_object"}
        try:
            answer = await self._send(request, estimate + max_tokens)
        except BaseException:
            budget.settle(held, 0, 0)  # nothing was used: release the reservation
            raise
        text, finish_reason, prompt, completion = answer
        # Some compatible servers report no usage: count the answer approximately.
        prompt = estimate if prompt is None else prompt
        completion = len(text) // 4 + 1 if completion is None else completion
        self.limiter.settle(estimate + max_tokens, prompt + completion)
        usage = Usage(prompt, completion, budget.settle(held, prompt, completion))
        self.events.used(usage)
        return Completion(text, finish_reason, usage)

    async def _send(self, request: dict[str, Any], tokens: int) -> _Answer:
        """One request, retried here on 429 (the whole process pauses as told) and on 5xx,
        connection failures and answers that are not completions (backoff with full jitter);
        then Retryable, for the worker loop."""
        for attempt in range(1, self.attempts + 1):
            await self.limiter.acquire(tokens)
            start = time.perf_counter()
            try:
                raw = await self.client.chat.completions.with_raw_response.create(**request)
                body = raw.parse()
                if inspect.isawaitable(body):  # groq's raw response parses asynchronously
                    body = await body
                answer = _answer(body)
            except _RATE_LIMITED as exc:
                self.events.request("rate_limited", time.perf_counter() - start)
                if _code(exc) == "insufficient_quota":  # billing, not rate: pausing won't help
                    raise Retryable(f"out of quota: {exc}", reason="provider_refused") from exc
                self.limiter.pause(retry_after(exc.response.headers) or self._backoff(attempt))
                error: Exception = exc
                continue
            except _STATUS as exc:
                self.events.request(f"http_{exc.status_code}", time.perf_counter() - start)
                if (failed := _failed_generation(exc)) is not None:
                    # Groq's JSON mode refuses the model's own invalid JSON with a 400 that
                    # carries it: give it to the parser and its repair, like any bad answer.
                    return failed, "json_invalid", None, None
                _raise_if_permanent(exc)
                error = exc
            except (*_TRANSIENT, ValueError) as exc:  # ValueError: not JSON, not a completion
                self.events.request("bad_response", time.perf_counter() - start)
                error = exc
            else:
                self.events.request("ok", time.perf_counter() - start)
                self.limiter.observe(raw.headers)
                return answer
            await asyncio.sleep(self._backoff(attempt))
        raise Retryable(
            f"{self.attempts} attempts failed, last: {error}", reason=_reason(error)
        ) from error

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))  # noqa: S311 - jitter


#: An answer's text, finish reason, and prompt and completion tokens when the server says.
_Answer = tuple[str, str, int | None, int | None]


def _answer(body: Any) -> _Answer:
    """What a parsed body holds, or ValueError when it is not a chat completion (an HTML page
    from a proxy, {"error": ...} with a 200, a completion without choices)."""
    choices = getattr(body, "choices", None) or [None]
    message = getattr(choices[0], "message", None)
    if message is None:
        raise ValueError(f"a 200 that is not a chat completion: {str(body)[:200]!r}")
    usage = getattr(body, "usage", None)
    return (
        message.content or "",
        choices[0].finish_reason or "",
        usage.prompt_tokens if usage else None,
        usage.completion_tokens if usage else None,
    )


def _code(exc: openai.APIStatusError | groq.APIStatusError) -> str | None:
    """The error body's code (openai's `body` is the inner object, groq's the whole one)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    return inner.get("code") if isinstance(inner, dict) else None


def _failed_generation(exc: openai.APIStatusError | groq.APIStatusError) -> str | None:
    if exc.status_code != 400 or _code(exc) != "json_validate_failed":
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    failed = inner.get("failed_generation") if isinstance(inner, dict) else None
    return failed if isinstance(failed, str) else ""


def _raise_if_permanent(exc: openai.APIStatusError | groq.APIStatusError) -> None:
    """A request the provider will refuse again: because of this chunk (too long, say: the
    chunk goes to the DLQ) or because of us (key, model: retried, then the DLQ, replayable
    once fixed; the start-up check catches most of these before any chunk)."""
    if exc.status_code in (400, 413, 422):
        raise BadInput(f"the provider rejected the request: {exc}", reason="provider_rejected")
    if exc.status_code in (401, 403, 404):
        raise Retryable(f"the provider refused us: {exc}", reason="provider_refused")


def _reason(error: Exception) -> str:
    if isinstance(error, _RATE_LIMITED):
        return "rate_limited"
    if isinstance(error, _STATUS):
        return "provider_error"
    return "provider_unreachable"
