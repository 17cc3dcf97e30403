"""Self-Instruct bootstrapping (Wang et al. 2022), as its code does it, on a chat model.

Each chunk of parsed-text is one round: 8 in-context instructions (6 human seeds, 2 from the
machine pool, 75/25) ask for 8 new ones; those that pass the paper's filters (length,
blacklisted words, punctuation or non-English start, ROUGE-L against the pool) join the pool;
each is classified (classification or not) and gets instances, output-first for
classification tasks and input-first for the rest. Self-Instruct is context-free: pairs point
to the chunk that started the round but are not grounded in it. The pool is per replica.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

from pipeline.curation.neardup import RougePool
from pipeline.messages import ParsedChunk
from services.synthesizer.core import Triple
from services.synthesizer.generators import Generation, Prompted, all_or_none
from services.synthesizer.llm import ChatClient, Completion, Message, Usage
from services.synthesizer.prompts import Prompt
from services.synthesizer.ratelimit import Budget

IN_CONTEXT = 8
FROM_MACHINE = 2
#: The paper's list (bootstrap_instructions.py): tasks a text-only model cannot do.
BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
)  # fmt: skip
SIMILARITY_MAX = 0.7


@dataclass(frozen=True)
class SeedTask:
    instruction: str
    instances: tuple[tuple[str, str], ...]
    is_classification: bool


def load_seed_tasks(path: Path) -> list[SeedTask]:
    """The paper's seed_tasks.jsonl: one {instruction, instances: [{input, output}],
    is_classification} per line."""
    tasks = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            instances = tuple((i["input"], i["output"]) for i in row["instances"])
            tasks.append(SeedTask(row["instruction"], instances, bool(row["is_classification"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a seed task ({exc})") from None
    if len(tasks) < IN_CONTEXT:
        raise ValueError(f"{path}: {len(tasks)} seed tasks, Self-Instruct needs {IN_CONTEXT}+")
    for kind, flag in (("classification", True), ("other", False)):
        # Instance prompts show two seed examples of the task's kind.
        if sum(t.is_classification == flag for t in tasks) < 2:
            raise ValueError(f"{path}: Self-Instruct needs 2+ {kind} seed tasks")
    return tasks


# --- the paper's filters ----------------------------------------------------------------------


def instruction_problem(instruction: str) -> str | None:
    """Why bootstrap_instructions.py would drop a new instruction, or None."""
    words = instruction.split()
    if len(words) <= 3:
        return "too_short"
    if len(words) > 150:
        return "too_long"
    lowered = instruction.lower()
    if any(re.search(rf"\b{word}\b", lowered) for word in BLACKLIST):
        return "blacklisted"
    if instruction.startswith("Write a program"):
        return "blacklisted"
    if instruction[0] in string.punctuation:
        return "punctuation_start"
    if not instruction[0].isascii():
        return "non_english_start"
    return None


_TASK_LINE = re.compile(r"^\s*(?:task\s*)?\d+\s*[:.)]\s*", re.I | re.M)


def parse_instructions(text: str) -> list[str]:
    """New instructions from a continued "Task N: ..." list, normalised as the paper does
    (whitespace collapsed, first letter capitalised)."""
    parts = _TASK_LINE.split(text)
    found = []
    for part in parts:
        instruction = re.sub(r"\s+", " ", part).strip()
        if instruction:
            found.append(instruction[0].upper() + instruction[1:])
    return found


_FIELD = re.compile(r"^\s*(?:example\s*\d+\s*:?\s*\n\s*)?(input|output)\s*:\s*", re.I | re.M)
_LABEL = re.compile(r"^\s*class label\s*:\s*", re.I | re.M)
_HEADER = re.compile(r"^\s*example\s*\d+\s*:?\s*$", re.I | re.M)


def parse_instances(text: str, *, classification: bool) -> list[tuple[str, str]]:
    """(input, output) examples from an instance answer. Output-first answers give
    "Class label: …" then the input; input-first ones "Input: …" then "Output: …"."""
    instances = []
    if classification:
        for block in _LABEL.split(text)[1:]:
            label, _, rest = block.strip().partition("\n")
            given = re.sub(r"^\s*input\s*:\s*", "", rest.strip(), flags=re.I)
            instances.append((given.strip(), label.strip()))
    else:
        matches = list(_FIELD.finditer(text))
        given = ""
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            value = _HEADER.sub("", text[match.end() : end]).strip()
            if match.group(1).lower() == "input":
                given = value
            else:
                instances.append((given, value))
                given = ""
    return _clean_instances(instances)


def _clean_instances(instances: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The paper's instance filters: no empty output, no output equal to its input, and no
    input given two different outputs."""
    outputs: dict[str, set[str]] = {}
    for given, output in instances:
        outputs.setdefault(given, set()).add(output)
    kept, seen = [], set()
    for given, output in instances:
        given = "" if given.strip().lower() in ("", "<noinput>", "none", "n/a") else given
        if not output or output == given or len(outputs.get(given, ())) > 1:
            continue
        if (given, output) not in seen:
            seen.add((given, output))
            kept.append((given, output))
    return kept


# --- the generator ----------------------------------------------------------------------------


class SelfInstruct(Prompted):
    """Prompted by the paper's three prompts instead of one (its prompt file says
    `grounded: false`)."""

    def __init__(
        self,
        provider: str,
        client: ChatClient,
        prompt: Prompt,
        seeds: list[SeedTask],
        *,
        temperature: float,
        max_tokens: int,
    ) -> None:
        super().__init__(provider, client, prompt, temperature=temperature, max_tokens=max_tokens)
        self.seeds = seeds
        self.machine: list[str] = []
        # Seeds and accepted machine instructions, indexed: microseconds a query (issue 6).
        self._pool = RougePool(SIMILARITY_MAX)
        self._pool.add([s.instruction for s in seeds])
        self._classify_examples = _classify_examples(seeds)

    async def generate(self, chunk: ParsedChunk, budget: Budget) -> Generation:
        # Seeded by the chunk: the same pool and chunk give the same in-context tasks.
        rng = random.Random(chunk.chunk_id)  # noqa: S311 - sampling, not secrets
        answer = await self._ask_one(
            self.prompt.render("instructions", tasks=self._tasks(rng)), budget
        )
        generation = Generation(usage=answer.usage)
        new = []
        for instruction in parse_instructions(answer.text)[:IN_CONTEXT]:
            problem = instruction_problem(instruction) or self._similar(instruction)
            if problem:
                generation.rejected.append(problem)
            else:
                self.machine.append(instruction)
                self._pool.add([instruction])
                new.append(instruction)
        for triples, usage in await all_or_none(self._instances(i, rng, budget) for i in new):
            generation.usage += usage
            if triples:
                generation.triples += triples
            else:
                generation.rejected.append("no_instances")
        return generation

    def _tasks(self, rng: random.Random) -> str:
        machine = rng.sample(self.machine, min(FROM_MACHINE, len(self.machine)))
        human = [s.instruction for s in rng.sample(self.seeds, IN_CONTEXT - len(machine))]
        chosen = machine + human
        rng.shuffle(chosen)
        lines = [f"Task {i}: {text}" for i, text in enumerate(chosen, 1)]
        return "\n".join([*lines, f"Task {len(chosen) + 1}:"])

    def _similar(self, instruction: str) -> str | None:
        # The paper keeps an instruction only when its ROUGE-L against every one in the
        # pool is below 0.7 (its code's `> 0.7` differs on exact ties; the text is followed).
        found = self._pool.query([instruction], inclusive=True)
        return None if found.kept[0] else "similar"

    async def _instances(
        self, instruction: str, rng: random.Random, budget: Budget
    ) -> tuple[list[Triple], Usage]:
        verdict = await self._ask_one(
            self.prompt.render(
                "classify", examples=self._classify_examples, instruction=instruction
            ),
            budget,
        )
        classification = verdict.text.strip().lower().startswith("yes")
        template = "output_first" if classification else "input_first"
        examples = _instance_examples(self.seeds, classification, rng)
        answer = await self._ask_one(
            self.prompt.render(template, examples=examples, instruction=instruction), budget
        )
        task = "classification" if classification else "generation"
        pairs = parse_instances(answer.text, classification=classification)
        triples = [Triple(instruction, given, output, task) for given, output in pairs]
        return triples, verdict.usage + answer.usage

    async def _ask_one(self, content: str, budget: Budget) -> Completion:
        messages: list[Message] = [
            {"role": "system", "content": self.prompt.system},
            {"role": "user", "content": content},
        ]
        return await self.client.complete(
            messages, temperature=self.temperature, max_tokens=self.max_tokens, budget=budget
        )


def _classify_examples(seeds: list[SeedTask]) -> str:
    """Six classification and six other seed tasks, alternating, as the paper's prompt has."""
    yes = [s for s in seeds if s.is_classification][:6]
    no = [s for s in seeds if not s.is_classification][:6]
    blocks = []
    for a, b in zip(yes, no, strict=False):
        blocks += [f"Task: {a.instruction}\nIs it classification? Yes\n",
                   f"Task: {b.instruction}\nIs it classification? No\n"]  # fmt: skip
    return "\n".join(blocks)


def _instance_examples(seeds: list[SeedTask], classification: bool, rng: random.Random) -> str:
    chosen = rng.sample([s for s in seeds if s.is_classification == classification], 2)
    blocks = []
    for seed in chosen:
        if classification:
            lines = [f"Class label: {o}\n{i}".rstrip() for i, o in seed.instances]
        else:
            lines = [
                f"Example {n}\nInput: {i or '<noinput>'}\nOutput: {o}"
                for n, (i, o) in enumerate(seed.instances, 1)
            ]
        blocks.append(f"Task: {seed.instruction}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)
