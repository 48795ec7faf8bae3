from argparse import Namespace
from pathlib import Path

import pytest

from harness import docs, optimizers
from tasks import TASKS

META = {"train": 50, "val": 50, "test": 100, "threads": 8}


def stored(tmp_path: Path, monkeypatch, meta: dict) -> None:
    path = tmp_path / "optimizers.json"
    monkeypatch.setattr(docs, "OPTIMIZERS_JSON", path)
    run = {"framework": "dspy", "task": "sst2", "optimizer": "bootstrap", "seed": 1, "test_score": 0.5}
    docs.save(path, {"meta": meta, "runs": [run], "failures": [{"run": "x", "error": "y"}]})


def test_resume_keeps_the_stored_runs_and_failures(tmp_path, monkeypatch):
    stored(tmp_path, monkeypatch, META)
    runs, failures = optimizers.previous_runs(Namespace(resume=True), META)
    assert [optimizers.run_key(r) for r in runs] == [("dspy", "sst2", "bootstrap", 1)]
    assert failures == [{"run": "x", "error": "y"}]


def test_without_resume_the_stored_runs_are_replaced(tmp_path, monkeypatch):
    stored(tmp_path, monkeypatch, META)
    assert optimizers.previous_runs(Namespace(resume=False), META) == ([], [])


def test_resume_refuses_results_from_other_splits(tmp_path, monkeypatch):
    stored(tmp_path, monkeypatch, {**META, "val": 30})
    with pytest.raises(ValueError, match="val=30"):
        optimizers.previous_runs(Namespace(resume=True), META)


def test_requests_match_the_dspy_settings(tmp_path):
    task = TASKS["sst2"]
    bootstrap = optimizers.request(task, "bootstrap", 1, tmp_path, "openai/smollm2-135m", None)
    assert bootstrap["target"] == "few_shot_examples"
    assert bootstrap["algorithm"] == "bootstrapfewshot"
    assert bootstrap["algorithm_config"]["max_bootstrapped"] == 4
    assert bootstrap["constraints"] == {"max_tokens": optimizers.MAX_TOKENS["sst2"]}
    assert bootstrap["adapter"] == "turns"
    assert bootstrap["training_examples"] == str(tmp_path / "train.jsonl")
    gepa = optimizers.request(task, "gepa", 2, tmp_path, "local/smollm2-135m", 404)
    assert gepa["target"] == "prompt_template"
    assert gepa["prompt_model"] == "local/smollm2-135m", "DSPy's prompt model is its task model"
    assert gepa["algorithm_config"]["max_metric_calls"] == 404
    assert gepa["seed"] == 2
    assert gepa["max_iterations"] > 404, "the metric-call budget, not an iteration cap, stops GEPA"
    assert "max_iterations" not in bootstrap


ANALYTICS = {"stages": [
    {"stage": "load", "seconds": 0.0, "lm_calls": 0, "tokens": 0},
    {"stage": "baseline", "seconds": 20.0, "lm_calls": 50, "tokens": 5000},
    {"stage": "optimize", "seconds": 4.0, "lm_calls": 10, "cache_hits": 2, "tokens": 900},
    {"stage": "validate", "seconds": 12.0, "lm_calls": 50, "tokens": 7000},
]}


def test_bootstrap_is_compared_on_its_search_alone():
    figures = optimizers.compared("bootstrap", optimizers.stage_figures(ANALYTICS))
    assert figures["wall_s"] == 4.0
    assert (figures["lm_calls"], figures["tokens"]) == (8, 900)
    assert figures["compared_stages"] == ["optimize"]
    assert figures["other_scoring_s"] == 32.0


def test_search_optimizers_count_the_baseline_and_validation():
    for optimizer in ("mipro", "gepa"):
        figures = optimizers.compared(optimizer, optimizers.stage_figures(ANALYTICS))
        assert figures["wall_s"] == 36.0
        assert (figures["lm_calls"], figures["tokens"]) == (108, 12900)
        assert figures["other_scoring_s"] == 0.0


def test_a_result_without_stages_is_an_error():
    with pytest.raises(RuntimeError, match="no stage analytics"):
        optimizers.stage_figures({})


PROMPT_MODEL = "qwen2.5-coder-1.5b"


def test_a_separate_prompt_model_reaches_both_frameworks(tmp_path):
    task = TASKS["sst2"]
    mipro = optimizers.request(task, "mipro", 1, tmp_path, "local/smollm2-135m", None, f"local/{PROMPT_MODEL}")
    assert mipro["model"] == "local/smollm2-135m"
    assert mipro["prompt_model"] == f"local/{PROMPT_MODEL}"
    argv = [str(a) for a in optimizers.dspy_argv("http://127.0.0.1:9", task, "mipro", 1, tmp_path, None,
                                                 ("http://127.0.0.1:7", PROMPT_MODEL))]
    assert argv[argv.index("--api-base") + 1] == "http://127.0.0.1:9/v1"
    assert argv[argv.index("--prompt-api-base") + 1] == "http://127.0.0.1:7/v1"
    assert argv[argv.index("--prompt-model") + 1] == PROMPT_MODEL
    plain = [str(a) for a in optimizers.dspy_argv("http://127.0.0.1:9", task, "mipro", 1, tmp_path, None)]
    assert "--prompt-model" not in plain


def test_runs_with_a_prompt_model_are_stored_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "OPTIMIZERS_JSON", tmp_path / "optimizers.json")
    assert optimizers.results_path(None) == tmp_path / "optimizers.json"
    assert optimizers.results_path(PROMPT_MODEL) == tmp_path / f"optimizers-{PROMPT_MODEL}.json"
    # The plain results are not resumed into a prompt-model run.
    stored(tmp_path, monkeypatch, META)
    assert optimizers.previous_runs(Namespace(resume=True, prompt_model=PROMPT_MODEL), META) == ([], [])


def test_a_prompt_model_is_refused_for_the_http_framework():
    args = Namespace(tasks="sst2", optimizers="mipro", seeds="1", frameworks="dspy,promptopt-http",
                     prompt_model=PROMPT_MODEL, train=50, val=50, test=100, resume=False, time_limit=None)
    with pytest.raises(ValueError, match="without promptopt-http"):
        optimizers.run(args)
    with pytest.raises(ValueError, match="separate prompt model"):
        optimizers.run_promptopt(Path("promptopt"), "http://127.0.0.1:9", TASKS["sst2"], "mipro", 1, Path("."),
                                 None, in_process=False, prompt_model=PROMPT_MODEL)


TASK_MODEL = "gemma3-270m"


def test_another_task_model_reaches_both_frameworks(tmp_path):
    task = TASKS["sst2"]
    argv = [str(a) for a in optimizers.dspy_argv("http://127.0.0.1:9", task, "gepa", 1, tmp_path, 40,
                                                 task_model=TASK_MODEL)]
    assert argv[argv.index("--model") + 1] == TASK_MODEL
    default = [str(a) for a in optimizers.dspy_argv("http://127.0.0.1:9", task, "gepa", 1, tmp_path, 40)]
    assert default[default.index("--model") + 1] == optimizers.DEFAULT_TASK_MODEL


def test_runs_with_another_task_model_are_stored_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "OPTIMIZERS_JSON", tmp_path / "optimizers.json")
    assert optimizers.results_path(None, TASK_MODEL) == tmp_path / f"optimizers-task-{TASK_MODEL}.json"
    assert optimizers.results_path(PROMPT_MODEL, TASK_MODEL) == \
        tmp_path / f"optimizers-task-{TASK_MODEL}-prompt-{PROMPT_MODEL}.json"
    assert optimizers.results_path(PROMPT_MODEL, optimizers.DEFAULT_TASK_MODEL) == \
        tmp_path / f"optimizers-{PROMPT_MODEL}.json"
    # Results of the default task model are not resumed into a run with another one, even when a
    # file of the same name holds them.
    stored(tmp_path, monkeypatch, META)
    assert optimizers.previous_runs(Namespace(resume=True, task_model=TASK_MODEL), META) == ([], [])
    (tmp_path / f"optimizers-task-{TASK_MODEL}.json").write_text(
        (tmp_path / "optimizers.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ValueError, match="task_model=None"):
        optimizers.previous_runs(Namespace(resume=True, task_model=TASK_MODEL), {**META, "task_model": TASK_MODEL})


def test_the_section_heading_names_the_models():
    assert docs.models_heading({"prompt_model": PROMPT_MODEL}) == \
        f"Prompt and reflection model for both frameworks: `{PROMPT_MODEL}`."
    both = docs.models_heading({"task_model": TASK_MODEL, "prompt_model": PROMPT_MODEL})
    assert both.startswith(f"Task model for both frameworks: `{TASK_MODEL}`.")
    assert f"`{PROMPT_MODEL}`" in both
    assert "proposes and reflects with the task model" in docs.models_heading({"task_model": TASK_MODEL})
