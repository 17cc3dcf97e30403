"""The synthesizer's generators against a fake of the paid API on 127.0.0.1, through the real
openai and groq SDKs: structured output, the text format, every fault the fake can inject,
rate limits, budgets, the start-up check and a fuzz corpus of malformed answers on the wire."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.synthesizer.core import grounding
from services.synthesizer.generators import Generation, Prompted
from services.synthesizer.llm import ChatClient, ConfigError, Provider, Structured, Usage, sdk
from services.synthesizer.prompts import load_prompt
from services.synthesizer.ratelimit import Budget, BudgetExhausted, Limiter
from tests.support.fake_llm import FakeLLM
from tests.support.synthesizer_rig import chunk
from tests.unit.test_synthesizer_parse import malformed_corpus

pytestmark = pytest.mark.integration

TEXT = (
    "Low-rank adaptation freezes the pretrained model weights during fine-tuning. "
    "It injects trainable rank decomposition matrices into each layer of the Transformer. "
    "This reduces the number of trainable parameters by ten thousand times for GPT-3. "
    "The adapted model has no additional inference latency compared with full fine-tuning."
)


class Events:
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.usage = Usage()

    def request(self, outcome: str, seconds: float) -> None:
        self.outcomes.append(outcome)

    def used(self, usage: Usage) -> None:
        self.usage += usage


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def generator(
    fake: FakeLLM,
    provider: Provider = "openai",
    structured: Structured = "json_schema",
    *,
    rpm: float | None = None,
    timeout_s: float = 10.0,
    prompt: str = "triples-v1",
) -> tuple[Prompted, Events]:
    url = fake.groq_base_url if provider == "groq" else fake.openai_base_url
    events = Events()
    client = ChatClient(
        sdk(provider, fake.key, url, timeout_s),
        "fake-model",
        Limiter(rpm, None),
        events,
        structured=structured,
        attempts=4,
        backoff_s=0.05,
    )
    made = Prompted(provider, client, load_prompt(prompt), temperature=0.3, max_tokens=512)
    return made, events


def run(made: Prompted, budget: Budget | None = None, times: int = 1) -> Generation:
    """`times` chunks in turn on one event loop (the SDK's connections belong to one); the
    last one's generation."""

    async def turns() -> Generation:
        spend = budget or Budget(None, None, None)
        for _ in range(times - 1):
            await made.generate(chunk(TEXT), spend)
        return await made.generate(chunk(TEXT), spend)

    return asyncio.run(turns())


@pytest.mark.parametrize(
    ("provider", "structured"),
    [("openai", "json_schema"), ("groq", "json_object"), ("openai-compatible", "none")],
)
def test_each_sdk_and_answer_format_gives_grounded_triples(
    fake: FakeLLM, provider: Provider, structured: Structured
) -> None:
    made, events = generator(fake, provider, structured)
    generation = run(made)
    assert len(generation.triples) == 3 and not generation.rejected
    for t in generation.triples:
        assert t.output in TEXT and grounding(t.output, TEXT) == 1.0
        assert t.task == "instruction"
    body: dict[str, Any] = fake.stats.bodies[-1]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 512
    assert body["messages"][1]["content"].endswith("Text:\n" + TEXT)
    kind = {"json_schema": "json_schema", "json_object": "json_object"}.get(structured)
    assert body.get("response_format", {}).get("type") == kind
    assert events.outcomes == ["ok"]
    assert generation.usage.prompt_tokens > 100 and generation.usage.completion_tokens > 10


def test_429_pauses_everyone_for_retry_after_then_succeeds(fake: FakeLLM) -> None:
    made, events = generator(fake)
    fake.inject("429")
    start = time.monotonic()
    generation = run(made)
    assert time.monotonic() - start >= 0.95  # the fake says retry-after 1 s
    assert len(generation.triples) == 3
    assert events.outcomes == ["rate_limited", "ok"]
    assert made.client.limiter.waited_s >= 0.9


@pytest.mark.parametrize("fault", ["500", "503", "bad_body"])
def test_server_errors_are_retried_with_backoff(fake: FakeLLM, fault: str) -> None:
    made, events = generator(fake)
    fake.inject(fault, fault)
    generation = run(made)
    assert len(generation.triples) == 3
    assert events.outcomes[-1] == "ok" and len(events.outcomes) == 3


def test_a_provider_that_keeps_failing_is_retryable_for_the_worker_loop(fake: FakeLLM) -> None:
    from pipeline.errors import Retryable

    made, events = generator(fake)
    fake.inject(*["500"] * 4)
    with pytest.raises(Retryable) as info:
        run(made)
    assert info.value.reason == "provider_error"
    assert events.outcomes == ["http_500"] * 4


def test_a_hung_request_times_out_and_is_retried() -> None:
    with FakeLLM(hang=30) as fake:
        made, events = generator(fake, timeout_s=0.5)
        fake.inject("hang")
        generation = run(made)
    assert len(generation.triples) == 3
    assert events.outcomes == ["bad_response", "ok"]


@pytest.mark.parametrize("fault", ["malformed", "empty"])
def test_a_bad_answer_gets_one_repair_request(fake: FakeLLM, fault: str) -> None:
    made, events = generator(fake, structured="none")
    fake.inject(fault)
    generation = run(made)
    assert generation.repaired and len(generation.triples) == 3
    assert len(fake.stats.bodies) == 2
    repair = fake.stats.bodies[-1]["messages"]
    if fault == "empty":
        assert len(repair) == 2  # nothing to correct: asked again
    else:
        assert repair[-2]["role"] == "assistant" and "could not be read" in repair[-1]["content"]


def test_two_bad_answers_are_rejected_with_the_reason(fake: FakeLLM) -> None:
    made, _ = generator(fake, structured="none")
    fake.inject("malformed", "malformed")
    generation = run(made)
    assert generation.triples == [] and generation.rejected == ["malformed_no_triples"]


@pytest.mark.parametrize("structured", ["json_schema", "none"])
def test_a_truncated_answer_keeps_its_complete_triples_without_a_repair(
    fake: FakeLLM, structured: Structured
) -> None:
    made, _ = generator(fake, structured=structured)
    fake.inject("truncated")
    generation = run(made)
    assert not generation.repaired and 1 <= len(generation.triples) < 3
    assert all(t.output in TEXT for t in generation.triples)  # none of them cut
    assert len(fake.stats.bodies) == 1


def test_fuzz_corpus_on_the_wire_never_crashes() -> None:
    corpus = malformed_corpus()
    answers = iter(corpus)
    outcomes: dict[str, int] = {}

    async def every(made: Prompted) -> None:
        for _ in range(len(corpus) // 2):  # each generate asks twice: answer and repair
            generation = await made.generate(chunk(TEXT), Budget(None, None, None))
            key = "parsed" if generation.triples else generation.rejected[0]
            outcomes[key] = outcomes.get(key, 0) + 1

    with FakeLLM(responder=lambda _request: next(answers, "")) as fake:
        asyncio.run(every(generator(fake, structured="none")[0]))
    assert sum(outcomes.values()) == len(corpus) // 2
    assert all(k == "parsed" or k.startswith("malformed_") for k in outcomes), outcomes


def test_the_limiter_keeps_concurrent_chunks_under_the_rate_limit() -> None:
    with FakeLLM(rpm=600, latency=0.05) as fake:  # 10/s, one second's worth at once
        made, events = generator(fake, rpm=600 * 0.97)

        async def many() -> list[Generation]:
            budget = Budget(None, None, None)
            texts = [f"{TEXT} Chunk {i} adds one more sentence of eight words." for i in range(30)]
            return await asyncio.gather(*(made.generate(chunk(t), budget) for t in texts))

        start = time.monotonic()
        generations = asyncio.run(many())
        elapsed = time.monotonic() - start
        stats = fake.stats
    assert all(len(g.triples) == 3 for g in generations)
    assert stats.rate_limited == 0 and events.outcomes.count("ok") == 30
    assert elapsed >= 1.9  # 30 requests at 10/s after a burst of 10


def test_budget_stops_the_run_cleanly(fake: FakeLLM) -> None:
    made, _ = generator(fake)
    budget = Budget(max_tokens=2500, max_usd=None, price=None)
    spent: list[int] = []

    async def until_spent() -> None:
        for _ in range(10):
            await made.generate(chunk(TEXT), budget)
            spent.append(budget.tokens)

    with pytest.raises(BudgetExhausted):
        asyncio.run(until_spent())
    # Each request reserves ~300 prompt + 512 max_tokens and keeps only what it used (~370).
    assert 0 < spent[0] < 500 and len(spent) >= 3
    assert budget.tokens <= 2500
    assert len(fake.stats.bodies) == len(spent)


def test_start_up_check_names_the_problem(fake: FakeLLM) -> None:
    good = ChatClient(sdk("groq", fake.key, fake.groq_base_url, 5), "m", Limiter(None, None),
                      Events(), structured="none")  # fmt: skip
    asyncio.run(good.check())  # the fake serves any model by default
    bad_key = ChatClient(sdk("openai", "wrong", fake.openai_base_url, 5), "m",
                         Limiter(None, None), Events(), structured="none")  # fmt: skip
    with pytest.raises(ConfigError, match="API key"):
        asyncio.run(bad_key.check())
    with FakeLLM(models=("llama3-70b-8192",)) as only:
        unknown = ChatClient(sdk("openai", only.key, only.openai_base_url, 5), "gpt-x",
                             Limiter(None, None), Events(), structured="none")  # fmt: skip
        with pytest.raises(ConfigError, match="llama3-70b-8192"):
            asyncio.run(unknown.check())


def test_the_judge_drops_outputs_it_finds_unsupported() -> None:
    from prometheus_client import CollectorRegistry

    from pipeline.settings import KafkaSettings
    from services.synthesizer.config import SynthesizerSettings
    from services.synthesizer.judge import Judge, read_score
    from services.synthesizer.main import make_handler
    from services.synthesizer.metrics import SynthesizerMetrics
    from tests.support.fake_llm import grounded_responder

    def responder(request: dict[str, Any]) -> str:
        last = request["messages"][-1]["content"]
        if last.rstrip().endswith("Score:"):  # the judge's prompt
            return "Score: 2/5" if "injects" in last.split("Output:")[-1] else "5"
        return grounded_responder(request)

    assert [read_score(a) for a in ("4", "**5**", "Score: 3/5", "none", "10")] == [
        4,
        5,
        3,
        None,
        None,
    ]
    with FakeLLM(responder=responder) as fake:
        made, _ = generator(fake)
        judge = Judge(made.client, load_prompt("judge-v1"), min_score=4)
        settings = SynthesizerSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"),
            generator="openai",
            model="fake-model",
            api_key="k",
            judge=True,
        )
        metrics = SynthesizerMetrics("synthesizer", CollectorRegistry(), "openai", "fake-model")
        handle = make_handler(settings, made, metrics, judge)
        pairs = asyncio.run(handle(chunk(TEXT)))
    assert len(pairs) == 2 and not any("injects" in p.output for p in pairs)
    assert len(fake.stats.bodies) == 4  # one generation, three verdicts
    dropped = metrics._rejected.labels("synthesizer", "judged_unsupported")._value.get()
    assert dropped == 1


def test_self_instruct_bootstraps_from_the_seed_tasks(test_data: Path) -> None:
    from services.synthesizer.selfinstruct import SelfInstruct, load_seed_tasks

    seeds = load_seed_tasks(test_data / "data/instructions/self_instruct/seed_tasks.jsonl")
    human = {s.instruction for s in seeds}
    # Two new tasks a round, unlike each other (else ROUGE-L rightly drops the later ones).
    classify = [
        "Classify the sentiment of this movie review as positive or negative.",
        "Decide whether the tweet below expresses anger, joy or sadness.",
        "Tell whether the following sentence is grammatically correct or not.",
    ]
    generate = [
        "Suggest a name for a bakery that sells sourdough bread.",
        "Write a short apology email to a customer whose parcel arrived late.",
        "Explain how a rainbow forms to a ten year old child.",
    ]
    rounds = iter(range(3))

    def responder(request: dict[str, Any]) -> str:
        """Plays the model's three parts: new tasks, the classification verdict, instances."""
        prompt = request["messages"][-1]["content"]
        if prompt.startswith("Come up with a series of tasks"):
            n = next(rounds)
            return "\n".join(
                [
                    classify[n],
                    f"Task 10: {generate[n]}",
                    "Task 11: Draw a picture of a cat.",  # blacklisted
                    "Task 12: Hi.",  # too short
                    f"Task 13: {seeds[0].instruction}",  # a seed again: ROUGE-L 1.0
                ]
            )
        if prompt.rstrip().endswith("Is it classification?"):
            return "Yes" if prompt.split("Task:")[-1].split("\n")[0].strip() in classify else "No"
        if prompt.startswith("Given the classification task"):
            return (
                "Class label: Positive\nReview: I loved it.\nClass label: Negative\nReview: Dull."
            )
        return (
            "Example 1\nInput: <noinput>\nOutput: Crumb & Co.\n"
            "Example 2\nInput: rye\nOutput: Rye Days"
        )

    with FakeLLM(responder=responder) as fake:
        made, _ = generator(fake)
        bootstrap = SelfInstruct(
            "openai", made.client, load_prompt("self-instruct-v1"), seeds,
            temperature=0.7, max_tokens=512,
        )  # fmt: skip

        async def three_rounds() -> list[Generation]:
            budget = Budget(None, None, None)
            return [await bootstrap.generate(chunk(f"t{i}", doc=f"d{i}"), budget) for i in range(3)]

        generations = asyncio.run(three_rounds())
        bodies = fake.stats.bodies
    first = generations[0]
    assert sorted(first.rejected) == ["blacklisted", "similar", "too_short"]
    assert {t.task for t in first.triples} == {"classification", "generation"}
    classification = [t for t in first.triples if t.task == "classification"]
    assert [(t.input, t.output) for t in classification] == [
        ("Review: I loved it.", "Positive"),
        ("Review: Dull.", "Negative"),
    ]
    generation = [t for t in first.triples if t.task == "generation"]
    assert [(t.input, t.output) for t in generation] == [("", "Crumb & Co."), ("rye", "Rye Days")]
    assert len(bootstrap.machine) == 6  # two new instructions a round
    # In-context: 8 tasks, all human in the first round, then 6 human and 2 machine-made.
    asks = [b["messages"][-1]["content"] for b in bodies]
    asks = [a for a in asks if a.startswith("Come up with a series of tasks")]
    for n, ask in enumerate(asks):
        listed = re.findall(r"^Task \d+: (.+)$", ask, re.M)
        assert len(listed) == 8 and ask.rstrip().endswith("Task 9:")
        assert sum(t in human for t in listed) == (8 if n == 0 else 6)
    assert generations[2].triples and all(g.usage.prompt_tokens > 0 for g in generations)


def test_what_is_not_a_completion_and_groqs_refused_json() -> None:
    import groq
    import httpx

    from services.synthesizer.llm import _answer, _failed_generation

    for body in ("<html>502 Bad Gateway</html>", {"error": {"message": "x"}}, None):
        with pytest.raises(ValueError, match="not a chat completion"):
            _answer(body)
    request = httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions")
    refused = groq.BadRequestError(
        "json_validate_failed",
        response=httpx.Response(400, request=request),
        body={"error": {"code": "json_validate_failed", "failed_generation": '{"triples": [{'}},
    )
    assert _failed_generation(refused) == '{"triples": [{'
    other = groq.BadRequestError(
        "too long", response=httpx.Response(400, request=request), body={"error": {"code": "x"}}
    )
    assert _failed_generation(other) is None
