"""The evaluator's handler on a file blob store (no broker), and the service on the real broker:
checkpoints in, reports stored, `eval-results` out. Real lm-eval runs in the child process on
stories260K: an adapter trained on the shared papers is promoted, an untrained one (the base
exactly) is rejected, and a stopped service evaluates again when it starts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from pathlib import Path

import openai
import pytest
from prometheus_client import CollectorRegistry

from pipeline import topics
from pipeline.blobstore import BlobStore, open_store
from pipeline.errors import BadInput, Retryable
from pipeline.messages import Checkpoint, EvalResult, decode
from pipeline.settings import BlobSettings, KafkaSettings
from services.evaluator.config import EvaluatorSettings
from services.evaluator.evaluation import Evaluator, stored_report
from services.evaluator.judge import Judge
from services.evaluator.metrics import EvaluatorMetrics
from services.evaluator.report import Report
from tests.support.bus_harness import TopicReader
from tests.support.evaluator import stage, untrained_adapter
from tests.support.fake_llm import FakeLLM, Fault
from tests.support.judge import judge_by_reference
from tests.support.service_rig import ServiceRig
from tests.support.trainer import Trained

pytestmark = pytest.mark.integration

ARC_LIMIT, DOMAIN_LIMIT = 40, 60


def settings(test_data: Path, work: Path, **update: object) -> EvaluatorSettings:
    return EvaluatorSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"),  # never used: no broker here
        arc_dir=test_data / "data" / "arc", arc_limit=ARC_LIMIT, domain_limit=DOMAIN_LIMIT,
        max_new_tokens=48, work_dir=work, **update,
    )  # fmt: skip


def evaluate(evaluator: Evaluator, checkpoint: Checkpoint) -> EvalResult:
    (result,) = asyncio.run(evaluator.handle(checkpoint))
    return result


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return open_store(BlobSettings(store_uri=(tmp_path / "blobs").as_uri()))


def test_a_trained_adapter_is_promoted_with_its_report_stored(
    test_data: Path, paper_adapter: Trained, blobs: BlobStore, tmp_path: Path
) -> None:
    checkpoint = stage(blobs, paper_adapter.dataset, paper_adapter.adapter, "ckpt-trained",
                       base_model=paper_adapter.recipe.base_model)  # fmt: skip
    evaluator = Evaluator(settings(test_data, tmp_path / "work"), blobs,
                          EvaluatorMetrics("evaluator", CollectorRegistry()))  # fmt: skip
    result = evaluate(evaluator, checkpoint)

    assert result.verdict == "promote", result.reason
    assert result.reason.startswith("domain/rougeL improved by")
    assert set(result.scores) == {
        "arc_easy/acc", "arc_easy/acc_norm", "arc_challenge/acc", "arc_challenge/acc_norm",
        "domain/rougeL", "domain/rouge1",
        "perplexity/word_perplexity", "perplexity/bits_per_byte",
    }  # fmt: skip
    domain = result.scores["domain/rougeL"]
    assert domain.ci_low is not None and 0 < domain.ci_low < domain.delta
    assert domain.delta == pytest.approx(domain.tuned - domain.base)
    bpb = result.scores["perplexity/bits_per_byte"]
    assert not bpb.higher_is_better and bpb.ci_high is not None and bpb.ci_high < 0
    for task in ("arc_easy", "arc_challenge"):  # a 260K-parameter model guesses
        assert 0.05 <= result.scores[f"{task}/acc"].base <= 0.5

    # The report: beside the page, its JSON and a review sheet of every domain example.
    assert result.report_uri == blobs.uri("evaluations/ckpt-trained/report.html")
    report = stored_report(blobs, "ckpt-trained")
    assert isinstance(report, Report) and report.scores == result.scores
    assert 0 < len(report.improved) <= 10 and all(
        e.tuned_score > e.base_score for e in report.improved
    )
    sheet = blobs.get(blobs.uri("evaluations/ckpt-trained/review.csv")).decode()
    rows = list(csv.DictReader(io.StringIO(sheet)))
    assert len(rows) == DOMAIN_LIMIT and all(r["tuned"] or r["base"] for r in rows)
    # Per document: the held-out papers by title, every domain example in one of them.
    lines = (paper_adapter.snapshot / "provenance.jsonl").read_text().splitlines()
    provenance = [json.loads(line) for line in lines]
    held_out = {p["source"]["title"] for p in provenance if p["split"] == "eval"}
    assert {d.document for d in report.documents} <= held_out
    assert sum(d.n for d in report.documents) == DOMAIN_LIMIT
    page = blobs.get(result.report_uri).decode()
    assert "promoted" in page and report.improved[0].tuned.strip()[:20] in page.replace(
        "&#x27;", "'").replace("&quot;", '"').replace("&amp;", "&")  # fmt: skip
    assert not (tmp_path / "work" / "ckpt-trained").exists()

    # Delivered again: answered from the stored report, no evaluation (no Python to run one).
    again = Evaluator(evaluator.settings, blobs, evaluator.metrics, python="/nonexistent")
    assert evaluate(again, checkpoint) == result


def test_an_adapter_that_changes_nothing_is_rejected_and_the_judge_sees_ties(
    test_data: Path, paper_adapter: Trained, blobs: BlobStore, tmp_path: Path
) -> None:
    base_model = paper_adapter.recipe.base_model
    adapter = untrained_adapter(base_model, tmp_path / "untrained")
    checkpoint = stage(blobs, paper_adapter.dataset, adapter, "ckpt-untrained",
                       base_model=base_model)  # fmt: skip
    config = settings(test_data, tmp_path / "work", perplexity=False)

    def judged(fake: FakeLLM, python: str) -> EvalResult:
        async def go() -> EvalResult:
            async with openai.AsyncOpenAI(api_key="test-key", base_url=fake.openai_base_url,
                                          max_retries=0) as client:  # fmt: skip
                judge = Judge(client, "judge-model", limit=20)
                evaluator = Evaluator(config, blobs, EvaluatorMetrics("e", CollectorRegistry()),
                                      judge, python=python)  # fmt: skip
                (result,) = await evaluator.handle(checkpoint)
                return result

        return asyncio.run(go())

    # The judge fails after the evaluation: retried later, the evaluation is not redone (no
    # Python to run one the second time).
    with FakeLLM(fault_rate=1.0, random_faults=[Fault.UNAVAILABLE]) as overloaded:
        with pytest.raises(Retryable):
            judged(overloaded, sys.executable)
    assert stored_report(blobs, "ckpt-untrained") is None
    with FakeLLM(responder=judge_by_reference) as fake:
        result = judged(fake, "/nonexistent")
    assert result.verdict == "reject"
    assert result.reason == (
        "domain/rougeL did not improve beyond its interval (+0.0000, 95% CI [+0.0000, +0.0000])"
    )
    assert all(s.delta == 0 for s in result.scores.values()), result.scores
    judge_score = result.scores["judge/win_rate"]  # the same answers: a tie every time
    assert (judge_score.base, judge_score.tuned) == (0.5, 0.5)
    report = stored_report(blobs, "ckpt-untrained")
    assert report is not None and report.improved == report.degraded == []


def test_a_missing_adapter_or_a_failing_evaluation_is_a_bad_checkpoint(
    test_data: Path, paper_adapter: Trained, blobs: BlobStore, tmp_path: Path
) -> None:
    checkpoint = stage(blobs, paper_adapter.dataset, paper_adapter.adapter, "ckpt-x",
                       base_model=str(tmp_path / "no-such-model"))  # fmt: skip
    evaluator = Evaluator(settings(test_data, tmp_path / "work"), blobs,
                          EvaluatorMetrics("evaluator", CollectorRegistry()))  # fmt: skip
    elsewhere = checkpoint.model_copy(update={"adapter_uri": blobs.uri("checkpoints/gone")})
    with pytest.raises(BadInput) as missing:
        evaluate(evaluator, elsewhere)
    assert missing.value.reason == "blob_missing"
    with pytest.raises(BadInput) as failed:
        evaluate(evaluator, checkpoint)
    assert failed.value.reason == "evaluation_failed"
    assert "no-such-model" in str(failed.value)
    assert stored_report(blobs, "ckpt-x") is None
    assert not (tmp_path / "work" / "ckpt-x").exists()  # dead-lettered: nothing kept

    # Ended by a signal (the OOM killer, say): not the checkpoint's fault, tried again.
    killed = tmp_path / "killed-python"
    killed.write_text("#!/bin/sh\nkill -9 $$\n")
    killed.chmod(0o755)
    oom = Evaluator(evaluator.settings, blobs, evaluator.metrics, python=str(killed))
    with pytest.raises(Retryable, match="ended by signal 9"):
        evaluate(oom, checkpoint)


def test_the_service_answers_on_the_broker_and_evaluates_again_after_a_stop(
    kafka: KafkaSettings, test_data: Path, paper_adapter: Trained, tmp_path: Path
) -> None:
    base_model = paper_adapter.recipe.base_model
    blobs = open_store(BlobSettings(store_uri=(tmp_path / "blobs").as_uri()))
    checkpoint = stage(blobs, paper_adapter.dataset,
                       untrained_adapter(base_model, tmp_path / "untrained"),
                       f"ckpt-{tmp_path.name}", base_model=base_model)  # fmt: skip
    work = tmp_path / "work"
    rig = ServiceRig(
        "evaluator", kafka, tmp_path / "blobs", tmp_path / "evaluator.log",
        {topics.EVAL_RESULTS: 1},
        EVALUATOR_ARC_DIR=str(test_data / "data" / "arc"), EVALUATOR_ARC_LIMIT="20",
        EVALUATOR_DOMAIN_LIMIT="30", EVALUATOR_MAX_NEW_TOKENS="32",
        EVALUATOR_WORK_DIR=str(work), OMP_NUM_THREADS="1",
    )  # fmt: skip
    results = TopicReader(kafka, topics.EVAL_RESULTS)
    try:
        rig.start()
        offset = rig.send(checkpoint)
        # Stopped while the child evaluates: it ends at once, and nothing is committed.
        deadline = time.monotonic() + 120
        while not (work / checkpoint.checkpoint_id / "evaluate.log").exists():
            assert time.monotonic() < deadline, rig.log.read_text()
            time.sleep(0.1)
        rig.terminate(timeout_s=30)
        assert not rig.done(offset)

        rig.start()
        rig.wait(offset, timeout_s=300)
        mine = lambda r: [x for x in r.records if x.key == checkpoint.checkpoint_id.encode()]  # noqa: E731
        assert results.read_until(lambda r: len(mine(r)) >= 1, timeout_s=30)
        (record,) = mine(results)
        result = decode(EvalResult, record.value)
        assert result.verdict == "reject" and result.run_id == checkpoint.run_id
        assert rig.metric("distillery_evaluator_verdicts_total", verdict="reject") == 1
        assert blobs.exists(result.report_uri)
    finally:
        rig.stop()
        results.close()
