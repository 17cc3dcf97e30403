"""The fake LLM API (tests/support/fake_llm.py), driven by the real openai and groq SDKs over
loopback: answers, auth, errors, faults, rate limits and their headers, latency, the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import groq
import httpx
import openai
import pytest

from tests.support.fake_llm import FakeLLM, _duration, source_text

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SDKS = {"openai": openai, "groq": groq}
# The opening of the LoRA paper's abstract (arXiv 2106.09685).
TEXT = (
    "An important paradigm of natural language processing consists of large-scale "
    "pre-training on general domain data and adaptation to particular tasks or domains. "
    "As we pre-train larger models, full fine-tuning, which retrains all model parameters, "
    "becomes less feasible. Using GPT-3 175B as an example, deploying independent instances "
    "of fine-tuned models, each with 175B parameters, is prohibitively expensive. We propose "
    "Low-Rank Adaptation, or LoRA, which freezes the pre-trained model weights and injects "
    "trainable rank decomposition matrices into each layer of the Transformer architecture."
)
PROMPT = f"Write three triples. Answer in JSON.\n\nPaper: LoRA\nSection: Abstract\nText:\n{TEXT}"
MESSAGES = [{"role": "system", "content": "You write data."}, {"role": "user", "content": PROMPT}]


def client(sdk: str, fake: FakeLLM, key: str = "test-key", **options: Any) -> Any:
    """The SDK's async client on the fake, its own retries off unless asked."""
    options.setdefault("max_retries", 0)
    if sdk == "openai":
        return openai.AsyncOpenAI(api_key=key, base_url=fake.openai_base_url, **options)
    return groq.AsyncGroq(api_key=key, base_url=fake.groq_base_url, **options)


def error_code(exc: Any) -> str:
    """The error body's code: openai keeps the inner "error" object as body, groq all of it."""
    return str(exc.body.get("error", exc.body)["code"])


async def ask(sdk: str, fake: FakeLLM, **request: Any) -> Any:
    request = {"model": "m", "messages": MESSAGES} | request
    async with client(sdk, fake) as c:
        return await c.chat.completions.create(**request)


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}],
)
def test_json_answer_is_three_grounded_triples(sdk: str, response_format: dict[str, Any]) -> None:
    with FakeLLM() as fake:
        reply = asyncio.run(
            ask(sdk, fake, response_format=response_format, temperature=0.7, seed=3)
        )
        again = asyncio.run(
            ask(sdk, fake, response_format=response_format, temperature=0.7, seed=3)
        )
    triples = json.loads(reply.choices[0].message.content)["triples"]
    assert len(triples) == 3
    assert all(
        t["output"] in TEXT and set(t) == {"instruction", "input", "output"} for t in triples
    )
    assert again.choices[0].message.content == reply.choices[0].message.content  # deterministic
    assert reply.model == "m" and reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "stop"
    chars = sum(len(m["content"]) for m in MESSAGES)
    assert reply.usage.prompt_tokens == -(-chars // 4)
    sent = fake.stats.bodies[-1]
    assert sent["response_format"] == response_format and sent["temperature"] == 0.7


@pytest.mark.parametrize("sdk", SDKS)
def test_text_answer_uses_the_triple_format(sdk: str) -> None:
    with FakeLLM() as fake:
        reply = asyncio.run(ask(sdk, fake, max_tokens=2000))
    content = reply.choices[0].message.content
    assert content.startswith("Triple 1:\nInstruction: ")
    assert "\n\nTriple 3:\nInstruction: " in content and "Triple 4" not in content
    with FakeLLM() as fake:
        cut = asyncio.run(ask(sdk, fake, max_tokens=10)).choices[0]
    assert cut.finish_reason == "length" and cut.message.content == content[:40]


def test_source_text_convention() -> None:
    assert source_text("Do this.\nText:\nthe text\nText:\nreal text") == "\nreal text"
    assert source_text("Do this.\nTEXT:  \nthe text") == "\nthe text"
    assert source_text("Do this.\n\nthe text\n\nmore") == "the text\n\nmore"
    assert source_text("just text") == "just text"


@pytest.mark.parametrize("sdk", SDKS)
def test_wrong_key_is_refused(sdk: str) -> None:
    async def go(fake: FakeLLM) -> None:
        async with client(sdk, fake, key="nope") as c:
            with pytest.raises(SDKS[sdk].AuthenticationError) as caught:
                await c.chat.completions.create(model="m", messages=MESSAGES)
        assert error_code(caught.value) == "invalid_api_key"

    with FakeLLM(key="right") as fake:
        asyncio.run(go(fake))


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("429", "RateLimitError", 429),
        ("500", "InternalServerError", 500),
        ("503", "InternalServerError", 503),
    ],
)
def test_status_faults_raise_the_sdks_errors(sdk: str, fault: str, error: str, status: int) -> None:
    with FakeLLM(rpm=600, retry_after=2.5) as fake:
        fake.inject(fault)
        with pytest.raises(getattr(SDKS[sdk], error)) as caught:
            asyncio.run(ask(sdk, fake))
        asyncio.run(ask(sdk, fake))  # one fault, one request
    headers = caught.value.response.headers
    assert caught.value.status_code == status
    assert headers["x-ratelimit-limit-requests"] == "600"
    if fault == "429":
        assert error_code(caught.value) == "rate_limit_exceeded"
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("3", "2500")
    assert fake.stats.faults == {fault: 1} and fake.stats.by_status == {status: 1, 200: 1}


@pytest.mark.parametrize("sdk", SDKS)
def test_content_faults(sdk: str) -> None:
    with FakeLLM() as fake:
        whole = asyncio.run(ask(sdk, fake)).choices[0].message.content
        fake.inject("truncated", "empty", "malformed")
        truncated, empty, malformed = (asyncio.run(ask(sdk, fake)).choices[0] for _ in range(3))
    assert truncated.finish_reason == "length"
    assert truncated.message.content == whole[: len(whole) // 2]
    assert empty.message.content == "" and empty.finish_reason == "stop"
    assert "Triple" not in malformed.message.content and "{" not in malformed.message.content


@pytest.mark.parametrize("sdk", SDKS)
def test_bad_body_raises_json_decode_error(sdk: str) -> None:
    # Neither SDK wraps it: a 200 whose application/json body is not JSON raises the
    # JSONDecodeError of response.json() itself, not an APIError.
    with FakeLLM() as fake:
        fake.inject("bad_body")
        with pytest.raises(json.JSONDecodeError):
            asyncio.run(ask(sdk, fake))


def test_hang_times_the_client_out_and_close_is_prompt() -> None:
    async def go(fake: FakeLLM) -> None:
        async with client("openai", fake, timeout=0.3) as c:
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(model="m", messages=MESSAGES)

    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\nAuthorization: Bearer test-key\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with FakeLLM(hang=60) as fake:
        fake.inject("hang", "hang")
        asyncio.run(go(fake))
        # The second hang is still being answered when the fake closes.
        held = socket.create_connection(("127.0.0.1", fake.port))
        held.sendall(head.encode() + body)
        while fake.stats.requests < 2:
            time.sleep(0.01)
        closing = time.monotonic()
    assert time.monotonic() - closing < 2
    assert held.recv(1) == b""  # the server hung up
    held.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fake-llm")]


@pytest.mark.parametrize("sdk", SDKS)
def test_rpm_bucket_holds_one_seconds_worth(sdk: str) -> None:
    async def go(fake: FakeLLM) -> tuple[list[str], list[Any]]:
        remaining, refused = [], []
        async with client(sdk, fake) as c:
            for _ in range(10):
                try:
                    raw = await c.chat.completions.with_raw_response.create(
                        model="m", messages=MESSAGES
                    )
                    remaining.append(raw.headers["x-ratelimit-remaining-requests"])
                except SDKS[sdk].RateLimitError as exc:
                    refused.append(exc)
        return remaining, refused

    with FakeLLM(rpm=120) as fake:
        remaining, refused = asyncio.run(go(fake))
    assert remaining == ["1", "0"] and len(refused) == 8
    headers = refused[0].response.headers
    assert headers["retry-after"] == "1" and 0 < int(headers["retry-after-ms"]) <= 500
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("ms")
    assert fake.stats.by_status == {200: 2, 429: 8} and len(fake.stats.accepted_at) == 2


@pytest.mark.parametrize("sdk", SDKS)
def test_the_sdks_own_retry_waits_as_told(sdk: str) -> None:
    async def go(fake: FakeLLM) -> float:
        async with client(sdk, fake, max_retries=3) as c:
            for _ in range(2):  # empty the bucket (capacity 2)
                await c.chat.completions.create(model="m", messages=MESSAGES)
            started = time.monotonic()
            await c.chat.completions.create(model="m", messages=MESSAGES)
            return time.monotonic() - started

    with FakeLLM(rpm=120) as fake:
        waited = asyncio.run(go(fake))
    # retry-after-ms said about 0.5 s; the SDK waited that, not its own backoff.
    assert 0.3 < waited < 1.0
    assert fake.stats.by_status == {200: 3, 429: 1}


def test_tpm_counts_prompt_and_max_tokens() -> None:
    # 600 tokens/min: a bucket of 10 tokens, refilling 10 a second.
    messages = [{"role": "user", "content": "x" * 20}]  # 5 tokens

    async def go(fake: FakeLLM) -> None:
        async with client("openai", fake) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="m", messages=messages, max_tokens=3
            )
            assert raw.headers["x-ratelimit-remaining-tokens"] == "2"
            with pytest.raises(openai.RateLimitError) as caught:
                await c.chat.completions.create(model="m", messages=messages, max_tokens=3)
            assert caught.value.body["type"] == "tokens"
            with pytest.raises(openai.RateLimitError, match="Request too large"):
                await c.chat.completions.create(model="m", messages=messages, max_tokens=600)

    with FakeLLM(tpm=600) as fake:
        asyncio.run(go(fake))


def test_many_concurrent_requests_wait_together() -> None:
    async def go(fake: FakeLLM) -> float:
        async with client("openai", fake) as c:
            started = time.monotonic()
            await asyncio.gather(
                *(c.chat.completions.create(model="m", messages=MESSAGES) for _ in range(64))
            )
            return time.monotonic() - started

    with FakeLLM(latency=0.3) as fake:
        elapsed = asyncio.run(go(fake))
    assert 0.3 <= elapsed < 3  # 64 in a row would take 19 s
    assert fake.stats.max_in_flight == 64


@pytest.mark.parametrize("sdk", SDKS)
def test_models_are_listed_and_others_refused(sdk: str) -> None:
    async def go(fake: FakeLLM) -> list[str]:
        async with client(sdk, fake) as c:
            with pytest.raises(SDKS[sdk].NotFoundError) as caught:
                await c.chat.completions.create(model="gpt-9", messages=MESSAGES)
            assert error_code(caught.value) == "model_not_found"
            return [m.id for m in (await c.models.list()).data]

    with FakeLLM(models=("llama-3.1-8b-instant", "gpt-4o-mini")) as fake:
        assert asyncio.run(go(fake)) == ["llama-3.1-8b-instant", "gpt-4o-mini"]


def test_requests_the_real_api_refuses() -> None:
    with FakeLLM() as fake:
        with pytest.raises(openai.BadRequestError, match="stream"):
            asyncio.run(ask("openai", fake, stream=True))
        plain = [{"role": "user", "content": "Text:\nno format word here"}]
        with pytest.raises(openai.BadRequestError, match="'json'"):
            asyncio.run(
                ask("openai", fake, messages=plain, response_format={"type": "json_object"})
            )
        wrong = httpx.post(f"{fake.url}/openai/v1/openai/v1/chat/completions")
    assert wrong.status_code == 404 and "Invalid URL" in wrong.json()["error"]["message"]


def test_random_faults_are_seeded() -> None:
    def statuses(seed: int) -> list[int]:
        with FakeLLM(fault_rate=0.5, random_faults=("500", "503"), seed=seed) as fake:
            for _ in range(12):
                try:
                    asyncio.run(ask("openai", fake))
                except openai.InternalServerError:
                    pass
        return [s for s, n in sorted(fake.stats.by_status.items()) for _ in range(n)]

    first = statuses(7)
    assert first == statuses(7) and {200, 500, 503} <= set(first)


def test_duration_format() -> None:
    assert [_duration(s) for s in (0, 0.02, 1, 1.5, 360, 3723.25)] == [
        "0s",
        "20ms",
        "1s",
        "1.5s",
        "6m0s",
        "1h2m3.25s",
    ]


def test_subprocess_serves_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "tests.support.fake_llm", "--latency", "0.01"]
    command += ["--rpm", "600", "--model", "m", "--key", "k"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == "ready" and ready[1].startswith("http://127.0.0.1:")
        url = ready[1]
        answer = openai.OpenAI(api_key="k", base_url=f"{url}/v1", max_retries=0).chat.completions
        assert answer.create(model="m", messages=MESSAGES).choices[0].message.content
        stats = httpx.get(f"{url}/stats").json()
        assert stats["requests"] == 1 and stats["by_status"] == {"200": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
