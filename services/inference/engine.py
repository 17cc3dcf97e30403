"""What the server needs of an engine, whichever it is (transformers on CPU, vLLM on GPU): the
tokenizer's view of a prompt, token ids as they are generated, adapters loaded and unloaded
while requests run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.inference.core import Finish, Sampling


@dataclass(frozen=True)
class Request:
    prompt_ids: list[int]
    adapter: str | None  # None: the base model
    sampling: Sampling


@dataclass(frozen=True)
class Step:
    """Tokens generated since the last step; `finish` on the last one."""

    token_ids: list[int]
    finish: Finish | None = None


class Engine(Protocol):
    def encode(self, text: str) -> list[int]:
        """The prompt's token ids, as the model will read them (BOS included)."""
        ...

    def decode(self, token_ids: list[int]) -> str: ...

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The conversation through the model's chat template, ready for the reply."""
        ...

    def generate(self, request: Request) -> AsyncIterator[Step]:
        """Steps until the model stops or max_tokens; closing the iterator early (the client
        went away, a stop string) stops the generation."""
        ...

    async def load_adapter(self, name: str, path: Path) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    def close(self) -> None: ...
