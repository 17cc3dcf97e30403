"""A judge for the fake LLM API: it prefers whichever answer has the higher ROUGE-L against
the reference (a tie when equal), reading the prompt as the real judge's model would."""

from __future__ import annotations

import re

from rouge_score import rouge_scorer

from tests.support.fake_llm import Request

_PARTS = re.compile(
    r"Reference answer:\n(?P<reference>.*?)\n\nAnswer A:\n(?P<a>.*?)\n\nAnswer B:\n(?P<b>.*?)"
    r"\n\nWhich answer",
    re.DOTALL,
)
_ROUGE = rouge_scorer.RougeScorer(["rougeL"])


def judge_by_reference(request: Request) -> str:
    match = _PARTS.search(request["messages"][-1]["content"])
    if match is None:
        return "I cannot tell."
    a, b = (_ROUGE.score(match["reference"], match[x])["rougeL"].fmeasure for x in "ab")
    return "tie" if a == b else "Answer A" if a > b else "**B**"
