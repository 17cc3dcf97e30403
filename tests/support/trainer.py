"""Recipes for the trainer's tests (the bundled stories260K LoRA recipe, on the shared model,
for a fixed number of steps), and an adapter trained on the shared papers for the evaluator's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.curation.dataset import CurationConfig, canonical_order, curate
from pipeline.curation.snapshot import Snapshot, write_snapshot
from services.trainer.recipe import Recipe, load_recipe
from services.trainer.train import run
from tests.support.pairs import paper_pairs


def stories_recipe(test_data: Path, **update: object) -> Recipe:
    """`stories260k-lora` on $DISTILLERY_TEST_DATA's model, 60 steps, with `update` applied
    (validated, so a bad value fails here)."""
    bundled = load_recipe(Path("stories260k-lora")).model_dump()
    return Recipe.model_validate(
        bundled | {"base_model": str(test_data / "models" / "stories260K"), "epochs": None,
                   "max_steps": 60, **update}
    )  # fmt: skip


@dataclass(frozen=True)
class Trained:
    recipe: Recipe
    snapshot: Path  # curated from pairs mined from the real papers, 20 % held out by document
    dataset: Snapshot
    adapter: Path


def train_on_papers(test_data: Path, root: Path, *, steps: int) -> Trained:
    """A snapshot of the shared papers' pairs and an adapter trained on it for `steps`."""
    pairs = canonical_order(paper_pairs(test_data / "data" / "pdfs"))
    dataset = write_snapshot(curate(pairs, CurationConfig(eval_fraction=0.2)), root / "snapshot")
    recipe = stories_recipe(test_data, max_steps=steps)
    adapter = run(recipe, dataset.directory, root / "run").adapter_dir
    return Trained(recipe, dataset.directory, dataset, adapter)
