#!/usr/bin/env python3
"""Plays production traffic against `promptopt serve` for the continuous-learning example.

Each review of examples/data/sst2-dev.jsonl is predicted by the `reviews` model (its production
version) and its true label is sent back as feedback. After `--shift` predictions the labels'
wording changes (`positive` -> `good`, `negative` -> `bad`), as when a product renames its
categories: the deployed prompt starts failing, and the server's learning loop is expected to
notice, retrain, validate and promote. Standard library only.

    python3 examples/continuous-learning/stream.py --server http://127.0.0.1:8000 --token dev-token
"""

import argparse
import itertools
import json
import pathlib
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
RENAME = {"positive": "good", "negative": "bad"}


def call(args, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(args.server + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + args.token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path}: HTTP {e.code}: {e.read().decode()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default="dev-token")
    parser.add_argument("--shift", type=int, default=100, help="predictions before the shift")
    parser.add_argument("--total", type=int, default=1000, help="predictions in all")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between predictions")
    args = parser.parse_args()
    reviews = [json.loads(line) for line in open(ROOT / "examples/data/sst2-dev.jsonl")]
    right = 0
    for n, review in enumerate(itertools.islice(itertools.cycle(reviews), args.total), 1):
        label = review["label"] if n <= args.shift else RENAME[review["label"]]
        p = call(args, "POST", "/v1/models/reviews/predict", {"inputs": {"text": review["text"]}})
        call(args, "POST", "/v1/feedback", {"prediction_id": p["prediction_id"], "expected_output": label})
        right += p["outputs"].get("label") == label
        time.sleep(args.pause)
        if n % 20 == 0:
            status = call(args, "GET", "/v1/models/reviews/learning")
            last = status["recent"][-1]["kind"] if status["recent"] else "-"
            print(f"{n:4d} predictions  accuracy of the last 20: {right / 20:.2f}  "
                  f"served by {p['model_id']}  phase: {status['phase']}  last decision: {last}",
                  flush=True)
            right = 0


if __name__ == "__main__":
    main()
