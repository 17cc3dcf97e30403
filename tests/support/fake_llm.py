"""A fake of the paid LLM APIs (OpenAI's chat completions and Groq's OpenAI-compatible copy)
on 127.0.0.1, speaking their real wire protocol: bearer auth, per-minute rate limits with the
same headers, OpenAI's error bodies, injected faults, and deterministic grounded answers.

In a test, ``with FakeLLM(latency=0.05, rpm=600) as fake:`` and point ``openai.AsyncOpenAI`` at
``fake.openai_base_url`` or ``groq.AsyncGroq`` at ``fake.groq_base_url``. For a benchmark,
``python -m tests.support.fake_llm --port P --latency 0.3 --rpm 3000`` prints ``ready URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web

Request = dict[str, Any]
#: The request JSON in, the assistant's content out. Runs on the server's loop: keep it quick.
Responder = Callable[[Request], str]


class Fault(StrEnum):
    """What goes wrong with one completion; `inject()` takes these or their values."""

    RATE_LIMIT = "429"  # 429 with retry-after (the `retry_after` given), whatever the bucket holds
    SERVER_ERROR = "500"  # OpenAI's "The server had an error while processing your request"
    UNAVAILABLE = "503"  # the engine is overloaded
    MALFORMED = "malformed"  # 200, the content is prose: neither JSON nor the Triple format
    TRUNCATED = "truncated"  # 200, the content cut at half, finish_reason "length"
    EMPTY = "empty"  # 200, the content is ""
    BAD_BODY = "bad_body"  # 200, application/json, but the body is cut at half: not JSON
    HANG = "hang"  # answers only after `hang` seconds, longer than any client timeout


_STATUS_FAULTS = {Fault.RATE_LIMIT: 429, Fault.SERVER_ERROR: 500, Fault.UNAVAILABLE: 503}
#: All but HANG, which would stall whoever drew it.
_RANDOM_FAULTS = tuple(f for f in Fault if f is not Fault.HANG)
_MALFORMED = "Sure! The text covers several interesting points; here they are in my own words."


@dataclass(frozen=True)
class Stats:
    """What the fake has seen, as a copy taken at one instant."""

    requests: int  # completion requests received, whatever became of them
    by_status: dict[int, int]  # completion responses by status code
    rate_limited: int  # 429s sent, from the buckets and from injected faults
    faults: dict[str, int]  # faults served, by Fault value
    max_in_flight: int  # most completion requests being handled at once
    accepted_at: tuple[float, ...]  # time.monotonic() at each admitted completion
    bodies: tuple[Request, ...]  # the last 1000 completion request bodies, as received


class _Bucket:
    """A per-minute limit as a token bucket that refills continuously and holds one second's
    worth (OpenAI enforces per-minute limits in sub-minute quanta, so bursts are refused).
    It holds at least 1, or a limit under 60/min would refuse everything."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def wait(self, cost: int, now: float) -> float:
        """Seconds until `cost` can be taken; 0 if now. A cost over one second's worth waits
        for a full bucket and leaves it in debt, so the per-minute average still holds."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        short = min(cost, self.capacity) - self.level
        return short / self.rate if short > 1e-9 else 0.0

    def headers(self, kind: str) -> dict[str, str]:
        """OpenAI's x-ratelimit-* trio; remaining is what may be sent right now."""
        full_in = max(0.0, (self.capacity - self.level) / self.rate)
        return {
            f"x-ratelimit-limit-{kind}": str(self.per_minute),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level + 1e-9))),
            f"x-ratelimit-reset-{kind}": _duration(full_in),
        }


class FakeLLM:
    """The fake API on its own event loop in a background thread; a context manager."""

    def __init__(
        self,
        *,
        key: str = "test-key",
        models: tuple[str, ...] | None = None,  # None: any model is served
        latency: float = 0.0,  # seconds every admitted completion takes
        rpm: int | None = None,
        tpm: int | None = None,
        responder: Responder | None = None,  # None: grounded_responder
        fault_rate: float = 0.0,  # chance that a completion gets one of random_faults
        random_faults: Iterable[Fault | str] = _RANDOM_FAULTS,
        seed: int = 0,
        retry_after: float = 1.0,  # what an injected 429 asks the client to wait
        hang: float = 3600.0,
        port: int = 0,  # 0: any free port
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None (no limit), not {value}")
        if latency < 0 or retry_after <= 0 or hang <= 0:
            raise ValueError("latency must be >= 0, retry_after and hang > 0")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], not {fault_rate}")
        self.key, self.models, self.latency = key, models, latency
        self.responder = responder or grounded_responder
        self.fault_rate, self.retry_after, self.hang = fault_rate, retry_after, hang
        self.random_faults = tuple(Fault(f) for f in random_faults)
        if fault_rate and not self.random_faults:
            raise ValueError("fault_rate > 0 needs at least one of random_faults")
        self._buckets = {k: _Bucket(v) for k, v in (("requests", rpm), ("tokens", tpm)) if v}
        self._rng = random.Random(seed)  # noqa: S311 - reproducible faults, not secrets
        self._queued: deque[Fault] = deque()
        self._bind_port = port
        self._port: int | None = None
        self._lock = threading.Lock()  # the counters are written on the loop, read anywhere
        self._counts: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._faults: Counter[str] = Counter()
        self._accepted_at: list[float] = []
        self._bodies: deque[Request] = deque(maxlen=1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- the test's side ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLLM is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def groq_base_url(self) -> str:
        # The groq SDK puts /openai/v1 in every path itself: its base URL is the bare host.
        return self.url

    def inject(self, *faults: Fault | str) -> None:
        """Queue faults for the next admitted completions, one each, in order."""
        self._queued.extend(Fault(f) for f in faults)

    @property
    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                requests=self._counts["requests"],
                by_status=dict(self._by_status),
                rate_limited=self._by_status[429],
                faults=dict(self._faults),
                max_in_flight=self._counts["max_in_flight"],
                accepted_at=tuple(self._accepted_at),
                bodies=tuple(self._bodies),
            )

    def start(self) -> FakeLLM:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._bind_port))
        self._port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, ready), name=f"fake-llm-{self._port}", daemon=True
        )
        self._thread.start()
        ready.result(timeout=10)  # re-raises a failure to start here, in the caller
        return self

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, sock: socket.socket, ready: concurrent.futures.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        # handler_cancellation: a client that gives up (a timeout on "hang") frees its handler,
        # as on a real server; the short shutdown_timeout keeps close() from waiting on one.
        runner = web.AppRunner(
            self._app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.2
        )
        try:
            loop.run_until_complete(runner.setup())
            # A deep backlog: a benchmark's burst of connections must not lose SYNs.
            loop.run_until_complete(web.SockSite(runner, sock, backlog=1024).start())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    # -- the API's side -------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        for prefix in ("/v1", "/openai/v1"):  # OpenAI's paths, and Groq's
            app.router.add_post(f"{prefix}/chat/completions", self._completions)
            app.router.add_get(f"{prefix}/models", self._list_models)
        app.router.add_get("/stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        stats = asdict(self.stats)
        del stats["bodies"]  # megabytes of prompts; the benchmark wants the counters
        return web.json_response(stats)

    async def _unknown(self, request: web.Request) -> web.Response:
        # OpenAI answers a wrong path with a JSON 404 naming it: a wrong base URL shows here.
        return _error(404, f"Invalid URL ({request.method} {request.path})", code=None)

    async def _list_models(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return _bad_key()
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "fake"}
            for m in self.models or ()
        ]
        return web.json_response({"object": "list", "data": data})

    async def _completions(self, request: web.Request) -> web.Response:
        with self._lock:
            self._counts["requests"] += 1
            self._counts["in_flight"] += 1
            self._counts["max_in_flight"] = max(
                self._counts["max_in_flight"], self._counts["in_flight"]
            )
        try:
            response = await self._complete(request)
        finally:
            with self._lock:
                self._counts["in_flight"] -= 1
        with self._lock:
            self._by_status[response.status] += 1
        return response

    async def _complete(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return _bad_key()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", code=None)
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.", code=None)
        with self._lock:
            self._bodies.append(body)
        refusal = self._refuse(body)
        if refusal is not None:
            return refusal
        refusal, fault = self._admit(body)
        if refusal is not None:
            return refusal
        headers = self._limit_headers()
        if fault is Fault.HANG:
            await asyncio.sleep(self.hang)
        await asyncio.sleep(self.latency)
        return self._answer(body, fault, headers)

    def _admit(self, body: Request) -> tuple[web.Response | None, Fault | None]:
        """A 429 (from the buckets, or injected) or a 5xx; else take the request's share of
        the buckets and say which content fault, if any, it gets."""
        now = time.monotonic()
        # Like OpenAI, admission counts the prompt and the most the answer may take.
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        costs = {"requests": 1, "tokens": _prompt_tokens(body) + int(limit)}
        tokens = self._buckets.get("tokens")
        if tokens is not None and costs["tokens"] > tokens.per_minute:
            message = (
                f"Request too large for {body['model']} on tokens per min (TPM): "
                f"Limit {tokens.per_minute}, Requested {costs['tokens']}."
            )
            return _error(429, message, type_="tokens", code="rate_limit_exceeded"), None
        waits = {k: b.wait(costs[k], now) for k, b in self._buckets.items()}
        if any(waits.values()):  # refused: nothing is taken from either bucket
            return self._rate_limited(body["model"], waits), None
        fault = self._next_fault()
        if fault in _STATUS_FAULTS:  # a failed call is not charged
            return self._status_fault(fault), None
        for kind, bucket in self._buckets.items():
            bucket.level -= costs[kind]
        with self._lock:
            self._accepted_at.append(now)
        return None, fault

    def _refuse(self, body: Request) -> web.Response | None:
        """The 400s and 404s the real API gives a request it will not run."""
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter", param="model", code=None)
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", param="messages", code=None)
        if not all(isinstance(m, dict) for m in messages):
            return _error(400, "each message must be an object", param="messages", code=None)
        if body.get("stream"):
            return _error(400, "stream is not supported by this fake", param="stream")
        if self.models is not None and model not in self.models:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        kind = (body.get("response_format") or {}).get("type", "text")
        if kind not in ("text", "json_object", "json_schema"):
            return _error(400, f"Invalid response_format type: {kind!r}", param="response_format")
        # The real API's rule for JSON mode, which catches a prompt that lost its format line.
        said = " ".join(_text(m.get("content")) for m in messages)
        if kind == "json_object" and "json" not in said.lower():
            return _error(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
                code=None,
            )
        return None

    def _next_fault(self) -> Fault | None:
        if self._queued:
            fault: Fault | None = self._queued.popleft()
        elif self.fault_rate and self._rng.random() < self.fault_rate:
            fault = self._rng.choice(self.random_faults)
        else:
            return None
        with self._lock:
            self._faults[str(fault)] += 1
        return fault

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in self._buckets.items():
            headers |= bucket.headers(kind)
        return headers

    def _rate_limited(self, model: str, waits: dict[str, float]) -> web.Response:
        kind = max(waits, key=lambda k: waits[k])
        wait = waits[kind]
        unit = "RPM" if kind == "requests" else "TPM"
        message = (
            f"Rate limit reached for {model} on {kind} per min ({unit}): "
            f"Limit {self._buckets[kind].per_minute}. Please try again in {_duration(wait)}."
        )
        return _error(
            429,
            message,
            type_=kind,
            code="rate_limit_exceeded",
            headers=self._limit_headers() | _retry_after(wait),
        )

    def _status_fault(self, fault: Fault) -> web.Response:
        headers = self._limit_headers()
        if fault is Fault.RATE_LIMIT:
            message = "Rate limit reached (injected). Please try again later."
            headers |= _retry_after(self.retry_after)
            return _error(
                429, message, type_="requests", code="rate_limit_exceeded", headers=headers
            )
        if fault is Fault.SERVER_ERROR:
            message = "The server had an error while processing your request. Sorry about that!"
        else:
            message = "The engine is currently overloaded, please try again later."
        return _error(
            _STATUS_FAULTS[fault], message, type_="server_error", code=None, headers=headers
        )

    def _answer(self, body: Request, fault: Fault | None, headers: dict[str, str]) -> web.Response:
        if fault is Fault.EMPTY:
            content = ""
        elif fault is Fault.MALFORMED:
            content = _MALFORMED
        else:
            content = self.responder(body)
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if fault is Fault.TRUNCATED:
            content, finish = content[: len(content) // 2], "length"
        elif limit and _tokens(content) > limit:  # the model stops where the budget ends
            content, finish = content[: int(limit) * 4], "length"
        n = int(body.get("n") or 1)
        prompt, answer = _prompt_tokens(body), _tokens(content) * n
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    "logprobs": None,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": answer,
                "total_tokens": prompt + answer,
            },
        }
        text = json.dumps(payload)
        if fault is Fault.BAD_BODY:
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json", headers=headers)


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """OpenAI's error body; the SDKs pick their exception from the status alone."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


def _bad_key() -> web.Response:
    return _error(401, "Incorrect API key provided", code="invalid_api_key")


def _retry_after(seconds: float) -> dict[str, str]:
    # Both SDKs read retry-after-ms first (float ms), then retry-after (seconds); whole
    # seconds are rounded up so a client that reads only retry-after never comes back early.
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(math.ceil(seconds * 1e3))}


def _duration(seconds: float) -> str:
    """A wait in OpenAI's header format, Go's time.Duration: "20ms", "1s", "6m0s", "1.5s"."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + secs + "s"


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _text(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _prompt_tokens(body: Request) -> int:
    return _tokens("".join(_text(m.get("content")) for m in body["messages"]))


# -- the default answers ---------------------------------------------------------------------

_MARKER = re.compile(r"^(?:Text|TEXT):[ \t]*$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def source_text(prompt: str) -> str:
    """The text a prompt is about: what follows its last line that is exactly "Text:" or
    "TEXT:"; without one, what follows its first blank line; without that, all of it."""
    markers = list(_MARKER.finditer(prompt))
    if markers:
        return prompt[markers[-1].end() :]
    return prompt.split("\n\n", 1)[1] if "\n\n" in prompt else prompt


def grounded_responder(request: Request) -> str:
    """Up to three triples whose outputs are verbatim sentences (of 8 words or more) of the
    text of the last user message that has one (source_text), as JSON when response_format
    asks for it and in the "Triple 1:\\nInstruction: …" format otherwise. Deterministic:
    same request, same answer."""
    users = [_text(m.get("content")) for m in request["messages"] if m.get("role") == "user"]
    # A repair request ends with "answer again": the text is in the first user message.
    with_text = [u for u in users if _MARKER.search(u)] or users
    text = source_text(with_text[-1] if with_text else "")
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 8]
    picked = list(range(len(sentences)))[:: max(1, len(sentences) // 3)][:3]  # spread out
    triples = []
    for i, at in enumerate(picked):
        sentence = sentences[at]
        lead = " ".join(sentence.split()[:4]).rstrip(",;:")
        if i == 0:
            triple = (f'What does the text say about "{lead}"?', "", sentence)
        elif i == 1:
            triple = ("Explain the following point from the text.", f"{lead} ...", sentence)
        else:
            triple = ("Which sentence of the text follows this one?", sentences[at - 1], sentence)
        triples.append(dict(zip(("instruction", "input", "output"), triple, strict=True)))
    if (request.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        return json.dumps({"triples": triples}, ensure_ascii=False)
    return "\n\n".join(
        f"Triple {i}:\nInstruction: {t['instruction']}\nInput: {t['input']}".rstrip()
        + f"\nOutput: {t['output']}"
        for i, t in enumerate(triples, 1)
    )


# -- python -m tests.support.fake_llm ---------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_llm", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port (see the ready line)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per completion")
    parser.add_argument("--rpm", type=int, help="requests per minute (default: no limit)")
    parser.add_argument("--tpm", type=int, help="tokens per minute (default: no limit)")
    parser.add_argument("--key", default="test-key", help="the API key clients must send")
    parser.add_argument("--model", action="append", help="a served model (default: any); repeat")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="chance of a random fault")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Blocked before the server thread starts, so it inherits the mask and sigwait gets them.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        fake = FakeLLM(
            key=args.key,
            models=tuple(args.model) if args.model else None,
            latency=args.latency,
            rpm=args.rpm,
            tpm=args.tpm,
            fault_rate=args.fault_rate,
            seed=args.seed,
            port=args.port,
        )
    except ValueError as exc:
        parser.error(str(exc))
    with fake:
        print(f"ready {fake.url}", flush=True)
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
