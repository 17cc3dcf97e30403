"""The trainer's scheduler on a real blob store, with real training in a child process, and no
broker: pairs handed to `handle` as the worker loop would, checkpoint messages collected as
they are published. Time is a fake clock, so triggers are exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from peft import PeftModel
from prometheus_client import CollectorRegistry
from transformers import AutoModelForCausalLM

from pipeline.blobstore import FileBlobStore
from pipeline.curation.dataset import CurationConfig, canonical_order, curate
from pipeline.curation.snapshot import content_hash
from pipeline.errors import BadInput, Retryable
from pipeline.messages import Checkpoint, Message, Pair
from pipeline.settings import KafkaSettings
from services.trainer.config import TrainerSettings
from services.trainer.metrics import TrainerMetrics
from services.trainer.recipe import Recipe
from services.trainer.scheduler import Interrupted, Scheduler
from services.trainer.store import Request, TrainerStore
from tests.support.clock import Clock
from tests.support.pairs import LLAMA, paper_pairs
from tests.support.trainer import stories_recipe

pytestmark = pytest.mark.integration


def recipe_for(test_data: Path, steps: int = 12) -> Recipe:
    return stories_recipe(test_data, max_steps=steps)


class Rig:
    def __init__(self, root: Path, recipe: Recipe, **settings: object) -> None:
        self.settings = TrainerSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"),  # never used: no broker here
            work_dir=root / "work",
            min_new_pairs=100,
            idle_seconds=30,
            **settings,
        )
        self.blobs = FileBlobStore(root / "blobs")
        self.store = TrainerStore(self.blobs)
        self.published: list[Message] = []
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.scheduler = Scheduler(
            self.settings, self.store, recipe, self.published.append,
            TrainerMetrics("trainer", self.registry), clock=self.clock,
        )  # fmt: skip

    def feed(self, pairs: list[Pair]) -> None:
        for pair in pairs:
            assert self.scheduler.handle(pair) == []

    def checkpoints(self) -> list[Checkpoint]:
        return [m for m in self.published if isinstance(m, Checkpoint)]

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(
            f"distillery_{name}", {"service": "trainer", **labels}
        )
        return value or 0.0


@pytest.fixture(scope="module")
def papers(test_data: Path) -> list[Pair]:
    return [
        p.model_copy(update={"run_id": "run-papers"})
        for p in paper_pairs(test_data / "data" / "pdfs")
    ]


def test_a_due_run_is_curated_trained_stored_and_announced(
    papers: list[Pair], test_data: Path, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, recipe_for(test_data))
    rig.feed(papers[:60])
    rig.clock.now += 100
    rig.scheduler.tick()
    assert rig.checkpoints() == []  # 60 new pairs, 100 needed
    rig.feed(papers[60:])
    rig.clock.now += 29
    rig.scheduler.tick()
    assert rig.checkpoints() == []  # not quiet for 30 s yet
    rig.clock.now += 1
    rig.scheduler.tick()
    [checkpoint] = rig.checkpoints()

    # The dataset is what curating the same pairs gives, whatever order they came in.
    curated = curate(canonical_order(papers), CurationConfig(eval_fraction=0.1))
    assert checkpoint.dataset.sha256 == content_hash(curated)
    assert (checkpoint.dataset.train_n, checkpoint.dataset.eval_n) == (
        len(curated.train), len(curated.eval))  # fmt: skip
    assert checkpoint.run_id == "run-papers" and checkpoint.method == "lora"
    assert (
        checkpoint.hyperparameters["lora.rank"] == 8
        and checkpoint.hyperparameters["max_steps"] == 12
    )
    assert checkpoint.metrics["steps"] == 12
    assert checkpoint.metrics["eval_loss_after"] < checkpoint.metrics["eval_loss_before"]

    # Everything named is in the store; the adapter loads with peft from there.
    adapter_dir = Path(checkpoint.adapter_uri.removeprefix("file://"))
    base = AutoModelForCausalLM.from_pretrained(test_data / "models" / "stories260K")
    PeftModel.from_pretrained(base, adapter_dir)
    for uri in [*checkpoint.artifacts.values()]:
        assert Path(uri.removeprefix("file://")).exists(), uri
    assert (
        Path(checkpoint.artifacts["tokenizer"].removeprefix("file://")) / "tokenizer.json"
    ).exists()
    assert not (tmp_path / "work" / "run-papers" / checkpoint.checkpoint_id).exists()  # tidied
    assert yaml.safe_load(rig.blobs.get(checkpoint.artifacts["recipe"]))["max_steps"] == 12
    card = rig.blobs.get(checkpoint.artifacts["dataset_card"]).decode()
    assert checkpoint.dataset.sha256 in card

    assert rig.metric("trainer_pairs_stored_total") == len(
        {(p.pair_id, p.chunk_id) for p in papers}
    )
    assert rig.metric("trainer_snapshots_total", outcome="trained") == 1
    assert rig.metric("trainer_step") == 12
    progress = rig.store.progress("run-papers")
    assert progress is not None and progress["status"] == "done"

    # Replays are no new pairs; a request for the same pairs finds the snapshot trained.
    rig.feed(papers)
    assert rig.scheduler.backlog.new("run-papers") == 0
    assert rig.metric("trainer_pairs_stored_total") == len(
        {(p.pair_id, p.chunk_id) for p in papers}
    )
    rig.clock.now += 1000
    rig.scheduler.tick()
    rig.store.request(Request(id="r1", run_id="run-papers"))
    rig.scheduler.tick()
    assert len(rig.checkpoints()) == 1
    state = rig.store.state("run-papers")
    assert state.request_id == "r1" and state.request_outcome is not None
    assert state.request_outcome.checkpoint_id == checkpoint.checkpoint_id


def test_a_restarted_scheduler_finds_the_pairs_not_yet_trained(
    papers: list[Pair], test_data: Path, tmp_path: Path
) -> None:
    first = Rig(tmp_path, recipe_for(test_data))
    first.feed(papers[:150])
    # A new process over the same store (the first was killed before training).
    second = Rig(tmp_path, recipe_for(test_data))
    second.scheduler.resume_backlog()
    assert second.scheduler.backlog.new("run-papers") == 150
    second.clock.now += 30
    second.scheduler.tick()
    [checkpoint] = second.checkpoints()
    assert checkpoint.dataset.train_n + checkpoint.dataset.eval_n <= 150
    third = Rig(tmp_path, recipe_for(test_data))
    third.scheduler.resume_backlog()
    assert third.scheduler.backlog.new("run-papers") == 0


def _llama_pairs(papers: list[Pair], n: int) -> list[Pair]:
    """Pairs as if Llama 3 had written them: its licence allows training Llama models only."""
    return [p.model_copy(update={"generator": LLAMA, "run_id": "run-llama"}) for p in papers[:n]]


def test_pairs_whose_terms_forbid_the_base_model_are_refused(
    papers: list[Pair], test_data: Path, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, recipe_for(test_data))
    rig.feed(_llama_pairs(papers, 120))
    rig.store.request(Request(id="r1", run_id="run-llama"))
    rig.scheduler.tick()
    assert rig.checkpoints() == []
    state = rig.store.state("run-llama")
    assert state.request_outcome is not None and state.request_outcome.outcome == "refused"
    assert "Meta Llama 3 Community License" in state.request_outcome.reason
    assert "stories260K" in state.request_outcome.reason
    assert rig.metric("trainer_snapshots_total", outcome="refused") == 1
    assert not (tmp_path / "work" / "run-llama" / "next-snapshot").exists()
    # With the policy changed to warn, the refused snapshot is trained after all.
    rig.scheduler.settings = rig.settings.model_copy(update={"on_terms_violation": "warn"})
    rig.store.request(Request(id="r2", run_id="run-llama"))
    rig.scheduler.tick()
    assert len(rig.checkpoints()) == 1


def test_with_warn_such_pairs_train_and_the_card_says_so(
    papers: list[Pair], test_data: Path, tmp_path: Path
) -> None:
    rig = Rig(tmp_path, recipe_for(test_data, steps=4), on_terms_violation="warn")
    rig.feed(_llama_pairs(papers, 120))
    rig.clock.now += 30
    rig.scheduler.tick()
    [checkpoint] = rig.checkpoints()
    assert checkpoint.metrics["terms_violations"] == 1
    card = rig.blobs.get(checkpoint.artifacts["dataset_card"]).decode()
    assert "Terms: Meta Llama 3 Community License (llama3)" in card


def test_a_failed_training_is_recorded_and_retried_only_when_asked(
    papers: list[Pair], test_data: Path, tmp_path: Path
) -> None:
    broken = recipe_for(test_data).model_copy(update={"base_model": str(tmp_path / "no-model")})
    rig = Rig(tmp_path, broken)
    rig.feed(papers[:120])
    rig.clock.now += 30
    rig.scheduler.tick()
    state = rig.store.state("run-papers")
    [outcome] = state.outcomes.values()
    assert outcome.outcome == "failed" and "exited with status 1" in outcome.reason
    assert state.in_progress is None
    assert rig.metric("trainer_snapshots_total", outcome="failed") == 1
    rig.feed(papers[:120])  # replays: no new pair, so nothing comes due
    rig.clock.now += 1000
    rig.scheduler.tick()
    assert rig.metric("trainer_snapshots_total", outcome="failed") == 1
    rig.store.request(Request(id="again", run_id="run-papers"))  # asked: tried again
    rig.scheduler.tick()
    assert rig.metric("trainer_snapshots_total", outcome="failed") == 2


def test_a_run_cut_short_resumes_its_snapshot_before_newer_pairs(
    papers: list[Pair], test_data: Path, tmp_path: Path
) -> None:
    """The child killed from outside (here by its launcher, with SIGKILL), then the trainer
    restarted while more pairs came in: the snapshot in training is finished first, from its
    own pairs; the newer pairs wait for the next one."""
    first = Rig(tmp_path, recipe_for(test_data), launcher="sh -c 'kill -KILL $$' sh")
    first.feed(papers[:150])
    first.clock.now += 30
    with pytest.raises(Interrupted, match="ended by a signal"):
        first.scheduler.tick()
    in_training = first.store.state("run-papers").in_progress
    assert in_training is not None and first.checkpoints() == []
    first.clock.now += 30
    with pytest.raises(Interrupted):
        first.scheduler.tick()  # came due again, and resumed the same snapshot
    first.feed(papers[150:200])

    second = Rig(tmp_path, recipe_for(test_data))
    second.scheduler.resume_backlog()
    assert second.scheduler.backlog.new("run-papers") == 50
    second.scheduler.tick()
    [checkpoint] = second.checkpoints()
    assert checkpoint.checkpoint_id == in_training.checkpoint_id
    assert checkpoint.dataset.sha256 == in_training.sha256
    assert second.scheduler.backlog.new("run-papers") == 50  # not in that snapshot
    assert second.store.state("run-papers").in_progress is None


@pytest.mark.parametrize("run_id", ["/etc/x", "team/exp1", "..", "a b", ""])
def test_run_ids_that_are_not_one_path_segment_are_refused(
    papers: list[Pair], test_data: Path, tmp_path: Path, run_id: str
) -> None:
    rig = Rig(tmp_path, recipe_for(test_data))
    pair = papers[0].model_construct(**(papers[0].__dict__ | {"run_id": run_id}))
    with pytest.raises(BadInput, match="the trainer takes letters"):
        rig.scheduler.handle(pair)
    assert rig.blobs.names("trainer") == []


def test_a_store_that_fails_makes_the_pair_retried_not_dropped(
    papers: list[Pair], test_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path, recipe_for(test_data))

    def down(name: str, data: bytes) -> str:
        raise OSError("connection refused")

    monkeypatch.setattr(rig.blobs, "put_as", down)
    with pytest.raises(Retryable, match="could not store the pair: connection refused"):
        rig.scheduler.handle(papers[0])
    assert rig.scheduler.backlog.new("run-papers") == 0
