"""The CPU engine: transformers + peft, requests batched from a queue.

One thread owns the model. It takes the waiting requests that can share a `generate` call
(the same sampling parameters; greedy ones always can) up to `max_batch_size`, left-pads
them into one batch and generates; rows on different adapters share the batch through peft's
mixed-adapter batches (`adapter_names`). A stopping criterion sees every step: it hands each
row its new token, and ends a row when it meets its end-of-sequence token, its own max_tokens
or its client going away. Requests that arrive meanwhile wait for the next batch (static
batching: vLLM is the engine that batches continuously).

Static batching punishes a batch started a moment too soon: whoever arrives just after it
waits for all of it. The callers of the batch that just ended usually send their next request
at once, so before starting a batch without them the thread waits for them, for
`batch_wait_s` at most (a dynamic batcher's queue delay). Without this, 32 closed-loop
clients settled into batches of 1 and 31, or of 16 and 16, taking turns (BENCHMARKS.md).

Adapters are loaded and unloaded under the model's lock, between batches: requests in flight
finish on the adapters they started with, and none is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

from services.inference.core import PEFT_BASE, Finish, NotFound, Sampling
from services.inference.engine import Request, Step, Tokenized

log = logging.getLogger("inference.engine")

_DONE = object()  # the end of a row's stream, after its last Step


@dataclass(eq=False)
class _Row:
    request: Request
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    generated: int = 0
    finished: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def send(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)

    def fail(self, error: Exception) -> None:
        """End the row with an error (its caller raises it), nothing after it."""
        self.finished = True
        self.send(error)
        self.send(_DONE)


def _key(sampling: Sampling) -> tuple[float, float, int | None]:
    """Rows that may share one generate call: the same sampler, and greedy is one sampler."""
    if sampling.greedy:
        return (0.0, 1.0, None)
    return (sampling.temperature, sampling.top_p, sampling.seed)


class _Steps(StoppingCriteria):
    """Called by generate after every token: hands each live row its token and says which
    rows are done."""

    def __init__(self, engine: TransformersEngine, rows: list[_Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor,
                 **kwargs: Any) -> torch.BoolTensor:  # fmt: skip
        done, steps = [], []
        for row, token in zip(self.rows, input_ids[:, -1].tolist(), strict=True):
            if not row.finished:
                if row.cancelled.is_set():
                    row.finished = True
                elif token in self.engine.eos:
                    row.finished = True
                    steps.append((row, Step([], Finish.STOP)))
                else:
                    row.generated += 1
                    self.engine.tokens_generated += 1
                    at_length = row.generated >= row.request.sampling.max_tokens
                    steps.append((row, Step([token], Finish.LENGTH if at_length else None)))
                    row.finished = at_length
            done.append(row.finished)
        if steps:  # one wake-up of the event loop per step, not one per row
            steps[0][0].loop.call_soon_threadsafe(_deliver, steps)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def _deliver(steps: list[tuple[_Row, Step]]) -> None:
    for row, step in steps:
        row.out.put_nowait(step)


class TransformersEngine(Tokenized):
    def __init__(
        self, base_model: str, *, device: str = "cpu", max_batch_size: int = 16,
        batch_wait_s: float = 0.02,
    ) -> None:  # fmt: skip
        self.tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
        self.tokenizer.padding_side = "left"  # generation continues every row at its end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device
        model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        self.model: Any = model.to(device).eval()
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._adapters: set[str] = set()
        #: Tokens handed to requests since start (what a cancelled request stops adding to).
        self.tokens_generated = 0
        self._lock = threading.Lock()  # the model: one batch or one adapter change at a time
        self._waiting: queue.Queue[_Row | None] = queue.Queue()
        self._closed = False
        self._dead: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="engine", daemon=True)
        self._thread.start()

    # --- the Engine protocol ------------------------------------------------------------------

    async def generate(self, request: Request) -> AsyncIterator[Step]:
        if request.adapter is not None and request.adapter not in self._adapters:
            raise NotFound(f"adapter {request.adapter!r} is not loaded")
        if self._dead is not None or self._closed:
            raise RuntimeError(f"the engine is stopped{f': {self._dead}' if self._dead else ''}")
        row = _Row(request, asyncio.get_running_loop(), asyncio.Queue())
        self._waiting.put(row)
        try:
            while True:
                items = [await row.out.get()]
                while not row.out.empty():  # the caller fell behind: one step for them all
                    items.append(row.out.get_nowait())
                steps: list[Step] = []
                for item in items:  # in the order they came: an error is never skipped
                    if isinstance(item, BaseException):
                        raise item
                    if isinstance(item, Step):
                        steps.append(item)
                if steps:
                    yield Step([t for s in steps for t in s.token_ids], steps[-1].finish)
                if items[-1] is _DONE:
                    return
        finally:
            row.cancelled.set()  # closed early: the client left, or a stop string was met

    async def load_adapter(self, name: str, path: Path) -> None:
        await asyncio.to_thread(self._load, name, path)

    async def unload_adapter(self, name: str) -> None:
        await asyncio.to_thread(self._unload, name)

    def close(self) -> None:
        self._closed = True
        self._waiting.put(None)
        self._thread.join(timeout=60)

    # --- the model's thread ----------------------------------------------------------------------

    def _load(self, name: str, path: Path) -> None:
        with self._lock:
            self._adapters.discard(name)  # whatever happens next, not half-loaded
            if not isinstance(self.model, PeftModel):
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            else:
                if name in self.model.peft_config:
                    self.model.delete_adapter(name)
                self.model.load_adapter(path, adapter_name=name)
            self.model.eval()
            self._adapters.add(name)

    def _unload(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise NotFound(f"adapter {name!r} is not loaded")
            self._adapters.discard(name)
            if self._adapters:
                self.model.delete_adapter(name)
            else:  # peft keeps naming the last adapter deleted: back to the plain model
                self.model = self.model.unload()

    def _serve(self) -> None:
        pending: list[_Row] = []  # in arrival order
        try:
            self._gather_and_run(pending)
        except BaseException as exc:  # the thread is dying: nobody may wait for it forever
            log.exception("the engine thread failed")
            self._dead = exc
            for row in pending:
                row.fail(RuntimeError(f"the engine stopped: {exc}"))
            raise

    def _gather_and_run(self, pending: list[_Row]) -> None:
        closing = False
        wanted = 1  # rows worth waiting for: those waiting, and the last batch's callers
        while pending or not closing:
            if not pending:
                closing = self._take(pending, block=True)
                if not pending:
                    return
            closing |= self._take(pending)
            deadline = time.monotonic() + self.batch_wait_s
            while not closing and len(pending) < min(wanted, self.max_batch_size):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                closing |= self._take(pending, block=True, timeout=left)
            for row in [r for r in pending if r.cancelled.is_set()]:
                pending.remove(row)
                row.send(_DONE)
            if not pending:
                continue
            batch = _batch(pending, self.max_batch_size)
            for row in batch:
                pending.remove(row)
            self._run(batch)
            # Those who came during the batch, and the batch's callers: without the second,
            # two halves of the clients would take turns, each batch half full.
            wanted = len(pending) + self._waiting.qsize() + len(batch)

    def _take(self, pending: list[_Row], *, block: bool = False,
              timeout: float | None = None) -> bool:  # fmt: skip
        """Every request waiting now into `pending` (with `block`, the first one waited for,
        up to `timeout`); True once `close` has been asked for."""
        closing = False
        try:
            row = self._waiting.get(block=block, timeout=timeout)
            while True:
                if row is None:
                    closing = True
                else:
                    pending.append(row)
                row = self._waiting.get_nowait()
        except queue.Empty:
            return closing

    def _run(self, rows: list[_Row]) -> None:
        with self._lock, torch.inference_mode():
            # An adapter unloaded since its request came: that request alone is refused.
            gone = [r for r in rows if r.request.adapter not in (None, *self._adapters)]
            for row in gone:
                row.fail(NotFound(f"adapter {row.request.adapter!r} was unloaded"))
            rows = [r for r in rows if r not in gone]
            if not rows:
                return
            sampling = rows[0].request.sampling
            try:
                inputs = self.tokenizer.pad(
                    {"input_ids": [r.request.prompt_ids for r in rows]}, return_tensors="pt"
                ).to(self.device)
                options: dict[str, Any] = {
                    "max_new_tokens": max(r.request.sampling.max_tokens for r in rows),
                    "stopping_criteria": [_Steps(self, rows)],
                    "pad_token_id": self.tokenizer.pad_token_id,
                    # Exactly the request's sampler: not the model's generation_config extras.
                    "do_sample": not sampling.greedy, "top_k": 0, "top_p": 1.0,
                    "temperature": 1.0, "repetition_penalty": 1.0,
                }  # fmt: skip
                if not sampling.greedy:
                    options |= {"temperature": sampling.temperature, "top_p": sampling.top_p}
                if isinstance(self.model, PeftModel):
                    options["adapter_names"] = [r.request.adapter or PEFT_BASE for r in rows]
                # A seeded request runs alone (see _batch), on a generator of its own, so its
                # text depends on its seed only and leaves the global RNG alone.
                seed = sampling.seed if not sampling.greedy else None
                with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext():
                    if seed is not None:
                        torch.manual_seed(seed)
                    self.model.generate(**inputs, **options)
            except Exception as exc:  # noqa: BLE001 - every row of the batch is told
                log.exception("generation failed for a batch of %d", len(rows))
                for row in rows:
                    row.fail(RuntimeError(f"generation failed: {exc}"))
                return
        for row in rows:
            if not row.finished and not row.cancelled.is_set():
                row.send(Step([], Finish.LENGTH))  # the batch's max_new_tokens ran out
            row.send(_DONE)


def _batch(pending: list[_Row], size: int) -> list[_Row]:
    """The oldest request and those that can share its generate call: greedy ones together;
    sampled ones with the same temperature and top_p and no seed; a seeded one alone (its
    text must not depend on its neighbours)."""
    first = pending[0].request.sampling
    if not first.greedy and first.seed is not None:
        return [pending[0]]
    key = _key(first)
    same = [r for r in pending if _key(r.request.sampling) == key
            and (r.request.sampling.greedy or r.request.sampling.seed is None)]  # fmt: skip
    return same[:size]
