#!/usr/bin/env python3
"""The user guide's custom metric, `relevance_score`: the share of the expected output's words that
the prediction contains.

promptopt starts this once per run and writes one JSON object per line on standard input,
`{"example": {...}, "prediction": {...}}`; each answer is one line on standard output: a number, or
`{"score": 0.5, "feedback": "..."}` (the feedback reaches GEPA's reflection).
"""
import json
import sys


def words(value) -> set:
    return set(str(value or "").lower().split())


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        example, prediction = request["example"], request["prediction"]
        # The expected output is the example's output field (`summary` here, `expected_output` in
        # the guide's own shape).
        key = "expected_output" if "expected_output" in example else "summary"
        truth = words(example.get(key))
        if not truth:
            score, missing = 0.0, []
        else:
            got = words(prediction.get(key))
            score = len(got & truth) / len(truth)
            missing = sorted(truth - got)
        feedback = "Missing words: " + ", ".join(missing[:10]) if missing else "All words present."
        print(json.dumps({"score": score, "feedback": feedback}), flush=True)


if __name__ == "__main__":
    main()
