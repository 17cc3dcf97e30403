"""The worker loop's handler on `eval-results`: a promoted checkpoint's adapter is fetched,
loaded next to the others and made `latest`, while requests go on; a rejected one is only
logged. Every replica reads every verdict from the start (a consumer group of its own), so
after a restart it loads the same adapters and the last promotion is `latest` again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from pipeline.errors import BadInput, Retryable
from pipeline.messages import EvalResult, Message
from services.inference.adapters import Adapters
from services.inference.core import ApiError, Model, Models, NotFound

log = logging.getLogger("inference.promotion")
T = TypeVar("T")


class Promotions:
    def __init__(
        self,
        adapters: Adapters,
        models: Models,
        loop: asyncio.AbstractEventLoop,
        *,
        max_adapters: int,
    ) -> None:
        self.adapters = adapters
        self.models = models
        self.loop = loop  # the server's: the engine and the model table belong to it
        self.max_adapters = max_adapters
        self.promoted: list[str] = []  # oldest first

    def handle(self, result: EvalResult) -> list[Message]:
        if result.verdict != "promote":
            log.info("%s rejected: %s", result.checkpoint_id, result.reason)
            return []
        base = self.models.base.base_model
        if not _same_model(result.base_model, base):
            log.warning("%s was trained on %s, not on the %s served here: not loaded",
                        result.checkpoint_id, result.base_model, base)  # fmt: skip
            return []
        adapter = Model(result.checkpoint_id, "adapter", base, checkpoint_id=result.checkpoint_id,
                        adapter_uri=result.adapter_uri, verdict=result.verdict)  # fmt: skip
        try:
            self._on_loop(self.adapters.load(adapter, make_latest=True))
        except ApiError as exc:  # not there, not an adapter: this message's fault
            raise BadInput(str(exc), reason="adapter_unloadable") from exc
        except OSError as exc:  # the blob store, the disk: they may come back
            raise Retryable(f"loading {adapter.name}: {exc}") from exc
        if adapter.name in self.promoted:
            self.promoted.remove(adapter.name)
        self.promoted.append(adapter.name)
        while len(self.promoted) > self.max_adapters:
            oldest = self.promoted.pop(0)
            try:
                self._on_loop(self.adapters.unload(oldest))
            except NotFound:  # unloaded by hand already (UnloadAdapter)
                pass
        return []

    def _on_loop(self, work: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()  # type: ignore[arg-type]


def _same_model(a: str, b: str) -> bool:
    """The same hub id, or the same directory however it is written."""
    if a == b:
        return True
    return Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve()
