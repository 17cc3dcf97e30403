"""The trainer as a service on the real broker: pairs in from a topic, a run requested with
`distillery train --run`, the service stopped with SIGTERM in the middle of training and
started again, and one checkpoint message out, trained from where the first process stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import topics
from pipeline.messages import Checkpoint, decode
from pipeline.settings import KafkaSettings
from tests.support.bus_harness import TopicReader
from tests.support.pairs import paper_pairs
from tests.support.service_rig import REPO_ROOT, ServiceRig
from tests.support.trainer import stories_recipe

pytestmark = pytest.mark.integration

STEPS = 150


def distillery(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO_ROOT, env={**env, "COLUMNS": "500"},  # no wrapped lines
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_requested_run_survives_a_restart_mid_training(
    kafka: KafkaSettings, test_data: Path, tmp_path: Path
) -> None:
    run_id = f"run-{tmp_path.name}"
    pairs = [
        p.model_copy(update={"run_id": run_id}) for p in paper_pairs(test_data / "data" / "pdfs")
    ]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(stories_recipe(test_data, max_steps=STEPS).model_dump(mode="json"))
    )
    work = tmp_path / "work"
    rig = ServiceRig(
        "trainer", kafka, tmp_path / "blobs", tmp_path / "trainer.log", {topics.CHECKPOINTS: 1},
        TRAINER_RECIPE=str(recipe), TRAINER_WORK_DIR=str(work), TRAINER_POLL_SECONDS="0.2",
        TRAINER_MIN_NEW_PAIRS="100000",  # only the request trains
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    checkpoints = TopicReader(kafka, topics.CHECKPOINTS)
    cli_env = {**os.environ, "BLOB_STORE_URI": rig.env["BLOB_STORE_URI"]}
    try:
        rig.start()
        rig.wait(rig.send(*pairs))
        assert rig.metric("distillery_trainer_pairs_stored_total") == len(
            {(p.pair_id, p.chunk_id) for p in pairs})  # fmt: skip
        asked = distillery("train", "--run", run_id, "--no-wait", env=cli_env)
        assert asked.returncode == 0, asked.stderr
        stored = len({(p.pair_id, p.chunk_id) for p in pairs})
        assert f"({stored} pairs stored)" in asked.stdout

        # SIGTERM once a checkpoint is on disk: the child saves another and stops, and the
        # service exits cleanly, leaving no process behind.
        deadline = time.monotonic() + 180
        while not list(work.glob("*/*/run/checkpoints/checkpoint-*/trainer_state.json")):
            assert time.monotonic() < deadline, f"no checkpoint in time: {rig.log}"
            time.sleep(0.1)
        rig.terminate(timeout_s=60)
        assert not list(work.glob("*/*/run/adapter")), "stopped too late: training had finished"
        assert (
            '"status": "stopped"'
            in (tmp_path / "blobs" / "trainer" / "runs" / run_id / "progress.json").read_text()
        )

        # Started again: the request is still open, the same snapshot resumes.
        rig.start()
        assert checkpoints.read_until(lambda r: any(_ours(r.records, run_id)), timeout_s=240)
        [checkpoint] = _ours(checkpoints.records, run_id)
        assert checkpoint.metrics["steps"] == STEPS
        assert 0 < checkpoint.metrics["resumed_from_step"] < STEPS
        assert checkpoint.metrics["eval_loss_after"] < checkpoint.metrics["eval_loss_before"]

        # The CLI, waiting this time, finds the request answered by that checkpoint.
        answered = distillery("train", "--run", run_id, env=cli_env)
        assert answered.returncode == 0, answered.stderr
        assert checkpoint.checkpoint_id in answered.stdout
        checkpoints.read_to_end()
        assert len(_ours(checkpoints.records, run_id)) == 1  # trained once
        rig.terminate(timeout_s=60)
    finally:
        rig.stop()
        checkpoints.close()


def _ours(records: list, run_id: str) -> list[Checkpoint]:  # noqa: ANN001
    found = [decode(Checkpoint, r.value) for r in records]
    return [c for c in found if c.run_id == run_id]


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    env = {**os.environ, "BLOB_STORE_URI": (tmp_path / "blobs").as_uri()}
    neither = distillery("train", env=env)
    assert neither.returncode == 1 and "give a SNAPSHOT directory" in neither.stderr
    no_out = distillery("train", str(tmp_path), env=env)
    assert no_out.returncode == 1 and "needs --out DIR" in no_out.stderr
    not_snapshot = distillery("train", str(tmp_path), "--out", str(tmp_path / "o"), env=env)
    assert (
        not_snapshot.returncode == 1
        and "is not a snapshot (no manifest.json)" in not_snapshot.stderr
    )
    (tmp_path / "manifest.json").write_text("{}")
    bad_recipe = distillery("train", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--recipe", "no-such-recipe", env=env)  # fmt: skip
    assert bad_recipe.returncode == 1 and "cannot read the recipe" in bad_recipe.stderr
