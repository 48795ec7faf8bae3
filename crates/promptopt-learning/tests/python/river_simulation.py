"""The protocol of `examples/drift_simulation.rs`, run with river's detectors.

Every detector runs with its default parameters (Page-Hinkley in mode "up") on the same streams
of 0/1 errors, drawn from a seeded NumPy generator (the seed is printed):

- 500 streams of 2,000 outcomes with a constant error rate of 0.2 (no drift);
- 500 streams of 2,000 outcomes whose error rate jumps from 0.2 to 0.5 at outcome 1,000.

It prints the same Markdown table as the Rust example. The random streams differ from the Rust
example's (another generator), so the two tables agree statistically, not exactly.

Run from the repository root (about a minute):

    .venv-ci/bin/python crates/promptopt-learning/tests/python/river_simulation.py
"""

import json
import statistics

import numpy as np
from river import drift

SEED = 20240601
RUNS = 500
LENGTH = 2000
CHANGE = 1000
RATE_BEFORE = 0.2
RATE_AFTER = 0.5

DETECTORS = [
    ("DDM", lambda: drift.binary.DDM()),
    ("Page-Hinkley (up)", lambda: drift.PageHinkley(mode="up")),
    ("ADWIN", lambda: drift.ADWIN()),
]


def detections(make, stream):
    detector = make()
    found = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


def stream(rng, before, after):
    rates = np.where(np.arange(LENGTH) < CHANGE, before, after)
    return (rng.random(LENGTH) < rates).astype(int).tolist()


def rate(count, total):
    p = count / total
    se = (p * (1 - p) / total) ** 0.5
    return f"{100 * p:.1f} % ± {100 * se:.1f}"


def main():
    rng = np.random.default_rng(SEED)
    tallies = [
        {"stable_alarmed": 0, "stable_alarms": 0, "detected": 0, "delays": [], "early": 0}
        for _ in DETECTORS
    ]
    for _ in range(RUNS):
        stable = stream(rng, RATE_BEFORE, RATE_BEFORE)
        drifting = stream(rng, RATE_BEFORE, RATE_AFTER)
        for (_, make), tally in zip(DETECTORS, tallies):
            found = detections(make, stable)
            tally["stable_alarms"] += len(found)
            tally["stable_alarmed"] += bool(found)
            found = detections(make, drifting)
            tally["early"] += any(i < CHANGE for i in found)
            after = [i for i in found if i >= CHANGE]
            if after:
                tally["detected"] += 1
                tally["delays"].append(after[0] - CHANGE)

    print(
        f"Seed {SEED} (NumPy); {RUNS} streams of {LENGTH} outcomes per scenario; error rate "
        f"{RATE_BEFORE} (no drift), or {RATE_BEFORE} then {RATE_AFTER} from outcome {CHANGE}.\n"
    )
    print(
        "| Detector | False-alarm rate (no drift) | False alarms / 1000 outcomes | "
        "Detection rate | Median delay | Mean delay | False alarm before the change |"
    )
    print("|---|---|---|---|---|---|---|")
    figures = []
    for (name, _), tally in zip(DETECTORS, tallies):
        per_thousand = tally["stable_alarms"] * 1000 / (RUNS * LENGTH)
        delays = tally["delays"]
        median = float(statistics.median(delays)) if delays else None
        mean = statistics.fmean(delays) if delays else None
        show = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        print(
            f"| {name} | {rate(tally['stable_alarmed'], RUNS)} | {per_thousand:.3f} | "
            f"{rate(tally['detected'], RUNS)} | {show(median)} | {show(mean)} | "
            f"{rate(tally['early'], RUNS)} |"
        )
        figures.append(
            {
                "detector": name,
                "false_alarm_rate": tally["stable_alarmed"] / RUNS,
                "false_alarms_per_1000": per_thousand,
                "detection_rate": tally["detected"] / RUNS,
                "median_delay": median,
                "mean_delay": mean,
                "false_alarm_before_change_rate": tally["early"] / RUNS,
            }
        )
    print()
    print(json.dumps({"seed": SEED, "runs": RUNS, "figures": figures}, ensure_ascii=False))


if __name__ == "__main__":
    main()
