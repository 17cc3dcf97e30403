"""A small client of the inference service's gRPC API, for the CLI, the synthesizer and
anyone's script:

    with InferenceClient("127.0.0.1:50051", token="...") as client:
        print(client.generate("Once upon a time", max_tokens=32).text)
        for piece in client.stream("Once upon a time"):
            print(piece, end="", flush=True)

Errors arrive as grpc.RpcError with the server's status code and message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from pipeline.inference_api import inference_pb2 as pb
from pipeline.inference_api import inference_pb2_grpc as pb_grpc


class InferenceClient:
    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        timeout_s: float | None = 300.0,
    ) -> None:
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(tls_ca.read_bytes())
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.InferenceStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout_s = timeout_s

    def generate(self, prompt: str, *, model: str = "", **sampling: Any) -> pb.GenerateResponse:
        request = pb.GenerateRequest(
            prompt=prompt, model=model, sampling=sampling_params(**sampling)
        )
        return self._call(self.stub.Generate, request)  # type: ignore[no-any-return]

    def stream(self, prompt: str, *, model: str = "", **sampling: Any) -> Iterator[str]:
        """The text as it is generated; closing the iterator early cancels the call, and the
        server stops generating."""
        request = pb.GenerateRequest(
            prompt=prompt, model=model, sampling=sampling_params(**sampling)
        )
        for chunk in self.stream_chunks(self.stub.GenerateStream, request):
            yield chunk.text

    def stream_chunks(self, method: Any, request: Any) -> Iterator[pb.GenerateChunk]:
        call = method(request, metadata=self.metadata, timeout=self.timeout_s)
        try:
            yield from call
        finally:
            call.cancel()  # a no-op once the stream has ended

    def chat(
        self, messages: Sequence[tuple[str, str]], *, model: str = "", **sampling: Any
    ) -> pb.GenerateResponse:
        """A reply to (role, content) messages, through the model's chat template."""
        request = pb.ChatRequest(
            messages=[pb.ChatMessage(role=r, content=c) for r, c in messages],
            model=model, sampling=sampling_params(**sampling),
        )  # fmt: skip
        return self._call(self.stub.Chat, request)  # type: ignore[no-any-return]

    def models(self) -> list[pb.ModelInfo]:
        return list(self._call(self.stub.ListModels, pb.ListModelsRequest()).models)

    def load_adapter(self, name: str, uri: str, *, make_latest: bool = False) -> pb.ModelInfo:
        request = pb.LoadAdapterRequest(name=name, uri=uri, make_latest=make_latest)
        return self._call(self.stub.LoadAdapter, request)  # type: ignore[no-any-return]

    def unload_adapter(self, name: str) -> None:
        self._call(self.stub.UnloadAdapter, pb.UnloadAdapterRequest(name=name))

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, metadata=self.metadata, timeout=self.timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sampling_params(
    *,
    max_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 0.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
) -> pb.SamplingParams:
    params = pb.SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                               stop=list(stop))  # fmt: skip
    if seed is not None:
        params.seed = seed
    return params
