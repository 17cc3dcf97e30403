"""The OpenAI-compatible endpoint, called with the openai SDK as any client would: the same
answers as gRPC, streamed or not, the models listed, errors as OpenAI's; and the
synthesizer's own OpenAI-compatible client accepts it as its generator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from pipeline.blobstore import open_store
from pipeline.inference_client import InferenceClient
from pipeline.settings import BlobSettings
from services.inference.openai_bridge import OpenAIBridge, serve_http
from services.synthesizer.llm import ChatClient, sdk
from services.synthesizer.ratelimit import Budget, Limiter
from tests.support.inference import Server

pytestmark = pytest.mark.integration

TOKEN = "bridge-token"  # noqa: S105 - a test server's


class _Quiet:
    def request(self, outcome: str, seconds: float) -> None:
        pass

    def used(self, usage: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(
    test_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("bridge")
    blobs = open_store(BlobSettings(store_uri=root.as_uri()))
    with Server(str(test_data / "models" / "stories260K"), blobs, root, token=TOKEN) as server:
        port = server.run(serve_http(OpenAIBridge(server.service, TOKEN).app(), "127.0.0.1", 0))
        yield server, f"http://127.0.0.1:{port}/v1"


def test_chat_completions_match_grpc_whole_and_streamed(served: tuple[Server, str]) -> None:
    server, url = served
    sdk_client = openai.OpenAI(api_key=TOKEN, base_url=url)
    messages = [{"role": "user", "content": "Tell me about a cat."}]
    whole = sdk_client.chat.completions.create(model="base", messages=messages, max_tokens=24,
                                               temperature=0)  # type: ignore[arg-type]  # fmt: skip
    with InferenceClient(server.address, token=TOKEN) as grpc_client:
        expected = grpc_client.chat([("user", "Tell me about a cat.")], model="base",
                                    max_tokens=24)  # fmt: skip
    assert whole.choices[0].message.content == expected.text
    assert whole.choices[0].finish_reason == "length" and whole.usage is not None
    assert whole.usage.completion_tokens == 24
    stream = sdk_client.chat.completions.create(model="base", messages=messages, max_tokens=24,
                                                temperature=0, stream=True)  # type: ignore[arg-type]  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert [m.id for m in sdk_client.models.list()] == ["base"]


def test_errors_are_openais(served: tuple[Server, str]) -> None:
    _, url = served
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=url, max_retries=0).models.list()
    client = openai.OpenAI(api_key=TOKEN, base_url=url, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no model 'gpt-4o'"):
        client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="over this server's cap"):
        client.chat.completions.create(model="base", messages=messages, max_tokens=10_000)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):  # refused before the stream starts
        client.chat.completions.create(model="nope", messages=messages, stream=True)  # type: ignore[arg-type]


def test_the_synthesizer_accepts_it_as_its_generator(served: tuple[Server, str]) -> None:
    _, url = served

    async def use() -> str:
        chat = ChatClient(sdk("openai-compatible", TOKEN, url, 30), "base", Limiter(None, None),
                          _Quiet(), structured="none")  # fmt: skip
        await chat.check()  # what the synthesizer does at start-up
        ask = [{"role": "user", "content": "Write a story."}]
        answer = await chat.complete(ask, temperature=0.0, max_tokens=16,
                                     budget=Budget(None, None, None))  # fmt: skip
        return answer.text

    assert asyncio.run(use()).strip()
