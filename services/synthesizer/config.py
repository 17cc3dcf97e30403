"""The synthesizer's settings, from SYNTHESIZER_* variables (and the shared KAFKA_/BLOB_ ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from pipeline import topics
from pipeline.settings import ServiceSettings
from services.synthesizer.core import Limits
from services.synthesizer.llm import Structured
from services.synthesizer.prompts import load_prompt
from services.synthesizer.ratelimit import Price

#: US dollars per million tokens (input, output), as the providers list them in 2026-11;
#: SYNTHESIZER_PRICES (JSON) adds models or overrides these.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "llama3-70b-8192": (0.59, 0.79),
    "llama3-8b-8192": (0.05, 0.08),
    "llama-3.3-70b-versatile": (0.59, 0.79),
    "llama-3.1-8b-instant": (0.05, 0.08),
}

GeneratorKind = Literal["reading-comprehension", "openai", "groq", "openai-compatible"]


class SynthesizerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SYNTHESIZER_", frozen=True, extra="ignore")

    service_name: str = "synthesizer"
    input_topic: str = topics.PARSED_TEXT
    #: Chunks handled at once by one replica: enough to fill the provider's rate limit
    #: (requests/min x seconds per request / 60; 3,000/min at 0.3 s needs 15).
    concurrency: int = Field(32, ge=1)

    generator: GeneratorKind = "reading-comprehension"
    model: str | None = None
    #: The provider's address; required for openai-compatible (vLLM, Ollama, our inference).
    base_url: str | None = None
    api_key: SecretStr | None = None
    #: A bundled prompt id (triples-v1, qa-chat-v1, self-instruct-v1) or a prompt file.
    prompt: str = "triples-v1"
    #: Self-Instruct's seed tasks (jsonl as the paper's seed_tasks.jsonl).
    seed_tasks: Path | None = None
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    request_timeout_s: float = Field(60.0, gt=0)
    #: How answers are constrained: a JSON schema, JSON mode, or a parsed text format.
    #: Unset: json_schema for OpenAI, json_object for Groq and OpenAI-compatible servers.
    structured: Structured | None = None
    #: Attempts per request on 429 and 5xx before the chunk is retried by the worker loop.
    request_attempts: int = Field(6, ge=1)

    #: The provider's limits for this key (per replica: divide by the replica count).
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    #: Share of the limits to aim at: a little under, so clock skew does not earn a 429.
    rate_headroom: float = Field(0.97, gt=0, le=1)

    #: What one run may spend (per replica); past it its chunks go to the DLQ as
    #: `budget_exhausted`, to be replayed with a larger budget.
    budget_tokens: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)
    prices: dict[str, tuple[float, float]] = {}

    #: Reading-comprehension: at most this many tasks of each kind per chunk.
    max_per_task: int = Field(2, ge=1)

    instruction_min_words: int = Field(3, ge=1)
    instruction_max_words: int = Field(150, ge=1)
    output_min_words: int = Field(1, ge=1)
    output_max_words: int = Field(600, ge=1)
    #: Share of an output's content words that must occur in its chunk (0 disables).
    grounding_min: float = Field(0.5, ge=0, le=1)

    #: The optional LLM judge (same provider): outputs scored 1-5 for support by their chunk.
    judge: bool = False
    #: The judge's model; unset: SYNTHESIZER_MODEL.
    judge_model: str | None = None
    judge_prompt: str = "judge-v1"
    judge_min_score: int = Field(4, ge=1, le=5)

    #: A YAML table of model terms replacing the built-in one (pipeline/terms.py).
    terms_table: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> SynthesizerSettings:
        if self.generator != "reading-comprehension":
            if not self.model:
                raise ValueError(f"generator {self.generator} needs SYNTHESIZER_MODEL")
            if self.generator != "openai-compatible" and self.api_key is None:
                raise ValueError(f"generator {self.generator} needs SYNTHESIZER_API_KEY")
            if self.generator == "openai-compatible" and not self.base_url:
                raise ValueError("generator openai-compatible needs SYNTHESIZER_BASE_URL")
            self._check_prompts()
        if self.judge and self.generator == "reading-comprehension":
            raise ValueError(
                "SYNTHESIZER_JUDGE needs a provider: set SYNTHESIZER_GENERATOR to an LLM one"
            )
        if self.budget_usd is not None and self.price is None:
            raise ValueError(
                f"SYNTHESIZER_BUDGET_USD needs the price of {self.model!r}: "
                "add it to SYNTHESIZER_PRICES as {model: [input, output]} in $/M tokens"
            )
        return self

    def _check_prompts(self) -> None:
        """The prompt files load, and Self-Instruct has its seed tasks (at start-up, not on
        the first chunk)."""
        prompt = load_prompt(self.prompt)
        if prompt.kind == "judge":
            raise ValueError(f"SYNTHESIZER_PROMPT {prompt.id} is a judge's prompt")
        if prompt.kind == "self-instruct" and not (self.seed_tasks and self.seed_tasks.is_file()):
            raise ValueError(f"prompt {prompt.id} needs SYNTHESIZER_SEED_TASKS, a seed-task file")
        if self.judge and load_prompt(self.judge_prompt).kind != "judge":
            raise ValueError(f"SYNTHESIZER_JUDGE_PROMPT {self.judge_prompt} is not a judge's")

    @property
    def price(self) -> Price | None:
        table = DEFAULT_PRICES | self.prices
        if self.model not in table:
            return None
        return Price(*table[self.model])

    @property
    def structured_output(self) -> Structured:
        if self.structured is not None:
            return self.structured
        return "json_schema" if self.generator == "openai" else "json_object"

    @property
    def limits(self) -> Limits:
        return Limits(
            instruction_min=self.instruction_min_words,
            instruction_max=self.instruction_max_words,
            output_min=self.output_min_words,
            output_max=self.output_max_words,
        )
