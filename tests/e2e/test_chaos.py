"""The demo's run again, as `distillery run CONFIG --detach` and `distillery status RUN`,
while services are SIGKILLed five times at random moments and the supervisor restarts them:
the dataset (its pair ids and its hash) comes out as in the undisturbed run, nothing is lost
or duplicated in it, and no good input is dead-lettered.

The moments are spread over the first half of the undisturbed run's length, two of them in
its first seconds, where the documents stream through the scraper, the extractor and the
synthesizer. Each kill
picks the service of the stage in progress or, as often, any service: a kill of an idle one
tests little. The seed is printed; `CHAOS_SEED=N` replays one."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import yaml

from pipeline import topics
from pipeline.cli_common import read_all
from pipeline.cli_run import load_summary
from pipeline.cli_stages import STAGES
from pipeline.embedded import StackState, pid_alive
from pipeline.messages import DlqRecord, RawDoc, decode
from pipeline.settings import KafkaSettings
from tests.e2e.conftest import Demo, clean_env, distillery
from tests.support.service_rig import REPO_ROOT

# Its fixture's demo run and its own: pytest-timeout counts the fixture's time too.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

KILLS = 5


def pair_ids(dataset_uri: str) -> list[str]:
    """The pair ids of a stored dataset, with their repeats, from its provenance."""
    folder = Path(dataset_uri.removeprefix("file://"))
    lines = (folder / "provenance.jsonl").read_text().splitlines()
    return [json.loads(line)["pair_id"] for line in lines]


def test_killed_services_lose_and_duplicate_nothing(
    test_data: Path, demo_run: Demo, tmp_path: Path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"CHAOS_SEED={seed}")
    rng = random.Random(seed)  # noqa: S311 - chaos, not secrets
    # The demo's run, but for what says nothing about what is lost, cut for time: a third of
    # the optimizer steps (the dataset is curated before them) and no ARC.
    recipe = yaml.safe_load((REPO_ROOT / "services/trainer/recipes/stories260k-lora.yaml")
                            .read_text())  # fmt: skip
    del recipe["epochs"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe | {"max_steps": 120}))
    config = tmp_path / "chaos.yaml"
    config.write_text(json.dumps({
        "run_id": "chaos",
        "base_model": str(test_data / "models" / "stories260K"),
        "sources": [{"kind": "folder", "path": str(test_data / "data" / "pdfs")}],
        "trainer": {"recipe": str(tmp_path / "recipe.yaml")},
        "evaluator": {"arc_tasks": [], "max_new_tokens": 48, "domain_limit": 100},
    }))  # fmt: skip
    home = tmp_path / "home"
    env = clean_env(test_data)
    started = distillery("run", str(config), "--detach", "--home", str(home), env=env,
                         timeout=300)  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    # Scraping, extraction and synthesis stream through the first seconds, training and
    # evaluation take the rest: two moments among the first, three over the rest.
    wall = demo_run.summary.wall_s
    # This run trains for a third of the demo's steps, so it is over well before the demo's
    # length: every moment falls within its first half.
    moments = sorted([rng.uniform(0.01, 0.12) * wall for _ in range(2)]
                     + [rng.uniform(0.12, 0.45) * wall for _ in range(KILLS - 2)])  # fmt: skip
    began = time.monotonic()
    kills: list[str] = []
    try:
        for moment in moments:
            time.sleep(max(0.0, began + moment - time.monotonic()))
            summary = load_summary(home, "chaos")
            assert summary is not None and summary.state == "running", (
                f"the run ended after {kills} (seed {seed}): kills must land while it runs"
            )
            state = StackState.load(home)
            assert state is not None
            stage = summary.stages[-1].name if summary.stages else "scrape"
            busy = [n for n in state.services if n.startswith(STAGES[stage] + "-")]
            name = rng.choice(busy if rng.random() < 0.5 else sorted(state.services))
            pid = state.services[name]["pid"]
            os.kill(pid, signal.SIGKILL)
            kills.append(f"{name} during {stage} at {time.monotonic() - began:.0f}s")
            _restarted(home, name, pid)
        follow = distillery("status", "chaos", "--home", str(home), env=env, timeout=1500)
        assert follow.returncode == 0, follow.stdout[-4000:] + follow.stderr[-4000:]
        summary = load_summary(home, "chaos")
        assert summary is not None and summary.state == "done"
        state = StackState.load(home)
        assert state is not None
        dead_letters = {t: read_all(KafkaSettings(bootstrap_servers=state.bootstrap), topics.dlq(t))
                        for t in topics.PIPELINE}  # fmt: skip
    finally:
        distillery("down", "--home", str(home), env=env, timeout=120)
    print(f"killed: {kills}")

    # Each kill was a restart (the supervisor's count), and the follow-up said the run is done.
    restarts = sum(int(info["restarts"]) for info in state.services.values())
    assert restarts == KILLS, (kills, state.services)
    assert "run chaos done" in follow.stdout

    undisturbed = demo_run.summary
    counts = {s.name: s.counts for s in summary.stages}
    print("replayed:", {k: v for c in counts.values() for k, v in c.items() if "_replayed" in k})
    expected = {s.name: s.counts for s in undisturbed.stages}
    for stage, name in (("scrape", "documents"), ("extract", "chunks"), ("synthesize", "pairs")):
        assert counts[stage][name] == expected[stage][name], (stage, kills, seed)
    assert summary.pair_ids_sha256 == undisturbed.pair_ids_sha256
    assert summary.dataset is not None and undisturbed.dataset is not None
    assert summary.dataset.sha256 == undisturbed.dataset.sha256, (kills, seed)
    ids = pair_ids(summary.dataset.uri)
    assert len(ids) == len(set(ids)) == summary.dataset.train_n + summary.dataset.eval_n
    assert set(ids) == set(pair_ids(undisturbed.dataset.uri))

    # The only dead letters are the two bad papers', once or again after a replay.
    assert summary.dead_lettered == undisturbed.dead_lettered
    assert {t: n for t, n in dead_letters.items() if n and t != topics.RAW_DOCS} == {}
    bad = {decode(RawDoc, decode(DlqRecord, r.value).original_value()).source.url.rsplit("/", 1)[-1]
           for r in dead_letters[topics.RAW_DOCS]}  # fmt: skip
    assert bad == set(undisturbed.dead_lettered)


def _restarted(home: Path, name: str, killed: int, timeout_s: float = 60) -> None:
    """Wait until the supervisor has started `name` again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = StackState.load(home)
        pid = state.services[name]["pid"] if state else None
        if isinstance(pid, int) and pid != killed and pid_alive(pid):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} was not restarted within {timeout_s:.0f}s of its SIGKILL")
