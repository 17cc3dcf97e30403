"""The evaluator's settings, from EVALUATOR_* variables (and the shared KAFKA_/BLOB_ ones)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from pipeline import topics
from pipeline.settings import ServiceSettings
from services.evaluator.core import DomainMetric, Policy
from services.evaluator.tasks import ARC


class EvaluatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EVALUATOR_", frozen=True, extra="ignore")

    service_name: str = "evaluator"
    input_topic: str = topics.CHECKPOINTS
    #: A stopping service ends the evaluation in hand at once: it is run again from the start.
    stop_grace_s: float = Field(5.0, gt=0)

    #: General tasks that must not fall too far: ARC as lm-eval poses it (a JSON list).
    arc_tasks: list[Literal["arc_easy", "arc_challenge"]] = ["arc_easy", "arc_challenge"]
    #: Local ARC jsonl (ARC-Easy-test.jsonl, ...: the Allen AI release). Unset: lm-eval's hub
    #: tasks by name, which need the Hugging Face hub.
    arc_dir: Path | None = None
    #: The first N questions of each ARC task; unset: all of them.
    arc_limit: int | None = Field(None, ge=1)

    #: The domain test: the first N held-out pairs of the checkpoint's dataset; unset: all.
    domain_limit: int | None = Field(500, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    #: Perplexity on the held-out documents' text, beside the domain test.
    perplexity: bool = True

    #: The metric that must improve beyond its interval for a promotion.
    domain_metric: DomainMetric = "domain/rougeL"
    #: How far each ARC accuracy may fall (0.02 = 2 points) and still promote.
    max_general_drop: float = Field(0.02, ge=0)
    #: Bootstrap resamples for each interval (95 %, paired).
    resamples: int = Field(2000, ge=100)
    #: Most improved and most degraded examples shown in the report, each.
    report_examples: int = Field(10, ge=0)

    #: The optional LLM judge (judge.py): any OpenAI-compatible endpoint and model compare
    #: base and tuned answers blind. Unset: no judge.
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: SecretStr | None = None
    #: The first N domain examples are judged; requests at once.
    judge_limit: int = Field(100, ge=1)
    judge_concurrency: int = Field(8, ge=1)
    judge_timeout_s: float = Field(60.0, gt=0)

    batch_size: int = Field(16, ge=1)
    #: "auto": CUDA when there is a GPU, else the CPU.
    device: str = "auto"
    #: Scratch for the adapter, the held-out data and the child's results: a checkpoint's is
    #: removed once its report is stored or it is dead-lettered (a finished comparison stays
    #: for a retry to reuse). Default: $DISTILLERY_HOME/evaluator.
    work_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("DISTILLERY_HOME", ".distillery")) / "evaluator"
    )

    @model_validator(mode="after")
    def _checked(self) -> EvaluatorSettings:
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                      for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))  # fmt: skip
        if self.arc_tasks and self.arc_dir is None and offline:
            raise ValueError(
                "EVALUATOR_ARC_DIR is unset and the hub is offline (HF_HUB_OFFLINE): point it "
                "at a local ARC directory, or set EVALUATOR_ARC_TASKS=[] to leave ARC out"
            )
        if (self.judge_base_url is None) != (self.judge_model is None):
            raise ValueError("the judge needs EVALUATOR_JUDGE_BASE_URL and EVALUATOR_JUDGE_MODEL")
        if self.domain_metric.startswith("judge/") and self.judge_model is None:
            raise ValueError(f"EVALUATOR_DOMAIN_METRIC {self.domain_metric} needs the judge "
                             "(EVALUATOR_JUDGE_BASE_URL and EVALUATOR_JUDGE_MODEL)")  # fmt: skip
        if self.domain_metric.startswith("perplexity/") and not self.perplexity:
            raise ValueError(f"EVALUATOR_DOMAIN_METRIC {self.domain_metric} needs "
                             "EVALUATOR_PERPLEXITY=true")  # fmt: skip
        if self.concurrency != 1:
            raise ValueError("EVALUATOR_CONCURRENCY must be 1: one evaluation per replica "
                             "holds the model; scale with replicas")  # fmt: skip
        if self.arc_dir is not None:
            missing = [f"{ARC[t]}-test.jsonl" for t in self.arc_tasks
                       if not (self.arc_dir / f"{ARC[t]}-test.jsonl").is_file()]  # fmt: skip
            if missing:
                raise ValueError(f"EVALUATOR_ARC_DIR {self.arc_dir} lacks {', '.join(missing)}")
        return self

    @property
    def policy(self) -> Policy:
        return Policy(domain_metric=self.domain_metric, max_general_drop=self.max_general_drop)
