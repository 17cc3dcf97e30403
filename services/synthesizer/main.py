"""Wiring: settings, the generator (with its provider client, rate limiter and budgets), the
quality filters, and the worker loop.

`handle` asks the generator for candidate triples from one chunk, drops those the filters
refuse (counting why), and returns the rest as pairs with their provenance. Many chunks are in
hand at once (SYNTHESIZER_CONCURRENCY); the limiter keeps them all within the provider's rate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from pipeline import terms
from pipeline.errors import PipelineError
from pipeline.messages import GeneratorInfo, Pair, ParsedChunk, pair_id_of
from pipeline.settings import load
from pipeline.worker import run_service
from services.synthesizer.config import SynthesizerSettings
from services.synthesizer.core import Quality, Triple
from services.synthesizer.generators import (
    Generator,
    Prompted,
    ReadingComprehension,
    all_or_none,
)
from services.synthesizer.judge import Judge
from services.synthesizer.llm import ChatClient, ConfigError, sdk
from services.synthesizer.metrics import SynthesizerMetrics
from services.synthesizer.prompts import load_prompt
from services.synthesizer.ratelimit import Budget, Limiter
from services.synthesizer.selfinstruct import SelfInstruct, load_seed_tasks

log = logging.getLogger("synthesizer")


def make_handler(
    settings: SynthesizerSettings,
    generator: Generator,
    metrics: SynthesizerMetrics,
    judge: Judge | None = None,
) -> Callable[[ParsedChunk], Awaitable[list[Pair]]]:
    quality = Quality(settings.limits, settings.grounding_min)
    rules = terms.load_rules(settings.terms_table) if settings.terms_table else terms.DEFAULT_RULES
    found = terms.terms_for(generator.model, rules)
    info = GeneratorInfo(
        provider=generator.provider,
        model=generator.model,
        prompt_id=generator.prompt_id,
        prompt_hash=generator.prompt_hash,
        temperature=generator.temperature,
        terms=found.id if found else None,
    )
    budgets: dict[str, Budget] = {}

    def budget(run_id: str) -> Budget:
        if run_id not in budgets:
            budgets[run_id] = Budget(settings.budget_tokens, settings.budget_usd, settings.price)
        return budgets[run_id]

    async def handle(chunk: ParsedChunk) -> list[Pair]:
        spend = budget(chunk.run_id)
        try:
            generation = await generator.generate(chunk, spend)
            kept = await _filter(chunk, generation.triples, spend)
        except PipelineError as exc:  # anything else is the worker loop's internal_error
            metrics.chunk(exc.reason)
            raise
        for reason in generation.rejected:
            metrics.rejected(reason)
        pairs = []
        for _pair_id, triple in kept:
            metrics.pair(triple.task)
            pairs.append(triple.pair(chunk, info))
        metrics.chunk("repaired" if generation.repaired else "ok" if pairs else "no_pairs")
        return pairs

    async def _filter(
        chunk: ParsedChunk, triples: list[Triple], spend: Budget
    ) -> list[tuple[str, Triple]]:
        """The cheap filters first, then the judge on what is left."""
        source = _source(chunk) if generator.grounded else None
        kept: dict[str, Triple] = {}
        for triple in triples:
            pair_id = pair_id_of(triple.instruction, triple.input, triple.output)
            problem = quality.problem(triple, source)
            if problem or pair_id in kept:
                metrics.rejected(problem or "duplicate")
            else:
                kept[pair_id] = triple
        if judge is None or not kept:
            return list(kept.items())
        verdicts = await all_or_none(judge.problem(t, _source(chunk), spend) for t in kept.values())
        for problem in verdicts:
            if problem:
                metrics.rejected(problem)
        return [k for k, problem in zip(kept.items(), verdicts, strict=True) if problem is None]

    return handle


def _source(chunk: ParsedChunk) -> str:
    """What an output may be grounded in: the chunk, its section title and the document's."""
    return "\n".join(t for t in (chunk.source.title, chunk.section, chunk.text) if t)


def build_generator(
    settings: SynthesizerSettings, metrics: SynthesizerMetrics
) -> tuple[Generator, Judge | None, Limiter | None]:
    if settings.generator == "reading-comprehension":
        return ReadingComprehension(settings.max_per_task), None, None
    assert settings.model is not None  # noqa: S101 - checked by the settings
    limiter = Limiter(
        settings.requests_per_minute and settings.requests_per_minute * settings.rate_headroom,
        settings.tokens_per_minute and settings.tokens_per_minute * settings.rate_headroom,
    )
    client = ChatClient(
        _sdk(settings),
        settings.model,
        limiter,
        metrics,
        structured=settings.structured_output,
        attempts=settings.request_attempts,
    )
    prompt = load_prompt(settings.prompt)
    judge = None
    if settings.judge:
        judging = ChatClient(
            client.client,
            settings.judge_model or settings.model,
            limiter,
            metrics,
            structured="none",
            attempts=settings.request_attempts,
        )
        judge = Judge(judging, load_prompt(settings.judge_prompt), settings.judge_min_score)
    temperature, max_tokens = settings.temperature, settings.max_tokens
    if prompt.kind == "self-instruct":
        assert settings.seed_tasks is not None  # noqa: S101 - checked by the settings
        seeds = load_seed_tasks(settings.seed_tasks)
        generator: Generator = SelfInstruct(
            settings.generator,
            client,
            prompt,
            seeds,
            temperature=temperature,
            max_tokens=max_tokens,
        )
    else:
        generator = Prompted(
            settings.generator, client, prompt, temperature=temperature, max_tokens=max_tokens
        )
    return generator, judge, limiter


def _sdk(settings: SynthesizerSettings) -> object:
    key = settings.api_key.get_secret_value() if settings.api_key else "none"
    return sdk(settings.generator, key, settings.base_url, settings.request_timeout_s)  # type: ignore[arg-type]


def _check_provider(settings: SynthesizerSettings) -> None:
    """Fail at start-up, naming the problem, rather than on every chunk."""
    if settings.generator == "reading-comprehension":
        return
    assert settings.model is not None  # noqa: S101 - checked by the settings
    probe = ChatClient(
        _sdk(settings), settings.model, Limiter(None, None), _Quiet(), structured="none"
    )
    try:
        asyncio.run(probe.check())
    except ConfigError as exc:
        raise SystemExit(
            f"synthesizer: {settings.generator} at {settings.base_url}: {exc}"
        ) from None


class _Quiet:
    def request(self, outcome: str, seconds: float) -> None:
        pass

    def used(self, usage: object) -> None:
        pass


def main() -> None:
    settings = load(SynthesizerSettings)
    _check_provider(settings)
    registry = CollectorRegistry()
    model = settings.model or "reading-comprehension"
    metrics = SynthesizerMetrics(settings.service_name, registry, settings.generator, model)
    generator, judge, limiter = build_generator(settings, metrics)
    if limiter is not None:
        metrics.waiting(lambda: limiter.waited_s)
    handle = make_handler(settings, generator, metrics, judge)
    run_service(settings, ParsedChunk, handle, registry=registry)
