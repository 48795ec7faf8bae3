"""The promptopt benchmark harness.

`python -m harness overhead` measures evaluation overhead against an instant server,
`python -m harness optimizers` compares optimizers on a real model served by `promptopt serve-lm`,
and `python -m harness report` rewrites `docs/benchmarks.md` from the stored results.
Run from the `bench/` directory (the Makefile at the repository root does this).
"""
