"""The LLM judge against the fake OpenAI-compatible API on loopback: blind (the order of the
answers drawn per example, no model named), its verdicts read into `judge/win_rate` with an
interval like every other score, and its failures sorted into retry or refusal."""

from __future__ import annotations

import asyncio

import openai
import pytest

from pipeline.errors import BadInput, Retryable
from services.evaluator.core import Comparison, Policy, Sample, TaskRun, assess
from services.evaluator.judge import Judge, read_verdict
from tests.support.fake_llm import FakeLLM, Fault
from tests.support.judge import judge_by_reference

pytestmark = pytest.mark.integration

N = 40


def domain(outputs: list[str]) -> dict[str, TaskRun]:
    samples = [Sample(doc={"prompt": f"question {i}?", "reference": f"the answer is {i} cats"},
                      output=o, scores={"rougeL": 0.0}) for i, o in enumerate(outputs)]  # fmt: skip
    return {"distillery_domain": TaskRun(metrics={"rougeL": 0.0}, samples=samples)}


def comparison() -> Comparison:
    """The tuned model answers 30 of 40 right, the base none; 10 are the same junk."""
    tuned = [f"the answer is {i} cats" if i < 30 else "no idea" for i in range(N)]
    return Comparison(base=domain(["no idea"] * N), tuned=domain(tuned))


def judged(fake: FakeLLM, key: str = "test-key", **options: object) -> Comparison:
    """comparison() through a judge at the fake, with a client closed on its own loop."""

    async def go() -> Comparison:
        async with openai.AsyncOpenAI(api_key=key, base_url=fake.openai_base_url,
                                      max_retries=1) as client:  # fmt: skip
            return await Judge(client, "judge-model", **options).add_to(comparison())  # type: ignore[arg-type]

    return asyncio.run(go())


def test_the_judge_is_blind_and_its_verdicts_become_a_compared_score() -> None:
    with FakeLLM(responder=judge_by_reference) as fake:
        found = judged(fake, concurrency=4)
        prompts = [b["messages"][-1]["content"] for b in fake.stats.bodies]
    assert len(prompts) == N and fake.stats.max_in_flight <= 4
    # Blind: no model named, and the right answer shown first in about half the prompts.
    assert not any(w in p.lower() for p in prompts for w in ("base", "tuned", "fine-tun"))
    right_first = sum("Answer A:\nthe answer is" in p for p in prompts)
    assert 8 <= right_first <= 22, right_first  # of 30, a fair coin each
    tuned = found.tuned["judge"]
    assert [s.scores["win_rate"] for s in tuned.samples] == [1.0] * 30 + [0.5] * 10
    assert tuned.metrics["win_rate"] == pytest.approx(35 / 40)
    assert found.base["judge"].metrics["win_rate"] == pytest.approx(5 / 40)

    assessed = assess(found, Policy(domain_metric="judge/win_rate"))
    score = assessed.scores["judge/win_rate"]
    assert score.delta == pytest.approx(0.75) and score.ci_low is not None and score.ci_low > 0
    assert assessed.verdict.promote
    assert assessed.verdict.reason.startswith("judge/win_rate improved")


def test_the_order_of_answers_is_the_same_for_the_same_seed() -> None:
    with FakeLLM(responder=judge_by_reference) as fake:
        judged(fake, seed=3)
        judged(fake, seed=3)
        prompts = [b["messages"][-1]["content"] for b in fake.stats.bodies]
    assert sorted(prompts[:N]) == sorted(prompts[N:])  # they arrive in any order


def test_unreadable_verdicts_leave_their_examples_out() -> None:
    answers = iter(["A"] * 5 + ["I would rather not say."] * (N - 5))
    with FakeLLM(responder=lambda _: next(answers)) as fake:
        found = judged(fake, concurrency=1)
    assert len(found.tuned["judge"].samples) == 5


def test_a_judge_that_keeps_failing_is_retried_later_and_a_bad_key_is_refused() -> None:
    with FakeLLM(responder=judge_by_reference) as fake:
        fake.inject(*[Fault.SERVER_ERROR] * 4)
        with pytest.raises(Retryable, match="the judge at"):
            judged(fake, limit=1)
        with pytest.raises(BadInput) as refused:
            judged(fake, key="wrong", limit=1)
    assert refused.value.reason == "judge_refused"


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [("A", "A"), ("b", "B"), ("Answer B.", "B"), ("**Tie**", "tie"), ("tie.", "tie"),
     ("It's a tie.", "tie"), ("a", "A"), ("Neither", None), ("", None), ("Banana", None),
     ("a draw, I think", None)],
)  # fmt: skip
def test_verdicts_are_read_from_what_judges_write(answer: str, verdict: str | None) -> None:
    assert read_verdict(answer) == verdict
