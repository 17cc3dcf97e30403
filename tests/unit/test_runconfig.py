"""Run files (`distillery run CONFIG.yaml`): checked down to every service setting by the
services' own settings classes, rendered as the variables those read, paths made the file's."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.messages import ArxivSource, FolderSource
from pipeline.runconfig import RunConfigError, env_file, load_run_config
from tests.support.service_rig import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples' providers want a key from the environment, never from the file; and
    # their evaluators use lm-eval's hub tasks for ARC, refused offline as tests are.
    monkeypatch.setenv("SYNTHESIZER_API_KEY", "a-key")
    monkeypatch.setenv("EVALUATOR_ARC_TASKS", "[]")
    monkeypatch.delenv("DISTILLERY_BASE_MODEL", raising=False)


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_example_runs_are_valid_and_serve_what_their_recipe_tunes() -> None:
    assert [p.name for p in EXAMPLES] == ["arxiv-llm-groq-llama3-8b-qlora.yaml",
                                          "consulting-site-phi-1_5.yaml",
                                          "self-instruct-llama-7b.yaml"]  # fmt: skip
    arxiv, site, self_instruct = (load_run_config(p) for p in EXAMPLES)

    assert arxiv.sources == [ArxivSource(query="large language model",
                                         since="2024-04-18", max_papers=200)]  # type: ignore[arg-type]  # fmt: skip
    env = arxiv.environment()
    assert env["SYNTHESIZER_GENERATOR"] == "groq"
    assert env["TRAINER_RECIPE"] == "llama3-8b-qlora"
    # No base model in the file: the recipe's, so inference serves the model that was tuned.
    assert env["DISTILLERY_BASE_MODEL"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert site.environment()["DISTILLERY_BASE_MODEL"] == "microsoft/phi-1_5"
    assert site.environment()["SYNTHESIZER_PROMPT"] == "qa-chat-v1"
    # Paths relative to the file, made absolute for services that run elsewhere.
    seeds = Path(str(self_instruct.environment()["SYNTHESIZER_SEED_TASKS"]))
    assert seeds.is_absolute() and seeds.name == "seed_tasks.jsonl"
    (folder,) = self_instruct.sources
    assert isinstance(folder, FolderSource) and Path(folder.path).is_absolute()
    assert ".." not in Path(folder.path).parts


def test_a_section_becomes_the_variables_its_service_reads(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, """
sources: [{kind: folder, path: docs}]
base_model: some/model
extractor: {chunk_tokens: 256, pdf_passwords: [open, sesame], drop_references: false}
synthesizer: {temperature: 0.2, prices: {m: [1.0, 2.0]}, model: null}
trainer: {near_duplicate_threshold: 0.8}
"""))  # fmt: skip
    env = config.environment()
    assert env == {
        "DISTILLERY_BASE_MODEL": "some/model",
        "EXTRACTOR_CHUNK_TOKENS": "256",
        "EXTRACTOR_PDF_PASSWORDS": '["open", "sesame"]',
        "EXTRACTOR_DROP_REFERENCES": "false",
        "SYNTHESIZER_TEMPERATURE": "0.2",
        "SYNTHESIZER_PRICES": '{"m": [1.0, 2.0]}',
        "SYNTHESIZER_MODEL": None,  # null: the default, whatever the environment says
        "TRAINER_NEAR_DUPLICATE_THRESHOLD": "0.8",
    }
    assert config.run_id == "run"  # the file's name
    assert env_file(config, "trainer") == (
        "TRAINER_NEAR_DUPLICATE_THRESHOLD=0.8\nDISTILLERY_BASE_MODEL=some/model\n"
    )
    assert env_file(config, "synthesizer").splitlines()[-1] == (
        "# SYNTHESIZER_MODEL left to its default"
    )


def test_every_problem_is_named_where_the_file_has_it(tmp_path: Path) -> None:
    path = write(tmp_path, """
base_model: m
sources: [{kind: folder, path: docs}]
synthesizer: {temprature: 0.2}
trainer: {recipes: x}
""")  # fmt: skip
    with pytest.raises(RunConfigError) as caught:
        load_run_config(path)
    assert str(caught.value).splitlines()[1:] == [
        "  synthesizer.temprature: synthesizer has no such setting; did you mean 'temperature'?",
        "  trainer.recipes: trainer has no such setting; did you mean 'recipe'?",
    ]

    path = write(tmp_path, """
base_model: m
sources: [{kind: folder, path: docs}]
synthesizer: {temperature: 3, generator: openai}
evaluator: {arc_limit: 0}
""")  # fmt: skip
    with pytest.raises(RunConfigError) as caught:
        load_run_config(path)
    lines = str(caught.value).splitlines()[1:]
    assert "  evaluator.arc_limit: Input should be greater than or equal to 1" in lines
    assert "  synthesizer.temperature: Input should be less than or equal to 2" in lines


def test_a_check_of_several_settings_names_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNTHESIZER_API_KEY")
    path = write(tmp_path, "base_model: m\nsources: [{kind: folder, path: d}]\n"
                           "synthesizer: {generator: groq, model: m}\n")  # fmt: skip
    with pytest.raises(RunConfigError, match="  synthesizer: generator groq needs "
                                             "SYNTHESIZER_API_KEY"):  # fmt: skip
        load_run_config(path)


def test_the_run_itself_is_checked(tmp_path: Path) -> None:
    cases = {
        "sources: []\n": "sources: List should have at least 1 item",
        "run_id: 'a b'\nsources: [{kind: folder, path: d}]\n": "run_id: letters, digits",
        "sources: [{kind: arxiv}]\n": "an arxiv source needs a query, a category, or both",
        "sources: [{kind: ftp}]\n": "sources.0: Input tag 'ftp' found",
        "source: []\n": "source: Extra inputs are not permitted",
        "- a list\n": "a run file is a mapping",
        "sources: [\n": "not YAML",
    }
    for text, problem in cases.items():
        with pytest.raises(RunConfigError, match=problem.replace("(", r"\(")):
            load_run_config(write(tmp_path, "base_model: m\n" * (text[0] != "-") + text))
    with pytest.raises(RunConfigError, match="cannot read it"):
        load_run_config(tmp_path / "missing.yaml")


def test_inference_needs_a_base_model_from_somewhere(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [{kind: folder, path: d}]\n")
    with pytest.raises(RunConfigError, match="  base_model: Field required"):
        load_run_config(path)


def test_for_a_deployed_stack_each_value_is_checked_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its environment is the deployment's: a key or ARC missing here says nothing of it.
    monkeypatch.delenv("SYNTHESIZER_API_KEY")
    path = write(tmp_path, "sources: [{kind: folder, path: d}]\n"
                           "synthesizer: {generator: groq, model: m}\n")  # fmt: skip
    assert load_run_config(path, embedded=False).environment()["SYNTHESIZER_GENERATOR"] == "groq"
    path = write(tmp_path, "sources: [{kind: folder, path: d}]\n"
                           "synthesizer: {generator: grok, temperature: 3}\n")  # fmt: skip
    with pytest.raises(RunConfigError) as caught:
        load_run_config(path, embedded=False)
    assert str(caught.value).splitlines()[1:] == [
        "  synthesizer.generator: Input should be 'reading-comprehension', 'openai', 'groq' or "
        "'openai-compatible'",
        "  synthesizer.temperature: Input should be less than or equal to 2",
    ]
