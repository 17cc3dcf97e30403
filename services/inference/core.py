"""The inference service's rules, pure: what a request may ask (sampling checked against the
caps), the models and their aliases, and stop strings found in a stream of text that arrives
a few characters at a time. The errors here are the API's; server.py maps each to one gRPC
status code."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

BASE = "base"
LATEST = "latest"
#: What peft calls the base model inside a batch of mixed adapters.
PEFT_BASE = "__base__"


class ApiError(Exception):
    """An error the client is told about, by kind (see server.STATUS)."""


class InvalidArgument(ApiError):
    pass


class NotFound(ApiError):
    pass


class Exhausted(ApiError):
    pass


class Unauthenticated(ApiError):
    pass


class Finish(Enum):
    STOP = "stop"  # the model's end-of-sequence token
    LENGTH = "length"  # max_tokens reached
    STOP_SEQUENCE = "stop_sequence"  # one of the request's stop strings


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int
    max_tokens: int  # the cap on what a request may ask
    default_max_tokens: int
    max_stop: int = 8
    max_stop_length: int = 64


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def sampling(
    limits: Limits,
    *,
    max_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 0.0,
    stop: tuple[str, ...] = (),
    seed: int | None = None,
) -> Sampling:
    """A request's sampling parameters checked (0 means the default, as proto3 sends an unset
    field); InvalidArgument names the first bad one."""
    if max_tokens > limits.max_tokens:
        raise InvalidArgument(f"max_tokens {max_tokens} is over this server's cap of "
                              f"{limits.max_tokens}")  # fmt: skip
    if not 0.0 <= temperature <= 2.0:
        raise InvalidArgument(f"temperature must be within [0, 2], not {temperature}")
    if not 0.0 <= top_p <= 1.0:
        raise InvalidArgument(f"top_p must be within [0, 1], not {top_p}")
    if len(stop) > limits.max_stop:
        raise InvalidArgument(f"at most {limits.max_stop} stop strings, not {len(stop)}")
    if any(not s or len(s) > limits.max_stop_length for s in stop):
        raise InvalidArgument(f"stop strings must be 1 to {limits.max_stop_length} characters")
    if temperature < 1e-5:  # a sampler this cold divides by nearly zero: it is greedy
        temperature = 0.0
    return Sampling(max_tokens or limits.default_max_tokens, temperature, top_p or 1.0,
                    tuple(stop), seed)  # fmt: skip


_ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_adapter_name(name: str) -> None:
    """A name that is no alias and can name a directory: letters, digits, '.', '_', '-'."""
    if name in (BASE, LATEST, PEFT_BASE):
        raise InvalidArgument(f"{name!r} is reserved; name the adapter otherwise")
    if not _ADAPTER_NAME.fullmatch(name):
        raise InvalidArgument(f"adapter names are letters, digits, '.', '_' and '-', "
                              f"at most 128: not {name!r}")  # fmt: skip


def check_prompt(tokens: int, limits: Limits) -> None:
    if tokens == 0:
        raise InvalidArgument("the prompt is empty")
    if tokens > limits.max_prompt_tokens:
        raise InvalidArgument(f"the prompt is {tokens} tokens, over this server's cap of "
                              f"{limits.max_prompt_tokens}")  # fmt: skip


class StopMatcher:
    """Finds the request's stop strings in text that arrives in pieces. Text that could be
    the start of a stop string is held back until it is known not to be one, so a client
    never sees part of a stop string."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = stop
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """What may be shown now, and whether a stop string was found (generation ends)."""
        held = self._held + text
        found = [i for i in (held.find(s) for s in self.stop) if i >= 0]
        if found:
            self._held = ""
            return held[: min(found)], True
        keep = max((n for s in self.stop for n in range(len(s) - 1, 0, -1)
                    if held.endswith(s[:n])), default=0)  # fmt: skip
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """The text held back, once generation has ended without a stop string."""
        held, self._held = self._held, ""
        return held


@dataclass(frozen=True)
class Model:
    name: str
    kind: str  # "base" or "adapter"
    base_model: str
    checkpoint_id: str = ""
    adapter_uri: str = ""
    verdict: str = ""


@dataclass
class Models:
    """The models served, by name, and the `latest` alias. Locked, so that a listing or a
    resolution never sees an adapter half added, whichever thread asks."""

    base: Model
    adapters: dict[str, Model] = field(default_factory=dict)
    latest: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self, name: str) -> Model:
        """A request's model: a name, "base", "latest", or "" (latest if any, else base)."""
        with self._lock:
            if name in ("", LATEST):
                if self.latest is not None:
                    return self.adapters[self.latest]
                if name == LATEST:
                    raise NotFound("no adapter has been promoted yet: there is no 'latest'")
                return self.base
            if name == BASE:
                return self.base
            if name in self.adapters:
                return self.adapters[name]
        raise NotFound(f"no model {name!r}: {', '.join(self.names())}")

    def add(self, adapter: Model, *, make_latest: bool) -> None:
        check_adapter_name(adapter.name)
        with self._lock:
            self.adapters[adapter.name] = adapter
            if make_latest:
                self.latest = adapter.name

    def remove(self, name: str) -> Model:
        with self._lock:
            if name not in self.adapters:
                raise NotFound(f"no adapter {name!r} is loaded")
            if self.latest == name:
                self.latest = None
            return self.adapters.pop(name)

    def names(self) -> list[str]:
        with self._lock:
            return [BASE, *sorted(self.adapters)] + ([LATEST] if self.latest else [])

    def listing(self) -> list[tuple[Model, list[str]]]:
        """Every model with its aliases."""
        with self._lock:
            models = [self.base, *(self.adapters[n] for n in sorted(self.adapters))]
            return [(m, [LATEST] if m.name == self.latest else []) for m in models]


class IncrementalText:
    """Token ids to text as they come, decoding a short window each time rather than the
    whole completion (vLLM's incremental detokenization): the window starts a few tokens
    back, in the prompt at first, so a word's leading space decodes as it does mid-text, and
    a character split across tokens waits for its last byte."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: list[int]) -> None:
        self.decode = decode
        self.ids = list(prompt_ids[-5:])
        self.prefix = 0
        self.read = len(self.ids)

    def add(self, token_ids: list[int], *, last: bool = False) -> str:
        self.ids += token_ids
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and (last or not after.endswith("\ufffd")):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""
