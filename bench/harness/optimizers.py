"""The optimizer experiment: DSPy and promptopt optimize the same program on the same splits with the
same budget, both against the embedded model served by `promptopt serve-lm`; promptopt also runs
with the engine in-process. Each optimized program is scored on the test split through the server.

The task model is SmolLM2-135M unless `--task-model NAME` names another embedded model (such as
`gemma3-270m`). By default both frameworks propose instructions and reflect with the task model, as
DSPy does. With `--prompt-model NAME` (an embedded model, such as `qwen2.5-coder-1.5b`) a second
`serve-lm` serves that model to DSPy as its `prompt_model` / `reflection_lm`, and promptopt runs it
in-process as its `prompt_model`. Runs with another task or prompt model are stored apart (see
`results_path`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from . import docs, paths
from .overhead import machine_meta
from .procs import Server, TimeLimitReached, run_measured

sys.path.insert(0, str(paths.DSPY_DIR))
from tasks import TASKS, Task, gepa_light_budget, read_jsonl  # noqa: E402

ALGORITHMS = {"bootstrap": "bootstrapfewshot", "mipro": "miprov2", "gepa": "gepa"}
# What each algorithm optimizes in promptopt's terms: BootstrapFewShot picks demos; MIPROv2 and GEPA
# search the instructions (MIPROv2 the demos as well).
TARGETS = {"bootstrap": "few_shot_examples", "mipro": "prompt_template", "gepa": "prompt_template"}
THREADS = 8
# The task model unless `--task-model` names another: the embedded model's name, served under that
# name by `serve-lm` and run in-process as `local/NAME`.
DEFAULT_TASK_MODEL = "smollm2-135m"
# promptopt renders prompts for the served model as compact chat turns, its default for local models
# (`turns`); DSPy uses its own default, the field-marker ChatAdapter. Optimization and the test score
# use the same adapter.
ADAPTER = "turns"
# Most tokens per task-model reply, the same for both frameworks: enough for DSPy's field markers
# around a label or a short span, short enough that a rambling 135M model does not dominate the time.
MAX_TOKENS = {"sst2": 32, "trec": 32, "xquad_en": 64}


def engine_env() -> dict[str, str]:
    """The environment of every promptopt process: the embedded models are found in the repository's
    `models/` folder (where `scripts/fetch-model.sh` puts them), whatever the working directory."""
    return {**os.environ, "PROMPTOPT_MODELS_DIR": str(paths.REPO / "models")}


def write_splits(task: Task, seed: int, n_train: int, n_val: int, n_test: int) -> Path:
    """The seed's splits: the first `n_train` training examples after a seeded shuffle, and the first
    `n_val` / `n_test` of dev / test (the same for every seed)."""
    out = paths.OUT / "splits" / task.name / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    train = read_jsonl(paths.DATA / task.name / "train.jsonl")
    random.Random(seed).shuffle(train)
    for name, rows in (("train", train[:n_train]),
                       ("dev", read_jsonl(paths.DATA / task.name / "dev.jsonl")[:n_val]),
                       ("test", read_jsonl(paths.DATA / task.name / "test.jsonl")[:n_test])):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return out


# An iteration cap far above what a GEPA light budget of a few hundred metric calls allows (an
# iteration evaluates the parent on its minibatch, so it spends metric calls).
GEPA_MAX_ITERATIONS = 100_000


def request(task: Task, optimizer: str, seed: int, split_dir: Path, model: str, budget: int | None,
            prompt_model: str | None = None) -> dict:
    """A promptopt optimization request equivalent to the DSPy run; `prompt_model` proposes and
    reflects (the task model when `None`)."""
    config: dict = {
        "bootstrap": {"max_bootstrapped": 4, "num_examples": 4, "bootstrap_rounds": 1},
        "mipro": {"auto": "light", "max_bootstrapped_demos": 4, "max_labeled_demos": 4},
        "gepa": {"max_metric_calls": budget, "reflection_minibatch_size": 3, "use_merge": True},
    }[optimizer]
    return {
        "target": TARGETS[optimizer],
        "objective": "maximize_accuracy",
        "evaluation_metric": task.metric,
        "algorithm": ALGORITHMS[optimizer],
        "model": model,
        # DSPy proposes and reflects with the task model unless given a prompt model; so does
        # promptopt here (its own default for a local task model would be Qwen2.5-Coder 1.5B).
        "prompt_model": prompt_model or model,
        "seed": seed,
        "training_examples": str(split_dir / "train.jsonl"),
        "validation_examples": str(split_dir / "dev.jsonl"),
        "input_keys": list(task.inputs),
        "output_keys": [task.output],
        "instructions": task.instructions,
        "adapter": ADAPTER,
        "constraints": {"max_tokens": MAX_TOKENS[task.name]},
        "enable_analytics": True,
        "concurrency": THREADS,
        "timeout_seconds": 6 * 3600,
        # DSPy's GEPA stops on its metric-call budget alone; promptopt's default cap of 50 iterations
        # would stop it earlier, so the budget is made the binding limit here too.
        **({"max_iterations": GEPA_MAX_ITERATIONS} if optimizer == "gepa" else {}),
        "algorithm_config": config,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build() -> Path:
    subprocess.run(["cargo", "build", "--release", "-p", "promptopt-cli"], cwd=paths.REPO, check=True)
    return paths.target_dir("release") / "promptopt"


def task_model_of(args) -> str:
    """The task model an invocation names (`--task-model`), or the default."""
    return getattr(args, "task_model", None) or DEFAULT_TASK_MODEL


def results_path(prompt_model: str | None, task_model: str = DEFAULT_TASK_MODEL) -> Path:
    """Where the results are stored: `optimizers.json` for the default task model proposing for
    itself, `optimizers-PROMPT.json` for the default task model with a separate prompt model, and
    `optimizers-task-TASK[-prompt-PROMPT].json` for another task model."""
    if task_model != DEFAULT_TASK_MODEL:
        name = f"optimizers-task-{task_model}" + (f"-prompt-{prompt_model}" if prompt_model else "")
        return docs.OPTIMIZERS_JSON.with_name(name + ".json")
    if prompt_model is None:
        return docs.OPTIMIZERS_JSON
    return docs.OPTIMIZERS_JSON.with_name(f"optimizers-{prompt_model}.json")


def dspy_argv(url: str, task: Task, optimizer: str, seed: int, split_dir: Path, budget: int | None,
              prompt: tuple[str, str] | None = None, task_model: str = DEFAULT_TASK_MODEL) -> list:
    """The DSPy run's command line; `prompt` is the prompt model's server URL and served name."""
    argv = [paths.VENV_PYTHON, paths.DSPY_DIR / "optimize.py", "--split-dir", split_dir, "--task", task.name,
            "--optimizer", optimizer, "--seed", str(seed), "--api-base", url + "/v1", "--model", task_model,
            "--threads", str(THREADS), "--max-tokens", str(MAX_TOKENS[task.name])]
    if budget is not None:
        argv += ["--max-metric-calls", str(budget)]
    if prompt is not None:
        argv += ["--prompt-api-base", prompt[0] + "/v1", "--prompt-model", prompt[1]]
    return argv


def run_dspy(url: str, task: Task, optimizer: str, seed: int, split_dir: Path, budget: int | None,
             time_limit_s: float | None = None, prompt: tuple[str, str] | None = None,
             task_model: str = DEFAULT_TASK_MODEL) -> dict:
    argv = dspy_argv(url, task, optimizer, seed, split_dir, budget, prompt, task_model)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    measured = run_measured(argv, env=env, timeout_s=time_limit_s).check()
    record = json.loads(measured.last_json_line())
    if not record["optimize_lm_calls"] and optimizer != "none" or not record["test_lm_calls"]:
        # DSPy counts failed calls as wrong answers; a run whose model calls all failed is not a result.
        raise RuntimeError(f"DSPy made no successful model calls: {measured.stderr[-2000:]}")
    return {
        "framework": "dspy", "task": task.name, "optimizer": optimizer, "seed": seed,
        "test_score": record["test_score"], "lm_calls": record["optimize_lm_calls"],
        "tokens": record["optimize_tokens"], "wall_s": record["optimize_wall_s"], "cpu_s": record["optimize_cpu_s"],
        "peak_rss_mb": measured.peak_rss_mb, "instructions": record["instructions"], "demos": record["demos"],
    }


# The stages of a promptopt run that do the work DSPy's `compile()` does. DSPy's BootstrapFewShot
# only bootstraps; promptopt's `baseline` and `validate` stages score the starting and the
# bootstrapped program on the validation set, which DSPy's `compile()` never does, so they are
# reported apart. DSPy's MIPROv2 and GEPA score the starting program and the candidates on the
# validation set inside `compile()`; promptopt's search reuses the `baseline` stage's scores of
# the starting program, so that stage counts, and so does `validate`.
COMPARED_STAGES = {"bootstrap": ("optimize",), "mipro": ("baseline", "optimize", "validate"),
                   "gepa": ("baseline", "optimize", "validate")}


def stage_figures(analytics: dict) -> dict[str, dict]:
    """Seconds, LM calls and tokens per stage of a promptopt result's analytics."""
    stages = {s["stage"]: {"seconds": s["seconds"], "lm_calls": s["lm_calls"], "cache_hits": s.get("cache_hits", 0),
                           "tokens": s["tokens"]}
              for s in analytics.get("stages") or []}
    if "optimize" not in stages:
        raise RuntimeError("The promptopt result has no stage analytics")
    return stages


def compared(optimizer: str, stages: dict[str, dict]) -> dict:
    """The figures compared with DSPy's `compile()` (the stages in `COMPARED_STAGES`), and the
    seconds of the other scoring stages (`baseline`, `validate`) as `other_scoring_s`. LM calls
    leave out the replies from the response cache, as the DSPy side's count does; tokens of cached
    replies are not counted by promptopt."""
    window = COMPARED_STAGES[optimizer]
    total = {key: sum(stages.get(name, {}).get(key, 0) for name in window)
             for key in ("seconds", "lm_calls", "cache_hits", "tokens")}
    total["lm_calls"] -= total["cache_hits"]
    other = sum(stages.get(name, {}).get("seconds", 0.0) for name in ("baseline", "validate") if name not in window)
    return {"wall_s": total["seconds"], "lm_calls": total["lm_calls"], "tokens": total["tokens"],
            "compared_stages": list(window), "other_scoring_s": other}


def run_promptopt(binary: Path, url: str, task: Task, optimizer: str, seed: int, split_dir: Path,
                  budget: int | None, in_process: bool, time_limit_s: float | None = None,
                  prompt_model: str | None = None, task_model: str = DEFAULT_TASK_MODEL) -> dict:
    framework = "promptopt-inprocess" if in_process else "promptopt-http"
    model = f"local/{task_model}" if in_process else f"openai/{task_model}"
    if prompt_model is not None and not in_process:
        raise ValueError("promptopt-http sends every model to one OpenAI-compatible server, so it cannot "
                         "use a separate prompt model")
    prompt = f"local/{prompt_model}" if prompt_model else None
    work = split_dir / f"{framework}-{optimizer}"
    # A fresh folder, so the response cache starts empty, as DSPy's in-memory cache does in its
    # fresh process.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    req_path = work / "request.json"
    req_path.write_text(json.dumps(request(task, optimizer, seed, split_dir, model, budget, prompt), indent=1))
    env = {**engine_env(), "OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": "none",
           "PROMPTOPT_HOME": str(work / "home")}
    measured = run_measured([binary, "optimize", req_path, "--json", "--concurrency", str(THREADS),
                             "--output", work / "run"], env=env, timeout_s=time_limit_s).check()
    result = json.loads(measured.stdout[measured.stdout.index("{"):])
    analytics = result.get("analytics") or {}
    stages = stage_figures(analytics)
    state = next(iter(result["optimized_config"]["predictors"].values()))
    test_score = score_on_test(binary, url, task, split_dir, state, work, task_model)
    return {
        "framework": framework, "task": task.name, "optimizer": optimizer, "seed": seed,
        "test_score": test_score, **compared(optimizer, stages), "stages": stages, "cache": True,
        "cache_hits": analytics.get("cache_hits"),
        "command_wall_s": measured.wall_s, "command_lm_calls": analytics.get("lm_calls"),
        "cpu_s": measured.cpu_s, "peak_rss_mb": measured.peak_rss_mb,
        "instructions": state.get("instructions"), "demos": len(state.get("demos") or []),
    }


def score_on_test(binary: Path, url: str, task: Task, split_dir: Path, state: dict, work: Path,
                  task_model: str = DEFAULT_TASK_MODEL) -> float:
    """Scores an optimized predictor (instructions, demos, strategy) on the test split through the server."""
    demos = state.get("demos") or []
    demo_file = work / "demos.jsonl"
    with open(demo_file, "w", encoding="utf-8") as f:
        for demo in demos:
            f.write(json.dumps(demo) + "\n")
    strategy = "chain-of-thought" if str(state.get("strategy", "")).lower() in ("chainofthought", "chain_of_thought") \
        else "predict"
    argv = [binary, "evaluate", "--data", split_dir / "test.jsonl", "--input-keys", ",".join(task.inputs),
            "--output-keys", task.output, "--metric", task.metric, "--instructions", state["instructions"],
            "--strategy", strategy, "--adapter", ADAPTER, "--max-tokens", str(MAX_TOKENS[task.name]),
            "--concurrency", str(THREADS), "--lm-model", f"openai/{task_model}",
            "--base-url", url + "/v1", "--no-cache", "--max-errors", "1000000", "--json"]
    if demos:
        argv += ["--train", demo_file, "--demos", str(len(demos))]
    measured = run_measured(argv).check()
    return float(json.loads(measured.stdout[measured.stdout.index("{"):])["score"])


def run_key(record: dict) -> tuple:
    """What identifies one run: framework, task, optimizer and seed."""
    return (record["framework"], record["task"], record["optimizer"], record["seed"])


def previous_runs(args, meta: dict) -> tuple[list[dict], list[dict]]:
    """With `--resume`, the runs and failures stored by an earlier invocation with the same splits
    (a failed run that is asked for again is tried again, and its old failure dropped then);
    otherwise nothing."""
    task_model = task_model_of(args)
    stored = docs.load(results_path(getattr(args, "prompt_model", None), task_model)) if args.resume else None
    if not stored:
        return [], []
    old = stored.get("meta", {})
    for key in ("train", "val", "test", "threads", "prompt_model", "task_model"):
        if old.get(key) != meta.get(key):
            raise ValueError(f"Cannot resume: the stored results used {key}={old.get(key)}, this run {meta.get(key)}")
    return list(stored.get("runs", [])), list(stored.get("failures", []))


def run(args) -> dict:
    tasks = [TASKS[t] for t in args.tasks.split(",")]
    optimizers = args.optimizers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    frameworks = args.frameworks.split(",")
    prompt_model = getattr(args, "prompt_model", None)
    task_model = task_model_of(args)
    if prompt_model is not None and "promptopt-http" in frameworks:
        raise ValueError("`--prompt-model` needs `--frameworks` without promptopt-http, which sends every "
                         "model to one server")
    meta = {"train": args.train, "val": args.val, "test": args.test, "threads": THREADS}
    if prompt_model is not None:
        meta["prompt_model"] = prompt_model
    if task_model != DEFAULT_TASK_MODEL:
        meta["task_model"] = task_model
    runs, failures = previous_runs(args, meta)
    done = {run_key(r) for r in runs}
    binary = build()
    port = free_port()

    def results() -> dict:
        all_seeds = sorted({r["seed"] for r in runs} | set(seeds))
        return {"meta": machine_meta() | meta | {"seeds": all_seeds}, "runs": runs, "failures": failures}

    serve = [binary, "serve-lm", "--model", f"local/{task_model}", "--port", str(port), "--slots", str(THREADS)]
    with ExitStack() as servers:
        server = servers.enter_context(Server(serve, ready_url=f"http://127.0.0.1:{port}", env=engine_env(),
                                              timeout_s=300, log=paths.OUT / "serve-lm.log"))
        prompt = None
        if prompt_model is not None:
            # The prompt model's prompts (a dataset summary, demos, feedback) need a longer context
            # than the task model's; four slots cover DSPy's parallel proposals.
            prompt_port = free_port()
            serve_prompt = [binary, "serve-lm", "--model", f"local/{prompt_model}", "--port", str(prompt_port),
                            "--slots", "4", "--ctx", "4096"]
            prompt_server = servers.enter_context(
                Server(serve_prompt, ready_url=f"http://127.0.0.1:{prompt_port}", env=engine_env(), timeout_s=300,
                       log=paths.OUT / "serve-lm-prompt.log"))
            prompt = (prompt_server.url, prompt_model)
        for task in tasks:
            for seed in seeds:
                split_dir = write_splits(task, seed, args.train, args.val, args.test)
                for optimizer in optimizers:
                    budget = gepa_light_budget(args.val) if optimizer == "gepa" else None
                    for framework in frameworks:
                        if (framework, task.name, optimizer, seed) in done:
                            continue
                        label = f"{framework} {task.name} {optimizer} seed {seed}"
                        failures[:] = [f for f in failures if f["run"] != label]
                        key = {"framework": framework, "task": task.name, "optimizer": optimizer, "seed": seed}
                        try:
                            if framework == "dspy":
                                record = run_dspy(server.url, task, optimizer, seed, split_dir, budget,
                                                  time_limit_s=args.time_limit, prompt=prompt,
                                                  task_model=task_model)
                            else:
                                record = run_promptopt(binary, server.url, task, optimizer, seed, split_dir, budget,
                                                       in_process=framework == "promptopt-inprocess",
                                                       time_limit_s=args.time_limit, prompt_model=prompt_model,
                                                       task_model=task_model)
                        except TimeLimitReached as stopped:
                            failures.append({"run": label, **key, "error": str(stopped),
                                             "stopped_after_s": round(stopped.seconds, 1)})
                            print(f"stopped: {label}: {stopped}", file=sys.stderr)
                        except (RuntimeError, KeyError, ValueError) as error:
                            failures.append({"run": label, **key, "error": str(error)[-2000:]})
                            print(f"failed: {label}: {str(error)[-500:]}", file=sys.stderr)
                        else:
                            runs.append(record)
                            print(f"{label}: test {record['test_score']:.3f}, {record['wall_s']:.1f} s",
                                  file=sys.stderr)
                        # Stored after every run, finished or not, so an interrupted invocation can `--resume`.
                        docs.save(results_path(prompt_model, task_model), results())
    return results()
