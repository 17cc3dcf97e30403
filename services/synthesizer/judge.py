"""The optional LLM judge: a model scores, from 1 to 5, how well each output is supported by
its source chunk; pairs under SYNTHESIZER_JUDGE_MIN_SCORE are dropped (`judged_unsupported`).
It runs after the cheap filters, on what would otherwise be published."""

from __future__ import annotations

import re

from services.synthesizer.core import Triple
from services.synthesizer.llm import ChatClient
from services.synthesizer.prompts import Prompt
from services.synthesizer.ratelimit import Budget

_SCORE = re.compile(r"\b([1-5])\b")


def read_score(answer: str) -> int | None:
    """The first digit 1–5 standing alone in the answer ("4", "Score: 4/5", "**5**")."""
    match = _SCORE.search(answer)
    return int(match.group(1)) if match else None


class Judge:
    def __init__(self, client: ChatClient, prompt: Prompt, min_score: int) -> None:
        if prompt.kind != "judge":
            raise ValueError(f"prompt {prompt.id} is a {prompt.kind} prompt, not a judge's")
        self.client = client
        self.prompt = prompt
        self.min_score = min_score

    async def problem(self, triple: Triple, source: str, budget: Budget) -> str | None:
        """Why the judge drops the triple, or None to keep it."""
        user = self.prompt.render(
            "user",
            text=source,
            instruction=triple.instruction,
            input=triple.input or "(none)",
            output=triple.output,
        )
        answer = await self.client.complete(
            [{"role": "system", "content": self.prompt.system}, {"role": "user", "content": user}],
            temperature=0.0,
            max_tokens=8,
            budget=budget,
        )
        score = read_score(answer.text)
        if score is None:
            return "judge_unreadable"
        return "judged_unsupported" if score < self.min_score else None
