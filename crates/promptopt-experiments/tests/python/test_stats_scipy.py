"""Compare promptopt_experiments::stats with SciPy, through the `stats_json` example.

Build the example, then run from the repository root:

    cargo build -p promptopt-experiments --examples
    PROMPTOPT_STATS_BIN=target/debug/examples/stats_json python -m pytest -q \
        crates/promptopt-experiments/tests/python

The tests are skipped when PROMPTOPT_STATS_BIN is not set. Every figure must agree with SciPy
(or, for the sequential test, with a direct NumPy evaluation of the published formula) to a
relative tolerance of 1e-9.
"""

import json
import math
import os
import subprocess

import numpy as np
import pytest
from scipy import stats

BIN = os.environ.get("PROMPTOPT_STATS_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="PROMPTOPT_STATS_BIN is not set")

REL = 1e-9
# Absolute floor, only for quantities that are exactly 0 in theory (e.g. a difference of 0).
ABS = 1e-12


def close(actual, expected, rel=REL, abs_=ABS):
    return math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_)


def run(requests):
    """Sends the requests to the binary, one per line; returns the parsed answers."""
    path = os.path.abspath(BIN)
    assert os.path.exists(path), f"{path} does not exist: build the examples first"
    text = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run(
        [path], input=text, capture_output=True, text=True, check=True, timeout=60
    )
    lines = done.stdout.splitlines()
    assert len(lines) == len(requests), done.stderr
    return [json.loads(line) for line in lines]


# (n, mean, variance) of control and treatment: tiny and huge samples, equal and very unequal
# variances, no effect, small and overwhelming effects.
WELCH_CASES = [
    ((4, 5.0, 14.0 / 3.0), (5, 11.4, 5.3)),
    ((2, 0.0, 1.0), (2, 3.0, 2.0)),
    ((3, 1.0, 0.5), (40, 1.2, 3.0)),
    ((15, 20.893333333333334, 7.867428571428571), (15, 23.06, 3.8126666666666686)),
    ((30, 100.0, 225.0), (25, 100.0, 100.0)),
    ((50, 0.31, 0.04), (60, 0.30, 0.05)),
    ((200, 3.2, 1.1), (180, 3.5, 0.9)),
    ((1000, 0.0, 1.0), (1000, 0.05, 1.0)),
    ((1000, 0.0, 1.0), (1000, 0.3, 1.0)),
    ((10000, 12.5, 40.0), (9000, 12.6, 45.0)),
    ((100000, 0.700, 0.21), (100000, 0.705, 0.208)),
    ((100000, 0.700, 0.21), (100000, 0.710, 0.207)),
    ((1000000, 2.0, 9.0), (1000000, 2.004, 9.0)),
    ((12, 1.0, 1e-6), (7, 1.0001, 4.0)),
    ((20, -3.0, 2.0), (20, -5.0, 2.5)),
]

# (n, successes) of control and treatment.
Z_CASES = [
    ((1000, 500), (1000, 600)),
    ((1000, 700), (1000, 720)),
    ((200, 100), (200, 104)),
    ((5000, 3500), (5000, 3750)),
    ((37, 3), (41, 9)),
    ((100000, 70000), (100000, 70300)),
    ((2, 1), (2, 2)),
    ((50, 0), (60, 3)),
    ((10000, 100), (12000, 160)),
    ((300, 150), (300, 150)),
]

# (counts, weights)
SRM_CASES = [
    ([5050, 4950], [0.5, 0.5]),
    ([821588, 815482], [1.0, 1.0]),
    ([1000, 2100, 6900], [10.0, 20.0, 70.0]),
    ([10, 30], [1.0, 3.0]),
    ([123, 456, 789, 1011], [1.0, 2.0, 3.0, 4.0]),
    ([50000, 51000], [1.0, 1.0]),
    ([2, 0], [1.0, 1.0]),
]

ALPHAS = [0.05, 0.01]


def summary(case):
    n, mean, variance = case
    return {"n": n, "mean": mean, "variance": variance}


def test_welch_against_ttest_ind_from_stats():
    requests, expected = [], []
    for (c, t) in WELCH_CASES:
        for alpha in ALPHAS:
            requests.append(
                {"test": "welch", "control": summary(c), "treatment": summary(t), "alpha": alpha}
            )
            expected.append((c, t, alpha))
    for answer, (c, t, alpha) in zip(run(requests), expected):
        (n1, m1, v1), (n2, m2, v2) = c, t
        ref = stats.ttest_ind_from_stats(
            m2, math.sqrt(v2), n2, m1, math.sqrt(v1), n1, equal_var=False
        )
        assert close(answer["statistic"], ref.statistic), (c, t, answer, ref)
        assert close(answer["p_value"], ref.pvalue), (c, t, answer, ref)
        se1, se2 = v1 / n1, v2 / n2
        df = (se1 + se2) ** 2 / (se1**2 / (n1 - 1) + se2**2 / (n2 - 1))
        assert close(answer["degrees_of_freedom"], df), (c, t, answer, df)
        half = stats.t.isf(alpha / 2, df) * math.sqrt(se1 + se2)
        assert close(answer["ci_low"], (m2 - m1) - half), (c, t, answer)
        assert close(answer["ci_high"], (m2 - m1) + half), (c, t, answer)
        assert answer["significant"] == (ref.pvalue <= alpha)


def test_welch_from_raw_samples():
    """Summaries built by Welford from raw data, against scipy.stats.ttest_ind on the data."""
    rng = np.random.default_rng(7)
    for n1, n2, shift in [(5, 8, 1.0), (30, 25, 0.2), (400, 300, 0.1)]:
        a = rng.normal(10.0, 2.0, n1)
        b = rng.normal(10.0 + shift, 3.0, n2)
        request = {
            "test": "welch",
            "control": {"n": n1, "mean": float(a.mean()), "variance": float(a.var(ddof=1))},
            "treatment": {"n": n2, "mean": float(b.mean()), "variance": float(b.var(ddof=1))},
        }
        (answer,) = run([request])
        ref = stats.ttest_ind(b, a, equal_var=False)
        assert close(answer["statistic"], ref.statistic, rel=1e-8)
        assert close(answer["p_value"], ref.pvalue, rel=1e-8)


def test_two_proportion_z_against_norm_sf():
    requests, expected = [], []
    for (c, t) in Z_CASES:
        for alpha in ALPHAS:
            requests.append(
                {
                    "test": "z",
                    "control": {"n": c[0], "successes": c[1]},
                    "treatment": {"n": t[0], "successes": t[1]},
                    "alpha": alpha,
                }
            )
            expected.append((c, t, alpha))
    for answer, (c, t, alpha) in zip(run(requests), expected):
        (n1, x1), (n2, x2) = c, t
        p1, p2 = x1 / n1, x2 / n2
        pooled = (x1 + x2) / (n1 + n2)
        z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = 2 * stats.norm.sf(abs(z))
        assert close(answer["statistic"], z), (c, t, answer, z)
        assert close(answer["p_value"], p_value), (c, t, answer, p_value)
        half = stats.norm.isf(alpha / 2) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        assert close(answer["difference"], p2 - p1)
        assert close(answer["ci_low"], (p2 - p1) - half), (c, t, answer)
        assert close(answer["ci_high"], (p2 - p1) + half), (c, t, answer)
        assert answer["significant"] == (p_value <= alpha)
        assert "degrees_of_freedom" not in answer


def test_srm_against_chisquare():
    requests = [{"test": "srm", "counts": c, "weights": w} for c, w in SRM_CASES]
    for answer, (counts, weights) in zip(run(requests), SRM_CASES):
        total = sum(counts)
        expected = [total * w / sum(weights) for w in weights]
        ref = stats.chisquare(counts, f_exp=expected)
        assert close(answer["chi_square"], ref.statistic), (counts, answer, ref)
        assert close(answer["p_value"], ref.pvalue), (counts, answer, ref)
        assert answer["degrees_of_freedom"] == len(counts) - 1
        assert answer["flagged"] == (ref.pvalue < 0.001)


def msprt(m1, v1, n1, m2, v2, n2, alpha, tau2):
    """The mSPRT of Johari et al. written out directly: (Λ, p, ci_low, ci_high)."""
    v = v1 / n1 + v2 / n2
    d = m2 - m1
    lam = math.sqrt(v / (v + tau2)) * math.exp(tau2 * d * d / (2 * v * (v + tau2)))
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return lam, min(1.0, 1.0 / lam), d - half, d + half


def test_sequential_against_the_formula():
    cases = [
        ((1000, 700), (1000, 720), 0.0025),
        ((2000, 1400), (2000, 1500), 0.0025),
        ((500, 350), (520, 400), 0.01),
        ((300, 150), (300, 150), 0.0025),
    ]
    requests = [
        {
            "test": "sequential_binary",
            "control": {"n": c[0], "successes": c[1]},
            "treatment": {"n": t[0], "successes": t[1]},
            "alpha": 0.05,
            "tau2": tau2,
        }
        for c, t, tau2 in cases
    ]
    for answer, (c, t, tau2) in zip(run(requests), cases):
        p1, p2 = c[1] / c[0], t[1] / t[0]
        lam, p, low, high = msprt(p1, p1 * (1 - p1), c[0], p2, p2 * (1 - p2), t[0], 0.05, tau2)
        assert close(answer["likelihood_ratio"], lam), (c, t, answer, lam)
        assert close(answer["p_value"], p), (c, t, answer, p)
        assert close(answer["ci_low"], low) and close(answer["ci_high"], high), answer

    # Continuous metric, and the running minimum with a previous p-value.
    request = {
        "test": "sequential_continuous",
        "control": {"n": 400, "mean": 10.0, "variance": 2.5},
        "treatment": {"n": 400, "mean": 10.3, "variance": 2.5},
        "tau2": 0.04,
    }
    fresh, kept = run([request, dict(request, previous_p=1e-4)])
    lam, p, _, _ = msprt(10.0, 2.5, 400, 10.3, 2.5, 400, 0.05, 0.04)
    assert close(fresh["likelihood_ratio"], lam) and close(fresh["p_value"], p)
    assert kept["p_value"] == 1e-4 and kept["significant"]


def test_holm_and_undefined_inputs():
    answers = run(
        [
            {"test": "holm", "p_values": [0.04, 0.01, 0.03, 0.015], "alpha": 0.05},
            {"test": "z", "control": {"n": 10, "successes": 10}, "treatment": {"n": 10, "successes": 10}},
            {"test": "welch", "control": summary((1, 1.0, 0.0)), "treatment": summary((5, 1.0, 1.0))},
            {"test": "srm", "counts": [10, 10], "weights": [1.0]},
            {"test": "nonsense"},
        ]
    )
    assert answers[0] == {"rejected": [False, True, False, True]}
    assert answers[1] is None and answers[2] is None and answers[3] is None
    assert "error" in answers[4]
