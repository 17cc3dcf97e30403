"""The gRPC inference server on loopback, with the transformers engine on stories260K and an
adapter trained in the session: unary and streaming agree, an adapter changes the answer and
`latest` follows a promotion, auth, limits and bad arguments give their status codes, 32
streams at once all complete, a cancelled stream stops generating, and health and
reflection answer."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pipeline.blobstore import BlobStore, open_store, put_tree
from pipeline.inference_api import inference_pb2 as pb
from pipeline.inference_client import InferenceClient
from pipeline.messages import EvalResult
from pipeline.settings import BlobSettings
from services.inference.core import Limits
from services.inference.promotion import Promotions
from tests.support.inference import Server
from tests.support.service_rig import REPO_ROOT
from tests.support.trainer import Trained

pytestmark = pytest.mark.integration

PROMPT = "question: What does the text say about adapters? answer:"
TOKEN = "secret-token"  # noqa: S105 - a test server's


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return open_store(BlobSettings(store_uri=tmp_path_factory.mktemp("blobs").as_uri()))


@pytest.fixture(scope="module")
def server(
    paper_adapter: Trained, blobs: BlobStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with Server(paper_adapter.recipe.base_model, blobs, tmp_path_factory.mktemp("work"),
                token=TOKEN) as running:  # fmt: skip
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[InferenceClient]:
    with InferenceClient(server.address, token=TOKEN, timeout_s=120) as c:
        yield c


def code_of(call: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failed:
        result = call(*args, **kwargs)  # type: ignore[operator]
        if isinstance(result, Iterator):
            list(result)
    return failed.value.code()  # type: ignore[no-any-return, attr-defined]


def test_unary_and_streaming_give_the_same_greedy_text(client: InferenceClient) -> None:
    whole = client.generate(PROMPT, model="base", max_tokens=40)
    assert whole.finish_reason == pb.FINISH_REASON_LENGTH and whole.model == "base"
    assert whole.usage.completion_tokens == 40 and whole.usage.prompt_tokens > 5
    request = pb.GenerateRequest(prompt=PROMPT, model="base",
                                 sampling=pb.SamplingParams(max_tokens=40))  # fmt: skip
    chunks = list(client.stream_chunks(client.stub.GenerateStream, request))
    assert len(chunks) > 10  # token by token, not one lump
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].usage == whole.usage and chunks[-1].finish_reason == whole.finish_reason
    # Stop strings end the text before them, in both.
    word = whole.text.split()[3]
    stopped = client.generate(PROMPT, model="base", max_tokens=40, stop=[word])
    assert stopped.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE
    assert word not in stopped.text and whole.text.startswith(stopped.text)
    assert "".join(client.stream(PROMPT, model="base", max_tokens=40, stop=[word])) == (
        stopped.text)  # fmt: skip
    # Seeded sampling repeats itself.
    sampled = [client.generate(PROMPT, model="base", max_tokens=20, temperature=1.0, seed=7).text
               for _ in range(2)]  # fmt: skip
    assert sampled[0] == sampled[1]


def test_coalesced_pieces_carry_the_same_text(
    client: InferenceClient, paper_adapter: Trained, blobs: BlobStore, tmp_path: Path
) -> None:
    whole = client.generate(PROMPT, model="base", max_tokens=40).text  # a piece per token
    with (
        Server(paper_adapter.recipe.base_model, blobs, tmp_path, stream_interval_s=60) as slow,
        InferenceClient(slow.address) as slow_client,
    ):
        pieces = list(slow_client.stream(PROMPT, model="base", max_tokens=40))
    # The first piece at once, then the other 39 tokens decoded together at the end.
    assert len(pieces) == 2 and "".join(pieces) == whole


def test_an_adapter_changes_the_answer_and_latest_follows_a_promotion(
    server: Server, client: InferenceClient, paper_adapter: Trained, blobs: BlobStore
) -> None:
    base = client.generate(PROMPT, model="base", max_tokens=30).text
    uri = put_tree(blobs, paper_adapter.adapter, "checkpoints/ckpt-a/adapter")
    info = client.load_adapter("manual", uri)
    assert info.kind == "adapter" and list(info.aliases) == []
    tuned = client.generate(PROMPT, model="manual", max_tokens=30).text
    assert tuned != base
    assert client.generate(PROMPT, max_tokens=30).model == "base"  # nothing promoted yet

    promotions = Promotions(server.adapters, server.models, server.loop, max_adapters=4)
    promote = EvalResult(
        checkpoint_id="ckpt-a", run_id="run-1", base_model=paper_adapter.recipe.base_model,
        adapter_uri=uri, scores={}, verdict="promote", reason="better",
        report_uri="file:///r.html",
    )  # fmt: skip
    assert promotions.handle(promote) == []
    latest = client.generate(PROMPT, max_tokens=30)
    assert latest.model == "ckpt-a" and latest.text == tuned
    assert client.generate(PROMPT, model="latest", max_tokens=30).text == tuned
    listed = {m.name: m for m in client.models()}
    assert list(listed["ckpt-a"].aliases) == ["latest"] and listed["ckpt-a"].verdict == "promote"
    assert listed["base"].kind == "base"
    # A rejected checkpoint is not loaded.
    promotions.handle(promote.model_copy(update={"checkpoint_id": "ckpt-b", "verdict": "reject"}))
    assert "ckpt-b" not in {m.name for m in client.models()}
    client.unload_adapter("manual")
    assert code_of(client.generate, PROMPT, model="manual") == grpc.StatusCode.NOT_FOUND


def test_auth_limits_and_bad_arguments_get_their_status_codes(
    server: Server, client: InferenceClient
) -> None:
    with InferenceClient(server.address, timeout_s=30) as anonymous:
        assert code_of(anonymous.generate, PROMPT) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(anonymous.stream, PROMPT) == grpc.StatusCode.UNAUTHENTICATED
    with InferenceClient(server.address, token="wrong", timeout_s=30) as wrong:  # noqa: S106
        assert code_of(wrong.models) == grpc.StatusCode.UNAUTHENTICATED
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(client.generate, PROMPT, max_tokens=513) == invalid
    assert code_of(client.generate, "word " * 300) == invalid  # over 256 prompt tokens
    assert code_of(client.generate, PROMPT, temperature=3.0) == invalid
    assert code_of(client.stream, PROMPT, top_p=2.0) == invalid
    assert code_of(client.chat, [("robot", "hi")]) == invalid
    assert code_of(client.generate, PROMPT, model="nope") == grpc.StatusCode.NOT_FOUND
    assert code_of(client.load_adapter, "x", "file:///nowhere") == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as late:
        client.stub.Generate(pb.GenerateRequest(prompt=PROMPT, sampling=pb.SamplingParams(
            max_tokens=500)), metadata=client.metadata, timeout=0.05)  # fmt: skip
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]


def test_the_concurrency_limit_refuses_what_is_over_it(
    paper_adapter: Trained, blobs: BlobStore, tmp_path: Path
) -> None:
    limits = Limits(max_prompt_tokens=256, max_tokens=512, default_max_tokens=32)
    with Server(paper_adapter.recipe.base_model, blobs, tmp_path, token=None, limits=limits,
                max_concurrency=2) as small, InferenceClient(small.address) as client:  # fmt: skip
        # The engine busy (its model lock held, as a long batch holds it): two requests wait
        # in it, holding both places, and a third is refused at once.
        with small.engine._lock, concurrent.futures.ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(client.generate, PROMPT, max_tokens=8) for _ in range(2)]
            deadline = time.monotonic() + 10
            while small.service.in_flight < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert code_of(client.generate, PROMPT) == grpc.StatusCode.RESOURCE_EXHAUSTED
            small.engine._lock.release()  # the engine free again: both waiting ones finish
            try:
                assert [w.result(60).usage.completion_tokens for w in waiting] == [8, 8]
            finally:
                small.engine._lock.acquire()  # for the `with` to release


def test_32_concurrent_streams_all_complete(server: Server, client: InferenceClient) -> None:
    def one(i: int) -> tuple[str, pb.GenerateChunk]:
        request = pb.GenerateRequest(prompt=f"{PROMPT} {i}", model="base",
                                     sampling=pb.SamplingParams(max_tokens=24))  # fmt: skip
        chunks = list(client.stream_chunks(client.stub.GenerateStream, request))
        return "".join(c.text for c in chunks), chunks[-1]

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert all(last.finish_reason != pb.FINISH_REASON_UNSPECIFIED for _, last in results)
    assert all(last.usage.completion_tokens > 0 for _, last in results)
    # Batched or not, each stream is what the prompt alone gives.
    alone = client.generate(f"{PROMPT} 5", model="base", max_tokens=24).text
    assert results[5][0] == alone


def test_a_cancelled_stream_stops_generating(server: Server, client: InferenceClient) -> None:
    before = server.engine.tokens_generated
    stream = client.stream(PROMPT, model="base", max_tokens=500)
    next(stream)
    stream.close()  # type: ignore[attr-defined]  # the client's way to cancel the call
    deadline = time.monotonic() + 10
    while server.service.in_flight:
        assert time.monotonic() < deadline, "the cancelled request is still in flight"
        time.sleep(0.05)
    settled = server.engine.tokens_generated
    time.sleep(0.5)
    assert server.engine.tokens_generated == settled  # nothing more is being generated
    assert settled - before < 250, settled - before  # cut short, far from its 500


def test_health_and_reflection_answer(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        checked = health_pb2_grpc.HealthStub(channel).Check(  # no token needed: probes
            health_pb2.HealthCheckRequest(service="distillery.inference.v1.Inference")
        )
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            metadata=[("authorization", f"Bearer {TOKEN}")],
        )  # fmt: skip
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"distillery.inference.v1.Inference", "grpc.health.v1.Health"} <= names


def test_distillery_generate_streams_to_the_terminal(
    server: Server, client: InferenceClient
) -> None:
    def distillery(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "pipeline.cli", "generate", "--address", server.address,
             *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    shown = distillery(PROMPT, "--adapter", "base", "--max-tokens", "20", "--token", TOKEN)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == client.generate(PROMPT, model="base", max_tokens=20).text + "\n"
    assert "base: length, " in shown.stderr and "20 completion tokens" in shown.stderr
    refused = distillery(PROMPT, "--token", "wrong")
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_what_goes_wrong_is_said_and_the_engine_goes_on(
    paper_adapter: Trained, blobs: BlobStore, tmp_path: Path
) -> None:
    with (
        Server(paper_adapter.recipe.base_model, blobs, tmp_path) as fresh,
        InferenceClient(fresh.address) as client,
    ):
        base = client.generate(PROMPT, model="base", max_tokens=12).text
        # The last adapter unloaded: the base answers as before.
        client.load_adapter("solo", str(paper_adapter.adapter))
        assert client.generate(PROMPT, model="solo", max_tokens=12).text != base
        client.unload_adapter("solo")
        assert client.generate(PROMPT, model="base", max_tokens=12).text == base
        # Names that are aliases or no directory's are refused before anything is fetched.
        for bad in ("latest", "../up", "a/b"):
            assert code_of(client.load_adapter, bad, str(paper_adapter.adapter)) == (
                grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip

        # Two requests with one seed at once: the same text (a seeded request runs alone).
        def seeded(_: int) -> str:
            return client.generate(PROMPT, model="base", max_tokens=16, temperature=1.0,
                                   seed=11).text  # fmt: skip

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            twins = list(pool.map(seeded, range(2)))
        assert twins[0] == twins[1]
        # A batch that fails is an error for its callers, not a short answer.
        real = fresh.engine.model.generate
        fresh.engine.model.generate = lambda **_: (_ for _ in ()).throw(RuntimeError("boom"))
        try:
            assert code_of(client.generate, PROMPT, model="base") == grpc.StatusCode.INTERNAL
            assert code_of(client.stream, PROMPT, model="base") == grpc.StatusCode.INTERNAL
        finally:
            fresh.engine.model.generate = real
        assert client.generate(PROMPT, model="base", max_tokens=12).text == base
