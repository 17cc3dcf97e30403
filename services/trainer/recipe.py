"""Training recipes: YAML files (torchtune-style) that name what to train and how. One frozen
model per section; a recipe is checked whole when it is loaded, naming each bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUNDLED = Path(__file__).parent / "recipes"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Lora(_Section):
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    #: Module names, or "all-linear" (every linear layer but the output head, as QLoRA does).
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class Optim(_Section):
    lr: float = Field(2e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class Data(_Section):
    #: chat_template: the tokenizer's own; alpaca: Stanford Alpaca's prompt; question_answer:
    #: "question: … answer: …", the consulting-site project's.
    prompt_format: Literal["chat_template", "alpaca", "question_answer"] = "alpaca"
    max_seq_len: int = Field(512, ge=8)
    packing: bool = True
    #: Loss on the answer only: prompt tokens get label -100.
    completion_only: bool = True


class Recipe(_Section):
    name: str
    base_model: str  # a hub id or a local directory
    method: Literal["lora", "qlora", "full"] = "lora"
    lora: Lora = Lora()
    optim: Optim = Optim()
    data: Data = Data()
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 42

    @model_validator(mode="after")
    def _length(self) -> Recipe:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("give epochs or max_steps, one of them")
        return self


def load_recipe(path: Path) -> Recipe:
    """A recipe file, or a bundled recipe by name ("stories260k-lora")."""
    if not path.exists() and (BUNDLED / f"{path}.yaml").exists():
        path = BUNDLED / f"{path}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML ({exc})") from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from None
