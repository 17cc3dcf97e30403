"""What the server needs of an engine, whichever it is (transformers on CPU, vLLM on GPU): the
tokenizer's view of a prompt, token ids as they are generated, adapters loaded and unloaded
while requests run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


class Tokenized:
    """The tokenizer's side of an engine, which both engines share: a Hugging Face tokenizer
    in `self.tokenizer`."""

    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        # A chat template writes its own BOS: a second one would be read as text.
        bos = self.tokenizer.bos_token
        special = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if not self.tokenizer.chat_template:
            # A base model without a template: the plain transcript, then the reply's turn.
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join([*lines, "assistant:"])
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True))  # fmt: skip
