"""An OpenAI-compatible HTTP endpoint beside the gRPC API, on the same models and the same
generation path: `GET /v1/models`, `POST /v1/chat/completions` (whole, or streamed as
server-sent events). Anything that speaks OpenAI's API can use the served models: the
synthesizer's `openai-compatible` generator among them (self-instruct bootstrapping with the
model being trained), the openai SDK, curl.

The same bearer token as gRPC; errors as OpenAI's error bodies with their HTTP statuses.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from pipeline.inference_client import sampling_params
from services.inference.core import (
    ApiError,
    Exhausted,
    Finish,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.inference.server import InferenceService, Piece

#: The API's errors as OpenAI reports them: HTTP status and error type.
HTTP: dict[type[ApiError], tuple[int, str]] = {
    InvalidArgument: (400, "invalid_request_error"),
    Unauthenticated: (401, "authentication_error"),
    NotFound: (404, "not_found_error"),
    Exhausted: (429, "rate_limit_error"),
}
_FINISH = {Finish.STOP: "stop", Finish.STOP_SEQUENCE: "stop", Finish.LENGTH: "length"}


class OpenAIBridge:
    def __init__(self, service: InferenceService, token: str | None) -> None:
        self.service = service
        self.token = token

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            given = request.headers.get("Authorization", "").encode()
            if self.token and not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
                raise Unauthenticated("a valid bearer token is required")
            return await handler(request)  # type: ignore[no-any-return]
        except ApiError as exc:
            status, kind = HTTP[type(exc)]
            body = {"error": {"message": str(exc), "type": kind, "code": None, "param": None}}
            return web.json_response(body, status=status)

    async def models(self, request: web.Request) -> web.Response:
        names = self.service.models.names()
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "distillery"}
            for name in names
        ]})  # fmt: skip

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise InvalidArgument("the body is not JSON") from None
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise InvalidArgument("messages must be a list of {role, content}")
        if body.get("n", 1) != 1:
            raise InvalidArgument("n must be 1")
        stop = body.get("stop") or []
        params = sampling_params(
            max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 0),
            temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
            stop=[stop] if isinstance(stop, str) else list(stop), seed=body.get("seed"),
        )  # fmt: skip
        prompt = self.service.chat_prompt([(str(m.get("role")), _text(m.get("content")))
                                           for m in messages])  # fmt: skip
        pieces = self.service.pieces(prompt, str(body.get("model", "")), params)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        try:
            if body.get("stream"):
                return await self._stream(request, pieces, ident, created)
            text, last = [], None
            async for piece in pieces:
                text.append(piece.text)
                last = piece
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]  # a client gone: stop generating
        assert last is not None and last.finish is not None  # noqa: S101 - the last has one
        return web.json_response({
            "id": ident, "object": "chat.completion", "created": created, "model": last.model,
            "choices": [{"index": 0, "finish_reason": _FINISH[last.finish],
                         "message": {"role": "assistant", "content": "".join(text)}}],
            "usage": _usage(last),
        })  # fmt: skip

    async def _stream(
        self, request: web.Request, pieces: AsyncIterator[Piece], ident: str, created: int
    ) -> web.StreamResponse:
        # The first piece before the headers: a request refused (bad model, limits) gets its
        # error status, not a 200 stream with an error in it.
        first = await anext(pieces)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})  # fmt: skip
        await response.prepare(request)

        async def send(piece: Piece, delta: dict[str, str]) -> None:
            finish = _FINISH[piece.finish] if piece.finish else None
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": piece.model, "choices": [choice]}  # fmt: skip
            if piece.finish is not None:
                chunk["usage"] = _usage(piece)
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send(Piece("", first.model), {"role": "assistant", "content": ""})
        piece: Piece | None = first
        while piece is not None:
            await send(piece, {"content": piece.text} if piece.text else {})
            piece = await anext(pieces, None)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _text(content: Any) -> str:
    """OpenAI's content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _usage(piece: Piece) -> dict[str, int]:
    return {"prompt_tokens": piece.prompt_tokens, "completion_tokens": piece.completion_tokens,
            "total_tokens": piece.prompt_tokens + piece.completion_tokens}  # fmt: skip


async def serve_http(app: web.Application, host: str, port: int) -> int:
    """The app listening on host:port (0: any free port) on the running loop; the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return int(runner.addresses[0][1])
