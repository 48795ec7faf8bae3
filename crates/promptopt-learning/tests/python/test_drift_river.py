"""Compare the change detectors of promptopt_learning::drift with river, through `drift_json`.

Build the example, then run from the repository root:

    cargo build -p promptopt-learning --examples
    PROMPTOPT_DRIFT_BIN=target/debug/examples/drift_json python -m pytest -q \
        crates/promptopt-learning/tests/python

The tests are skipped when PROMPTOPT_DRIFT_BIN is not set. For every stream and parameter
setting, the positions of the warnings and drifts must be exactly river's
(`river.drift.binary.DDM`, `river.drift.PageHinkley`, `river.drift.ADWIN`), and the state after
the last observation must agree to a relative tolerance of 1e-9.
"""

import json
import math
import os
import subprocess

import numpy as np
import pytest

BIN = os.environ.get("PROMPTOPT_DRIFT_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="PROMPTOPT_DRIFT_BIN is not set")

REL = 1e-9


def close(actual, expected):
    return math.isclose(actual, expected, rel_tol=REL, abs_tol=1e-12)


def run(requests):
    """Sends the requests to the binary, one per line; returns the parsed answers."""
    path = os.path.abspath(BIN)
    assert os.path.exists(path), f"{path} does not exist: build the examples first"
    text = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run(
        [path], input=text, capture_output=True, text=True, check=True, timeout=120
    )
    lines = done.stdout.splitlines()
    assert len(lines) == len(requests), done.stderr
    return [json.loads(line) for line in lines]


# Streams -------------------------------------------------------------------------------------


def bernoulli(seed, rates):
    """0/1 errors: `rates` is a list of (length, error probability) segments."""
    rng = np.random.default_rng(seed)
    parts = [(rng.random(n) < p).astype(float) for n, p in rates]
    return np.concatenate(parts)


def gradual(seed, n_before, n_ramp, n_after, p0, p1):
    """0/1 errors whose rate moves linearly from p0 to p1 over n_ramp outcomes."""
    rng = np.random.default_rng(seed)
    rates = np.concatenate(
        [np.full(n_before, p0), np.linspace(p0, p1, n_ramp), np.full(n_after, p1)]
    )
    return (rng.random(rates.size) < rates).astype(float)


def gaussian(seed, segments, clip=None):
    """Normal values: `segments` is a list of (length, mean, sd); optionally clipped."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(m, s, n) for n, m, s in segments])
    if clip is not None:
        values = np.clip(values, *clip)
    return values


BINARY_STREAMS = {
    "errors_p0.1_stable": bernoulli(1, [(3000, 0.1)]),
    "errors_p0.3_stable": bernoulli(2, [(3000, 0.3)]),
    "errors_p0.1_to_0.4_at_1000": bernoulli(3, [(1000, 0.1), (1000, 0.4)]),
    "errors_p0.2_to_0.5_at_1000": bernoulli(4, [(1000, 0.2), (1500, 0.5)]),
    "errors_p0.05_to_0.15_at_2000": bernoulli(5, [(2000, 0.05), (2000, 0.15)]),
    "errors_p0.4_to_0.1_at_1000": bernoulli(6, [(1000, 0.4), (1000, 0.1)]),
    "errors_recurring": bernoulli(7, [(800, 0.1), (800, 0.5), (800, 0.1), (800, 0.5)]),
    "errors_gradual_0.1_to_0.5": gradual(8, 1000, 1000, 500, 0.1, 0.5),
    "errors_gradual_0.2_to_0.3": gradual(9, 1500, 1500, 1000, 0.2, 0.3),
    "errors_all_correct": np.zeros(500),
    "errors_all_wrong": np.ones(500),
    "errors_clean_then_one_error": np.concatenate([np.zeros(200), [1.0], np.zeros(100)]),
    "errors_short_5": bernoulli(10, [(5, 0.5)]),
    "errors_short_31": bernoulli(11, [(31, 0.3)]),
    "errors_short_64": bernoulli(12, [(64, 0.3)]),
    "errors_empty": np.zeros(0),
}

METRIC_STREAMS = {
    "normal_stable": gaussian(20, [(3000, 0.0, 1.0)]),
    "normal_up_0_to_2_at_1000": gaussian(21, [(1000, 0.0, 1.0), (1000, 2.0, 1.0)]),
    "normal_up_0_to_0.5_at_1000": gaussian(22, [(1000, 0.0, 1.0), (2000, 0.5, 1.0)]),
    "normal_down_5_to_3_at_1000": gaussian(23, [(1000, 5.0, 1.0), (1000, 3.0, 1.0)]),
    "normal_down_then_up": gaussian(24, [(700, 1.0, 0.5), (700, 0.0, 0.5), (700, 1.5, 0.5)]),
    "latency_100_to_130": gaussian(25, [(1500, 100.0, 10.0), (1500, 130.0, 10.0)]),
    "score_0.8_to_0.6_clipped": gaussian(
        26, [(1000, 0.8, 0.1), (1000, 0.6, 0.1)], clip=(0.0, 1.0)
    ),
    "score_0.7_to_0.75_clipped": gaussian(
        27, [(2000, 0.7, 0.15), (2000, 0.75, 0.15)], clip=(0.0, 1.0)
    ),
    "constant_zero": np.zeros(1000),
    "constant_half": np.full(1000, 0.5),
    "constant_42": np.full(1000, 42.0),
    "step_0_to_1": np.concatenate([np.zeros(500), np.ones(500)]),
    "short_1": np.array([0.3]),
    "short_12": gaussian(28, [(12, 0.0, 1.0)]),
}

ALL_STREAMS = {**BINARY_STREAMS, **METRIC_STREAMS}

# Detector settings -----------------------------------------------------------------------------

DDM_SETTINGS = [
    {},
    {"warm_start": 10, "warning_threshold": 1.5, "drift_threshold": 2.5},
    {"warm_start": 100},
    {"warm_start": 1, "warning_threshold": 2.0, "drift_threshold": 2.0},
    {"warning_threshold": 1.0, "drift_threshold": 4.0},
]

PAGE_HINKLEY_SETTINGS = [
    {},
    {"mode": "up"},
    {"mode": "down"},
    {"mode": "up", "threshold": 10.0, "delta": 0.01, "min_instances": 10},
    {"mode": "both", "threshold": 5.0, "alpha": 1.0},
    {"mode": "down", "threshold": 2.0, "alpha": 0.99, "delta": 0.0},
]

ADWIN_SETTINGS = [
    {},
    {"delta": 0.01, "clock": 1},
    {"clock": 1, "min_window_length": 10, "grace_period": 50},
    {"max_buckets": 2, "clock": 4},
    {"max_buckets": 1, "clock": 1, "delta": 0.05},
    {"delta": 0.1, "clock": 8, "max_buckets": 3},
    {"delta": 1e-5, "clock": 16, "min_window_length": 1, "grace_period": 0},
]


def river_detector(kind, params):
    from river import drift

    if kind == "ddm":
        return drift.binary.DDM(**params)
    if kind == "page_hinkley":
        return drift.PageHinkley(**params)
    return drift.ADWIN(**params)


def river_run(kind, params, stream):
    """river's signals on the stream, and its state at the end.

    river 0.26.1's ADWIN can panic with `max_buckets=1` (when a level emptied by merges becomes
    the oldest one and a bucket is then dropped from it); the answer then says where
    (`crashed_at`) and holds the signals before that point only.
    """
    detector = river_detector(kind, params)
    warnings, drifts = [], []
    for i, x in enumerate(stream):
        try:
            detector.update(float(x))
        except BaseException as error:  # pyo3's PanicException derives from BaseException
            if kind != "adwin" or params.get("max_buckets") != 1:
                raise
            assert "slice index" in str(error), error
            return {"warnings": warnings, "drifts": drifts, "crashed_at": i}
        if detector.drift_detected:
            drifts.append(i)
        if getattr(detector, "warning_detected", False):
            warnings.append(i)
    if kind == "ddm":
        state = {"n": detector._p.n, "error_rate": detector._p.get()}
    elif kind == "page_hinkley":
        state = {"n": detector._x_mean.n, "mean": detector._x_mean.get()}
    else:
        state = {
            "width": detector.width,
            "estimation": detector.estimation,
            "total": detector.total,
            "variance": detector.variance,
        }
    return {"warnings": warnings, "drifts": drifts, "final": state}


CASES = (
    [("ddm", p, s) for p in DDM_SETTINGS for s in BINARY_STREAMS]
    + [("page_hinkley", p, s) for p in PAGE_HINKLEY_SETTINGS for s in ALL_STREAMS]
    + [("adwin", p, s) for p in ADWIN_SETTINGS for s in ALL_STREAMS]
)


def case_id(case):
    kind, params, stream = case
    settings = ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    return f"{kind}[{settings}]-{stream}"


@pytest.fixture(scope="module")
def ours():
    """Every case through the binary at once, keyed by case id."""
    requests = [
        {"detector": {"kind": kind, **params}, "stream": ALL_STREAMS[stream].tolist()}
        for kind, params, stream in CASES
    ]
    return dict(zip(map(case_id, CASES), run(requests)))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_same_signals_as_river(case, ours):
    kind, params, stream = case
    answer = ours[case_id(case)]
    assert "error" not in answer, answer
    expected = river_run(kind, params, ALL_STREAMS[stream])
    if "crashed_at" in expected:
        # Up to river's crash, the signals agree; promptopt goes on.
        before = expected["crashed_at"]
        assert [i for i in answer["drifts"] if i < before] == expected["drifts"]
        assert answer["warnings"] == expected["warnings"] == []
        return
    assert answer["warnings"] == expected["warnings"]
    assert answer["drifts"] == expected["drifts"]
    for key, value in expected["final"].items():
        assert close(answer["final"][key], value), (key, answer["final"], expected["final"])


def test_the_cases_exercise_the_detectors(ours):
    """The comparison is not vacuous: most detectors fire somewhere, DDM warns."""
    for kind in ("ddm", "page_hinkley", "adwin"):
        fired = [
            case_id(c)
            for c in CASES
            if c[0] == kind and ours[case_id(c)]["drifts"]
        ]
        assert len(fired) >= 10, (kind, fired)
    assert any(ours[case_id(c)]["warnings"] for c in CASES if c[0] == "ddm")
    # Several detections within one stream (the detector restarts after each).
    assert any(len(ours[case_id(c)]["drifts"]) >= 3 for c in CASES if c[0] == "adwin")


def test_invalid_requests_are_reported():
    answers = run(
        [
            {"detector": {"kind": "adwin", "delta": 1.5}, "stream": [0.0]},
            {"detector": {"kind": "ddm", "warm_start": 0}, "stream": [0.0]},
            {"detector": {"kind": "page_hinkley", "threshold": -1.0}, "stream": [0.0]},
            {"detector": {"kind": "page_hinkley", "mode": "sideways"}, "stream": [0.0]},
            {"detector": {"kind": "kswin"}, "stream": [0.0]},
            {"detector": {"kind": "ddm", "warm_up": 10}, "stream": [0.0]},
        ]
    )
    assert answers[0] == {"error": "`delta` must be in (0, 1), got 1.5"}
    assert answers[1] == {"error": "`warm_start` must be at least 1, got 0"}
    assert answers[2] == {"error": "`threshold` must be a finite number >= 0, got -1"}
    assert all("error" in a for a in answers[3:])
