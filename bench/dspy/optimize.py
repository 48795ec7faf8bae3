"""DSPy side of the optimizer benchmark: optimize one Predict program on a task with one optimizer
and seed against an OpenAI-compatible server (the same engine promptopt uses), then score the
result on the test split.

    python optimize.py --split-dir DIR --task sst2 --optimizer mipro --seed 1 \
        --api-base http://127.0.0.1:PORT/v1

`DIR` holds `train.jsonl`, `dev.jsonl` (validation) and `test.jsonl`, written by the harness so
that both frameworks see the same examples in the same order. Prints one JSON line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common  # noqa: F401  (sets environment variables before DSPy is imported)
from common import Stopwatch, emit, lm_usage, peak_rss_mb
from tasks import TASKS, Task, feedback, gepa_light_budget, read_jsonl, score

import dspy  # noqa: E402
import dspy.clients.base_lm as base_lm  # noqa: E402

OPTIMIZERS = ("none", "bootstrap", "mipro", "gepa")


def to_examples(task: Task, rows: list[dict]) -> list[dspy.Example]:
    fields = {*task.inputs, task.output}
    return [dspy.Example(**{k: row[k] for k in fields}).with_inputs(*task.inputs) for row in rows]


def build_program(task: Task) -> dspy.Module:
    spec = ", ".join(task.inputs) + " -> " + task.output
    return dspy.Predict(dspy.Signature(spec, task.instructions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split-dir", required=True, type=Path)
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--optimizer", required=True, choices=OPTIMIZERS)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=8, help="DSPy num_threads for evaluations")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-metric-calls", type=int, default=None, help="GEPA budget (default: auto light)")
    parser.add_argument("--prompt-api-base", default=None,
                        help="server of the prompt/reflection model (default: --api-base)")
    parser.add_argument("--prompt-model", default=None, help="prompt/reflection model (default: --model)")
    args = parser.parse_args()

    task = TASKS[args.task]
    trainset = to_examples(task, read_jsonl(args.split_dir / "train.jsonl"))
    valset = to_examples(task, read_jsonl(args.split_dir / "dev.jsonl"))
    testset = to_examples(task, read_jsonl(args.split_dir / "test.jsonl"))

    # One process per run, so an in-memory cache is a fresh cache: no hits carried over between runs.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    lm = dspy.LM(
        f"openai/{args.model}",
        api_base=args.api_base,
        api_key="none",
        temperature=0.0,
        max_tokens=args.max_tokens,
    )
    # Instruction proposals (MIPROv2) and reflections (GEPA) get room for a paragraph, as promptopt's
    # proposer does (512 tokens); the task model's replies keep `--max-tokens`.
    reflection_lm = dspy.LM(
        f"openai/{args.prompt_model or args.model}",
        api_base=args.prompt_api_base or args.api_base,
        api_key="none",
        temperature=1.0,
        max_tokens=512,
    )
    dspy.configure(lm=lm, max_errors=10**6)
    base_lm.MAX_HISTORY_SIZE = 10**9

    def metric(example, prediction, trace=None):
        return score(task, example[task.output], getattr(prediction, task.output, None))

    def feedback_metric(example, prediction, trace=None, pred_name=None, pred_trace=None):
        predicted = getattr(prediction, task.output, None)
        value = score(task, example[task.output], predicted)
        return dspy.Prediction(score=value, feedback=feedback(task, example[task.output], predicted, value))

    program = build_program(task)
    budget = None
    with Stopwatch() as compile_time:
        if args.optimizer == "none":
            optimized = program
        elif args.optimizer == "bootstrap":
            optimizer = dspy.BootstrapFewShot(
                metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4, max_rounds=1
            )
            optimized = optimizer.compile(program, trainset=trainset)
        elif args.optimizer == "mipro":
            optimizer = dspy.MIPROv2(
                metric=metric,
                prompt_model=reflection_lm,
                task_model=lm,
                auto="light",
                seed=args.seed,
                num_threads=args.threads,
                verbose=False,
            )
            optimized = optimizer.compile(program, trainset=trainset, valset=valset)
        else:
            budget = args.max_metric_calls or gepa_light_budget(len(valset))
            optimizer = dspy.GEPA(
                metric=feedback_metric,
                max_metric_calls=budget,
                reflection_lm=reflection_lm,
                seed=args.seed,
                num_threads=args.threads,
            )
            optimized = optimizer.compile(program, trainset=trainset, valset=valset)
    compile_usage = lm_usage(base_lm.GLOBAL_HISTORY)
    base_lm.GLOBAL_HISTORY.clear()

    evaluate = dspy.Evaluate(
        devset=testset, metric=metric, num_threads=args.threads, display_progress=False, max_errors=10**6
    )
    with Stopwatch() as test_time:
        result = evaluate(optimized)
    test_usage = lm_usage(base_lm.GLOBAL_HISTORY)

    predictor = optimized.predictors()[0]
    emit(
        {
            "framework": "dspy",
            "dspy_version": dspy.__version__,
            "task": task.name,
            "optimizer": args.optimizer,
            "seed": args.seed,
            "threads": args.threads,
            "train": len(trainset),
            "val": len(valset),
            "test": len(testset),
            "metric_call_budget": budget,
            "prompt_model": args.prompt_model or args.model,
            "test_score": result.score / 100.0,
            "optimize_wall_s": compile_time.wall_s,
            "optimize_cpu_s": compile_time.cpu_s,
            "test_wall_s": test_time.wall_s,
            "test_cpu_s": test_time.cpu_s,
            "optimize_lm_calls": compile_usage["lm_calls"],
            "optimize_tokens": compile_usage["tokens"],
            "test_lm_calls": test_usage["lm_calls"],
            "test_tokens": test_usage["tokens"],
            "lm_calls": compile_usage["lm_calls"] + test_usage["lm_calls"],
            "tokens": compile_usage["tokens"] + test_usage["tokens"],
            "demos": len(predictor.demos),
            "instructions": predictor.signature.instructions,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


if __name__ == "__main__":
    main()
