"""Recipes for the trainer's tests: the bundled stories260K LoRA recipe, on the shared model,
for a fixed number of steps."""

from __future__ import annotations

from pathlib import Path

from services.trainer.recipe import Recipe, load_recipe


def stories_recipe(test_data: Path, **update: object) -> Recipe:
    """`stories260k-lora` on $DISTILLERY_TEST_DATA's model, 60 steps, with `update` applied
    (validated, so a bad value fails here)."""
    bundled = load_recipe(Path("stories260k-lora")).model_dump()
    return Recipe.model_validate(
        bundled | {"base_model": str(test_data / "models" / "stories260K"), "epochs": None,
                   "max_steps": 60, **update}
    )  # fmt: skip
