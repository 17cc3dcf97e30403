"""QLoRA on a CUDA device: bitsandbytes' NF4 layers on the GPU, bf16 computation, the same
run as the CPU tests otherwise. Run with `pytest -m gpu` where a GPU is; deselected in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.curation.dataset import CurationConfig, canonical_order, curate
from pipeline.curation.snapshot import write_snapshot
from services.trainer.recipe import Recipe, load_recipe
from services.trainer.train import run
from tests.support.pairs import paper_pairs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_qlora_trains_in_4bit_on_the_gpu(test_data: Path, tmp_path: Path) -> None:
    pairs = canonical_order(paper_pairs(test_data / "data" / "pdfs"))
    write_snapshot(curate(pairs, CurationConfig(eval_fraction=0.2)), tmp_path / "snapshot")
    bundled = load_recipe(Path("stories260k-lora")).model_dump()
    recipe = Recipe.model_validate(
        bundled | {"base_model": str(test_data / "models" / "stories260K"), "method": "qlora",
                   "precision": "bf16", "epochs": None, "max_steps": 60}
    )  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    result = run(recipe, tmp_path / "snapshot", tmp_path / "run")
    peak_mb = torch.cuda.max_memory_allocated() / 2**20
    assert result.eval_loss_before is not None and result.eval_loss_after is not None
    assert result.eval_loss_after < 0.85 * result.eval_loss_before
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    # The figures BENCHMARKS.md records for this test.
    print(json.dumps({"tokens_per_s": result.tokens_per_s, "peak_gpu_mb": peak_mb,
                      "loss_before": result.eval_loss_before,
                      "loss_after": result.eval_loss_after}))  # fmt: skip
