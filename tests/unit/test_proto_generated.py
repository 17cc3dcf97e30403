"""The generated gRPC code is what `make proto` makes of proto/ now: regenerated here and
compared byte for byte, so an edited .proto cannot ship with stale code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_code_is_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    written = generate.generate(tmp_path)
    assert {p.name for p in written} == {
        "inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"}  # fmt: skip
    for fresh in written:
        committed = ROOT / "pipeline" / "inference_api" / fresh.name
        assert fresh.read_text() == committed.read_text(), f"run `make proto`: {fresh.name}"
    grpc_module = (tmp_path / "inference_pb2_grpc.py").read_text()
    assert "from pipeline.inference_api import inference_pb2" in grpc_module
