"""The inference service as its own process on the real broker: it serves gRPC on loopback,
a promotion on `eval-results` moves `latest` to the new adapter while a stream is being
answered, a bad promotion is dead-lettered, and SIGTERM drains and exits cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import topics
from pipeline.blobstore import open_store, put_tree
from pipeline.embedded import free_port
from pipeline.inference_client import InferenceClient
from pipeline.messages import DlqRecord, EvalResult, decode
from pipeline.settings import BlobSettings, KafkaSettings
from tests.support.bus_harness import TopicReader
from tests.support.inference import first_answer
from tests.support.service_rig import ServiceRig
from tests.support.trainer import Trained

pytestmark = pytest.mark.integration

PROMPT = "question: What does the text say about adapters? answer:"


def test_a_promotion_moves_latest_without_dropping_a_stream(
    kafka: KafkaSettings, paper_adapter: Trained, tmp_path: Path
) -> None:
    blobs = open_store(BlobSettings(store_uri=(tmp_path / "blobs").as_uri()))
    uri = put_tree(blobs, paper_adapter.adapter, "checkpoints/ckpt-s/adapter")
    port = free_port()
    rig = ServiceRig(
        "inference", kafka, tmp_path / "blobs", tmp_path / "inference.log", {},
        INFERENCE_BASE_MODEL=paper_adapter.recipe.base_model, INFERENCE_HOST="127.0.0.1",
        INFERENCE_PORT=str(port), INFERENCE_WORK_DIR=str(tmp_path / "work"),
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    promote = EvalResult(
        checkpoint_id="ckpt-s", run_id="run-1", base_model=paper_adapter.recipe.base_model,
        adapter_uri=uri, scores={}, verdict="promote", reason="better",
        report_uri="file:///r.html",
    )  # fmt: skip
    dead = TopicReader(kafka, topics.dlq(rig.topic))
    try:
        rig.start()
        with InferenceClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            base = first_answer(client, PROMPT, rig.log, max_tokens=30, timeout_s=120)
            assert base.model == "base"
            stream = client.stream(PROMPT, model="base", max_tokens=400)
            first = next(stream)
            rig.wait(rig.send(promote))  # loaded while the stream is open
            rest = "".join(stream)
            assert first + rest == client.generate(PROMPT, model="base", max_tokens=400).text
            tuned = client.generate(PROMPT, max_tokens=30)
            assert tuned.model == "ckpt-s" and tuned.text != base.text

            gone = {"checkpoint_id": "ckpt-gone", "adapter_uri": blobs.uri("checkpoints/gone")}
            bad = promote.model_copy(update=gone)
            rig.wait(rig.send(bad))
            assert dead.read_until(lambda r: len(r.records) == 1, timeout_s=30)
            assert decode(DlqRecord, dead.records[0].value).reason == "adapter_unloadable"
            assert client.generate(PROMPT, max_tokens=5).model == "ckpt-s"
        # The service's own metrics beside the worker loop's: what Grafana shows.
        assert rig.metric("distillery_inference_requests_total", method="Generate",
                          code="OK") >= 4  # fmt: skip
        assert rig.metric("distillery_inference_requests_total", method="GenerateStream",
                          code="OK") == 1  # fmt: skip
        assert rig.metric("distillery_inference_tokens_total", model="ckpt-s") >= 35
        assert rig.metric("distillery_inference_first_token_seconds_count") >= 5
        assert rig.metric("distillery_inference_in_flight") == 0
        rig.terminate(timeout_s=30)
    finally:
        rig.stop()
        dead.close()
