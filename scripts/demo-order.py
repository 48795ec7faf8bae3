#!/usr/bin/env python3
"""How much the order of a winner's demos moves its score.

    scripts/demo-order.py --data bench/data/sst2/dev.jsonl --lm-model local/gemma3-270m \
        --input-keys text --output-keys label --max-tokens 32 runs/remeasure/sst2-bootstrap-s*/result.json

For each optimization result (`result.json` of `promptopt optimize --output DIR`) whose program has one
predictor with demos, the same demos and instruction are scored on `--data` in several orders with
`promptopt evaluate`: as the optimizer chose them, reversed, and `--shuffles` seeded shuffles (seeds
`--shuffle-seed`, `--shuffle-seed + 1`, ...), with the response cache off. The model, fields and
`max_tokens` are the run's (a result does not record them, so they are flags). Prints one Markdown row
per order: the labels in order (first letters) and the score. Needs the binary (`PROMPTOPT_BIN`, default
`target/release/promptopt`) and the model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path


def predictor(result: dict) -> dict:
    predictors = result["optimized_config"]["predictors"]
    if len(predictors) != 1:
        raise ValueError(f"the program has {len(predictors)} predictors; this script handles one")
    return next(iter(predictors.values()))


def orders(demos: list[dict], shuffles: int, first_seed: int) -> list[tuple[str, list[dict]]]:
    out = [("as chosen", demos), ("reversed", demos[::-1])]
    for k in range(shuffles):
        shuffled = list(demos)
        random.Random(first_seed + k).shuffle(shuffled)
        out.append((f"shuffle {first_seed + k}", shuffled))
    return out


def score(binary: str, args: argparse.Namespace, state: dict, demos: list[dict]) -> float:
    inputs, outputs = args.input_keys.split(","), args.output_keys.split(",")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for demo in demos:
            f.write(json.dumps({k: demo[k] for k in inputs + outputs if k in demo}) + "\n")
        demo_file = f.name
    argv = [binary, "evaluate", "--data", args.data, "--input-keys", args.input_keys, "--output-keys",
            args.output_keys, "--metric", args.metric, "--instructions", state["instructions"], "--lm-model",
            args.lm_model, "--no-cache", "--json", "--concurrency", str(args.concurrency), "--train", demo_file,
            "--demos", str(len(demos))]
    if args.adapter:
        argv += ["--adapter", args.adapter]
    if args.max_tokens:
        argv += ["--max-tokens", str(args.max_tokens)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        os.unlink(demo_file)
    if done.returncode != 0:
        raise RuntimeError(f"`promptopt evaluate` failed: {done.stderr.strip()[-1000:]}")
    return float(json.loads(done.stdout[done.stdout.index("{"):])["score"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="`result.json` files of optimization runs")
    parser.add_argument("--data", required=True, help="the examples to score on (a dev split, not test)")
    parser.add_argument("--lm-model", required=True, help="the task model, e.g. local/gemma3-270m")
    parser.add_argument("--input-keys", required=True, help="comma-separated")
    parser.add_argument("--output-keys", required=True, help="comma-separated; the first is the label shown")
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--adapter", default=None, help="default: promptopt's for the model")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--shuffles", type=int, default=3)
    parser.add_argument("--shuffle-seed", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    binary = os.environ.get("PROMPTOPT_BIN", "target/release/promptopt")
    print("| result | order | labels | score |")
    print("|---|---|---|---:|")
    for path in args.results:
        try:
            result = json.loads(Path(path).read_text(encoding="utf-8"))
            state = predictor(result)
            demos = state.get("demos") or []
            if not demos:
                raise ValueError("the winner has no demos")
            label = args.output_keys.split(",")[0]
            for name, ordered in orders(demos, args.shuffles, args.shuffle_seed):
                labels = "".join(str(d.get(label, "?"))[:1] for d in ordered)
                value = score(binary, args, state, ordered)
                print(f"| {path} | {name} | {labels} | {value:.3f} |", flush=True)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
