"""Checkpoints for the evaluator's tests: an adapter and its snapshot put in a blob store as
the trainer leaves them, and the message that names them."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from pipeline.blobstore import BlobStore, put_tree
from pipeline.curation.snapshot import Snapshot
from pipeline.messages import Checkpoint, DatasetRef


def untrained_adapter(base_model: str, directory: Path) -> Path:
    """A LoRA adapter as peft creates it: B is zero, so the tuned model is the base exactly."""
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model),
                           LoraConfig(r=4, target_modules="all-linear"))  # fmt: skip
    model.save_pretrained(directory)
    return directory


def stage(
    blobs: BlobStore,
    dataset: Snapshot,
    adapter: Path,
    checkpoint_id: str,
    *,
    base_model: str,
    run_id: str = "run-eval",
    prompt_format: str = "question_answer",
) -> Checkpoint:
    dataset_uri = put_tree(blobs, dataset.directory, f"datasets/{run_id}/{dataset.id}")
    adapter_uri = put_tree(blobs, adapter, f"checkpoints/{checkpoint_id}/adapter")
    return Checkpoint(
        checkpoint_id=checkpoint_id, run_id=run_id, base_model=base_model, method="lora",
        adapter_uri=adapter_uri,
        dataset=DatasetRef(id=dataset.id, sha256=dataset.sha256, train_n=dataset.train_n,
                           eval_n=dataset.eval_n, uri=dataset_uri),
        hyperparameters={"data.prompt_format": prompt_format},
    )  # fmt: skip
