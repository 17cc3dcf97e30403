"""The gRPC server (grpc.aio): the Inference service of proto/, the standard health service
and server reflection (so grpcurl works), bearer-token auth, the concurrency limit, and one
table from the API's errors to status codes."""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pipeline.inference_api import inference_pb2 as pb
from pipeline.inference_api import inference_pb2_grpc as pb_grpc
from services.inference.adapters import Adapters
from services.inference.core import (
    BASE,
    ApiError,
    Exhausted,
    Finish,
    IncrementalText,
    InvalidArgument,
    Limits,
    Model,
    Models,
    NotFound,
    StopMatcher,
    Unauthenticated,
    check_prompt,
    sampling,
)
from services.inference.engine import Engine, Request
from services.inference.metrics import InferenceMetrics

log = logging.getLogger("inference.server")

#: Every error a client can be given, and its status code. Anything else is INTERNAL.
STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Exhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}
SERVICE = pb.DESCRIPTOR.services_by_name["Inference"].full_name
_FINISH = {Finish.STOP: pb.FINISH_REASON_STOP, Finish.LENGTH: pb.FINISH_REASON_LENGTH,
           Finish.STOP_SEQUENCE: pb.FINISH_REASON_STOP_SEQUENCE}  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """Text generated since the last piece; the finish reason and usage on the last one."""

    text: str
    model: str
    finish: Finish | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _unary(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Any) -> Any:
        async with _errors(context, self.metrics, method.__name__):
            return await method(self, request, context)

    return call


def _streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
        async with _errors(context, self.metrics, method.__name__):
            async for item in method(self, request, context):
                yield item

    return call


class InferenceService(pb_grpc.InferenceServicer):
    def __init__(
        self, engine: Engine, models: Models, adapters: Adapters, limits: Limits,
        max_concurrency: int, stream_interval_s: float = 0.02,
        stream_messages_per_s: float = 0.0, metrics: InferenceMetrics | None = None,
    ) -> None:  # fmt: skip
        self.metrics = metrics or InferenceMetrics("inference")
        self.engine = engine
        self.stream_interval_s = stream_interval_s
        self.stream_messages_per_s = stream_messages_per_s
        self.models = models
        self.adapters = adapters
        self.limits = limits
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    # --- generation -----------------------------------------------------------------------------

    @_unary
    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        return await _whole(self.pieces(request.prompt, request.model, request.sampling))

    @_streaming
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.GenerateChunk]:
        async for chunk in _chunks(self.pieces(request.prompt, request.model,
                                                          request.sampling)):  # fmt: skip
            yield chunk

    @_unary
    async def Chat(self, request: pb.ChatRequest, context: Any) -> pb.GenerateResponse:
        prompt = self._chat(request)
        return await _whole(self.pieces(prompt, request.model, request.sampling))

    @_streaming
    async def ChatStream(
        self, request: pb.ChatRequest, context: Any
    ) -> AsyncIterator[pb.GenerateChunk]:
        prompt = self._chat(request)
        async for chunk in _chunks(self.pieces(prompt, request.model,
                                                          request.sampling)):  # fmt: skip
            yield chunk

    def _chat(self, request: pb.ChatRequest) -> str:
        return self.chat_prompt([(m.role, m.content) for m in request.messages])

    def chat_prompt(self, messages: list[tuple[str, str]]) -> str:
        """(role, content) messages through the model's chat template, checked."""
        if not messages:
            raise InvalidArgument("a chat needs at least one message")
        bad = [role for role, _ in messages if role not in ("system", "user", "assistant")]
        if bad:
            raise InvalidArgument(f"message roles are system, user or assistant, not {bad[0]!r}")
        return self.engine.chat_prompt([{"role": r, "content": c} for r, c in messages])

    async def pieces(
        self, prompt: str, name: str, params: pb.SamplingParams
    ) -> AsyncIterator[Piece]:
        """The generation of one request as text pieces, stop strings cut out; the request
        holds one of `max_concurrency` places from its checks to its last piece."""
        if self.in_flight >= self.max_concurrency:
            raise Exhausted(f"{self.in_flight} requests in flight: this server's limit; retry")
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        started = time.monotonic()
        try:
            chosen = sampling(self.limits, max_tokens=params.max_tokens,
                              temperature=params.temperature, top_p=params.top_p,
                              stop=tuple(params.stop),
                              seed=params.seed if params.HasField("seed") else None)  # fmt: skip
            model = self.models.resolve(name)
            ids = self.engine.encode(prompt)
            check_prompt(len(ids), self.limits)
            adapter = None if model.name == BASE else model.name
            matcher, text = StopMatcher(chosen.stop), IncrementalText(self.engine.decode, ids)
            finish: Finish | None = None
            generated, held, sent_at = 0, "", -math.inf
            undecoded: list[int] = []
            steps = self.engine.generate(Request(ids, adapter, chosen))
            try:
                async for step in steps:
                    generated += len(step.token_ids)
                    undecoded += step.token_ids
                    finish = step.finish
                    # Pieces at most every stream_interval (the first at once): a message
                    # per token would cost a small model more than its tokens do. Tokens are
                    # decoded when a piece is due, or at every step if a stop string may end
                    # the generation there.
                    now = time.monotonic()
                    due = now - sent_at >= self.stream_interval()
                    if not (due or chosen.stop or finish is not None):
                        continue
                    shown, stopped = matcher.feed(text.add(undecoded, last=finish is not None))
                    undecoded = []
                    finish = Finish.STOP_SEQUENCE if stopped else finish
                    held += shown
                    if held and due:
                        if sent_at == -math.inf:
                            self.metrics.first_token.observe(now - started)
                        yield Piece(held, model.name)
                        held, sent_at = "", now
                    if finish is not None:
                        break
            finally:
                await steps.aclose()  # type: ignore[attr-defined]  # stops the engine's row
            if finish is not Finish.STOP_SEQUENCE:
                held += matcher.flush()
            self.metrics.tokens.labels(self.metrics.service, model.name).inc(generated)
            yield Piece(held, model.name, finish or Finish.LENGTH, len(ids), generated)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)

    def stream_interval(self) -> float:
        """The time between a stream's pieces: stream_interval_s, or longer while many
        streams share the stream_messages_per_s the server may send in all."""
        if not self.stream_messages_per_s:
            return self.stream_interval_s
        return max(self.stream_interval_s, self.in_flight / self.stream_messages_per_s)

    # --- models ----------------------------------------------------------------------------------

    @_unary
    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[_info(m, aliases)
                                             for m, aliases in self.models.listing()])  # fmt: skip

    @_unary
    async def LoadAdapter(self, request: pb.LoadAdapterRequest, context: Any) -> pb.ModelInfo:
        if not request.name or not request.uri:
            raise InvalidArgument("LoadAdapter needs a name and a uri")
        adapter = Model(request.name, "adapter", self.models.base.base_model,
                        adapter_uri=request.uri)  # fmt: skip
        await self.adapters.load(adapter, make_latest=request.make_latest)
        listed = dict((m.name, a) for m, a in self.models.listing())
        return _info(adapter, listed.get(adapter.name, []))

    @_unary
    async def UnloadAdapter(
        self, request: pb.UnloadAdapterRequest, context: Any
    ) -> pb.UnloadAdapterResponse:
        await self.adapters.unload(request.name)
        return pb.UnloadAdapterResponse()


def _info(model: Model, aliases: list[str]) -> pb.ModelInfo:
    return pb.ModelInfo(name=model.name, kind=model.kind, base_model=model.base_model,
                        checkpoint_id=model.checkpoint_id, adapter_uri=model.adapter_uri,
                        verdict=model.verdict, aliases=aliases)  # fmt: skip


def _usage(piece: Piece) -> pb.Usage:
    return pb.Usage(prompt_tokens=piece.prompt_tokens, completion_tokens=piece.completion_tokens)


async def _whole(pieces: AsyncIterator[Piece]) -> pb.GenerateResponse:
    text, last = [], None
    async for piece in pieces:
        text.append(piece.text)
        last = piece
    assert last is not None and last.finish is not None  # noqa: S101 - the last piece has one
    return pb.GenerateResponse(text="".join(text), finish_reason=_FINISH[last.finish],
                               usage=_usage(last), model=last.model)  # fmt: skip


async def _chunks(pieces: AsyncIterator[Piece]) -> AsyncIterator[pb.GenerateChunk]:
    async for piece in pieces:
        if piece.finish is None:
            yield pb.GenerateChunk(text=piece.text, model=piece.model)
        else:
            finish = _FINISH[piece.finish]
            yield pb.GenerateChunk(text=piece.text, model=piece.model, finish_reason=finish,
                                   usage=_usage(piece))  # fmt: skip


class _errors:  # noqa: N801 - used as a statement: `async with _errors(context)`
    """The API's errors to their status codes (STATUS); a client that went away or a deadline
    that passed cancels the handler, which cancels the generation on its way out."""

    def __init__(self, context: Any, metrics: InferenceMetrics, method: str) -> None:
        self.context = context
        self.metrics = metrics
        self.method = method
        self.started = time.monotonic()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> bool:  # fmt: skip
        code = grpc.StatusCode.OK
        if isinstance(exc, ApiError):
            code = next(STATUS[k] for k in type(exc).__mro__ if k in STATUS)
        elif isinstance(exc, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED  # the client left, or its deadline passed
        elif isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
            log.error("request failed", exc_info=exc)
            code = grpc.StatusCode.INTERNAL
        self.metrics.answered(self.method, code.name, time.monotonic() - self.started)
        if isinstance(exc, ApiError) or code is grpc.StatusCode.INTERNAL:
            await self.context.abort(code, str(exc) if isinstance(exc, ApiError)
                                     else f"{type(exc).__name__}: {exc}")  # fmt: skip
        return False


class BearerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call but health checks needs `authorization: Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: Any,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(f"/{health.SERVICE_NAME}/"):
            return handler  # unknown methods are gRPC's to refuse; probes carry no token
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self.expected):
            return handler
        return _refused(handler)


def _refused(handler: Any) -> Any:
    """The method's handler, its behaviour replaced by UNAUTHENTICATED (the same shape, so
    unary, server-streaming and reflection's bidirectional stream are all answered)."""

    async def refuse(request: Any, context: Any) -> None:
        await context.abort(STATUS[Unauthenticated], "a valid bearer token is required")

    kind = ("stream" if handler.request_streaming else "unary") + "_" + (
        "stream" if handler.response_streaming else "unary")  # fmt: skip
    return handler._replace(**{kind: refuse})


async def start(
    service: InferenceService,
    address: str,
    *,
    token: str | None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The server listening on `address` ("127.0.0.1:0" for any port); its port and its
    health servicer (SERVING once started)."""
    server = grpc.aio.server(interceptors=[BearerAuth(token)] if token else [])
    pb_grpc.add_InferenceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    healthy = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(healthy, server)
    reflection.enable_server_reflection(
        [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = (server.add_secure_port(address, credentials) if credentials
            else server.add_insecure_port(address))  # fmt: skip
    await server.start()
    for name in ("", SERVICE):
        await healthy.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, healthy
