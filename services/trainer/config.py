"""The trainer's settings, from TRAINER_* variables (and the shared KAFKA_/BLOB_ ones)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from pipeline import topics
from pipeline.curation.dataset import Fields
from pipeline.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINER_", frozen=True, extra="ignore")

    service_name: str = "trainer"
    input_topic: str = topics.PAIRS

    #: A recipe file, or a bundled recipe's name (services/trainer/recipes).
    recipe: str = "stories260k-lora"
    #: Replaces the recipe's base_model (a hub id or a local directory).
    base_model: str | None = Field(
        None, validation_alias=AliasChoices("TRAINER_BASE_MODEL", "DISTILLERY_BASE_MODEL")
    )

    #: A run is trained once this many pairs arrived since its last snapshot...
    min_new_pairs: int = Field(100, ge=1)
    #: ... and none for this long (the synthesizers are done with it, for now).
    idle_seconds: float = Field(60.0, ge=0)
    #: How often triggers and `distillery train --run` requests are looked at.
    poll_seconds: float = Field(2.0, gt=0)

    #: When a pair's generator terms forbid training the base model: refuse the snapshot, or
    #: train and say so (in the log, the checkpoint's metrics and the dataset card).
    on_terms_violation: Literal["refuse", "warn"] = "refuse"
    #: A YAML table of model terms replacing the built-in one (pipeline/terms.py).
    terms_table: Path | None = None

    #: Curation of each snapshot (see `distillery curate --help`).
    near_duplicate_fields: Fields = Fields.ALL
    near_duplicate_threshold: float = Field(0.7, gt=0, le=1)
    eval_fraction: float = Field(0.1, ge=0, lt=1)

    #: Local scratch: snapshots, checkpoints to resume from. A persistent volume in k8s, so a
    #: restarted trainer goes on from its last checkpoint. Default: $DISTILLERY_HOME/trainer.
    work_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("DISTILLERY_HOME", ".distillery")) / "trainer"
    )
    #: What runs `-m services.trainer.train ...`: the Python interpreter by default, or a
    #: multi-GPU launcher such as "torchrun --nproc-per-node 4".
    launcher: str | None = None
