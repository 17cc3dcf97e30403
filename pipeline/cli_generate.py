"""`distillery generate`: a completion (or a chat reply) from the inference service, streamed
to the terminal as it is generated."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer

from pipeline.cli_common import DEFAULT_HOME, HomeOption, err, fail
from pipeline.embedded import StackState
from pipeline.inference_api import inference_pb2 as pb
from pipeline.inference_client import InferenceClient, sampling_params


def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt; with --chat, the user's message.")],
    adapter: Annotated[
        str, typer.Option(help="An adapter's name, 'latest' or 'base' [default: latest if any]")
    ] = "",
    chat: Annotated[bool, typer.Option(help="Send it as a chat message (chat template).")] = False,
    max_tokens: Annotated[int, typer.Option(help="0: the server's default.")] = 0,
    temperature: Annotated[float, typer.Option(help="0: greedy.")] = 0.0,
    top_p: float = 0.0,
    stop: Annotated[list[str], typer.Option(help="Stop before this text (repeatable).")] = [],  # noqa: B006 - typer reads it
    seed: int | None = None,
    address: Annotated[
        str | None,
        typer.Option(envvar="INFERENCE_ADDRESS", help="host:port [default: the embedded stack's]"),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="INFERENCE_AUTH_TOKEN")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate of a TLS server.")] = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Ask the inference service for a completion and print it as it comes; the model, the
    finish reason and the token counts follow on stderr."""
    target = address or embedded_address(home)
    sampling = sampling_params(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                               stop=stop, seed=seed)  # fmt: skip
    with InferenceClient(target, token=token, tls_ca=tls_ca) as client:
        if chat:
            request: object = pb.ChatRequest(
                messages=[pb.ChatMessage(role="user", content=prompt)], model=adapter,
                sampling=sampling,
            )  # fmt: skip
            method = client.stub.ChatStream
        else:
            request = pb.GenerateRequest(prompt=prompt, model=adapter, sampling=sampling)
            method = client.stub.GenerateStream
        last = None
        try:
            for chunk in client.stream_chunks(method, request):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk
        except grpc.RpcError as exc:
            raise fail(f"{target}: {exc.code().name}: {exc.details()}") from None
    sys.stdout.write("\n")
    if last is not None:
        reason = pb.FinishReason.Name(last.finish_reason).removeprefix("FINISH_REASON_").lower()
        err.print(f"[dim]{last.model}: {reason}, {last.usage.prompt_tokens} prompt + "
                  f"{last.usage.completion_tokens} completion tokens[/dim]")  # fmt: skip


def embedded_address(home: Path) -> str:
    """The gRPC address of the embedded stack's inference service."""
    state = StackState.load(home.resolve())
    apis = [s.get("api") for n, s in (state.services if state else {}).items()
            if n.startswith("inference-") and s.get("api")]  # fmt: skip
    if not apis:
        raise fail("no inference service here: start the stack with `distillery up`, or give "
                   "--address (INFERENCE_ADDRESS)")  # fmt: skip
    return str(apis[0])
