"""The optional LLM judge: a model behind any OpenAI-compatible endpoint compares the base and
tuned answers to each domain question against its reference, blind. It sees them as "A" and
"B", in an order drawn per example from a seeded generator, never which model wrote which, so
a preference for first answers (judges have one) falls on both models alike.

Each example gives the tuned answer 1 (preferred), 0.5 (a tie) or 0 (the base preferred), and
the base the rest; an unreadable verdict leaves the example out. The scores join the
comparison as the task `judge` (`judge/win_rate`), compared and reported like every other.
"""

from __future__ import annotations

import asyncio
import random
import re

import openai

from pipeline.errors import BadInput, Retryable
from services.evaluator.core import DOMAIN_TASK, Comparison, Sample, TaskRun

JUDGE_TASK = "judge"

PROMPT = """You are grading two answers to the same question against a reference answer.

Question:
{prompt}

Reference answer:
{reference}

Answer A:
{a}

Answer B:
{b}

Which answer is more correct and closer to the reference? Reply with one word: A, B or tie."""

_TIE = re.compile(r"\btie\b", re.IGNORECASE)
_LETTER = re.compile(r"\b(A|B)\b")  # capitals only: "a tie" is not answer A


def read_verdict(answer: str) -> str | None:
    """The judge's verdict, "A", "B" or "tie" ("B", "Answer A.", "**Tie**", "It's a tie"),
    or None when it gave none."""
    bare = answer.strip().strip("*_.`'\" ").upper()
    if bare in ("A", "B"):
        return bare
    if _TIE.search(answer):
        return "tie"
    match = _LETTER.search(answer)
    return match.group(1) if match else None


class Judge:
    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        limit: int = 100,
        concurrency: int = 8,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.model = model
        self.limit = limit
        self.seed = seed
        self.concurrency = concurrency

    async def add_to(self, comparison: Comparison) -> Comparison:
        """The comparison with the judge's task added (the first `limit` domain examples)."""
        if DOMAIN_TASK not in comparison.base:
            return comparison
        base = comparison.base[DOMAIN_TASK].samples[: self.limit]
        tuned = comparison.tuned[DOMAIN_TASK].samples[: self.limit]
        order = random.Random(self.seed)  # noqa: S311 - a fair coin per example, not a secret
        tuned_first = [order.random() < 0.5 for _ in base]
        slots = asyncio.Semaphore(self.concurrency)  # of this loop: each add_to may have its own
        # A task group: when one request fails for good, the others are cancelled with it.
        try:
            async with asyncio.TaskGroup() as group:
                asked = [group.create_task(self._ask(b, t, first, slots))
                         for b, t, first in zip(base, tuned, tuned_first, strict=True)]  # fmt: skip
        except ExceptionGroup as failed:  # the first failure says it for all
            raise failed.exceptions[0] from None
        verdicts = [task.result() for task in asked]
        picked = [(b, w) for b, w in zip(base, verdicts, strict=True) if w is not None]
        if not picked:
            return comparison

        def run(wins: list[float]) -> TaskRun:
            samples = [Sample(doc=b.doc, scores={"win_rate": w})
                       for (b, _), w in zip(picked, wins, strict=True)]  # fmt: skip
            return TaskRun(metrics={"win_rate": sum(wins) / len(wins)}, samples=samples)

        tuned_wins = [w for _, w in picked]
        return comparison.model_copy(update={
            "base": comparison.base | {JUDGE_TASK: run([1 - w for w in tuned_wins])},
            "tuned": comparison.tuned | {JUDGE_TASK: run(tuned_wins)},
        })  # fmt: skip

    async def _ask(
        self, base: Sample, tuned: Sample, tuned_first: bool, slots: asyncio.Semaphore
    ) -> float | None:
        """The tuned answer's score on one example, or None when the verdict is unreadable."""
        a, b = (tuned, base) if tuned_first else (base, tuned)
        prompt = PROMPT.format(
            prompt=base.doc["prompt"], reference=base.doc["reference"],
            a=a.output or "(no answer)", b=b.output or "(no answer)",
        )  # fmt: skip
        async with slots:
            try:
                reply = await self.client.chat.completions.create(
                    model=self.model, temperature=0, max_tokens=8,
                    messages=[{"role": "user", "content": prompt}],
                )  # fmt: skip
            except (openai.APIConnectionError, openai.RateLimitError,
                    openai.InternalServerError) as exc:  # fmt: skip
                raise Retryable(f"the judge at {self.client.base_url}: {exc}") from exc
            except openai.BadRequestError:  # this example (too long, filtered): no verdict
                return None
            except openai.APIStatusError as exc:
                raise BadInput(f"the judge at {self.client.base_url} refused: {exc}",
                               reason="judge_refused") from exc  # fmt: skip
        verdict = read_verdict(reply.choices[0].message.content or "")
        if verdict is None:
            return None
        if verdict == "tie":
            return 0.5
        return 1.0 if (verdict == "A") == tuned_first else 0.0
