"""The evaluator's settings: what it refuses at start-up, naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import KafkaSettings
from services.evaluator.config import EvaluatorSettings

pytestmark = pytest.mark.unit


def settings(**values: object) -> EvaluatorSettings:
    return EvaluatorSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"), **values)


def test_a_consistent_configuration_is_accepted(test_data: Path) -> None:
    found = settings(arc_dir=test_data / "data" / "arc", domain_metric="perplexity/bits_per_byte")
    assert found.policy.domain_metric == "perplexity/bits_per_byte"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"arc_dir": None}, "EVALUATOR_ARC_DIR is unset and the hub is offline"),
        ({"arc_dir": Path("/nonexistent")}, "lacks ARC-Easy-test.jsonl, ARC-Challenge-test.jsonl"),
        ({"judge_model": "m"}, "needs EVALUATOR_JUDGE_BASE_URL and EVALUATOR_JUDGE_MODEL"),
        ({"domain_metric": "judge/win_rate"}, "judge/win_rate needs the judge"),
        ({"domain_metric": "perplexity/word_perplexity", "perplexity": False},
         "needs EVALUATOR_PERPLEXITY=true"),
        ({"concurrency": 2}, "EVALUATOR_CONCURRENCY must be 1"),
        ({"domain_metric": "arc_easy/acc"}, "domain_metric"),
    ],
)  # fmt: skip
def test_an_inconsistent_configuration_is_named(
    test_data: Path, values: dict[str, object], message: str
) -> None:
    values = {"arc_dir": test_data / "data" / "arc", **values}
    with pytest.raises(ValueError, match=message):
        settings(**values)
