"""Command line of the benchmark harness (run from `bench/` with the benchmark venv's Python)."""

from __future__ import annotations

import argparse
import sys

from . import docs, overhead, paths


def check_overhead(results: dict) -> list[str]:
    """Sanity checks of an overhead run: every client parsed the fixed reply into the same score,
    and uncached runs sent one request per example."""
    problems = []
    runs = results["runs"]
    scores = {round(r["score"], 6) for r in runs}
    if len(scores) != 1:
        problems.append(f"Clients disagree on the score: {sorted(scores)}")
    for run in runs:
        if run["cache"] == "off" and run["server_requests"] != run["examples"]:
            problems.append(
                f"{run['framework']} ({run.get('threads') or run.get('concurrency')}) sent "
                f"{run['server_requests']} requests for {run['examples']} examples"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("overhead", help="evaluation overhead against an instant server")
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loadgen-seconds", type=float, default=3.0)
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--smoke", action="store_true",
                   help="200 examples, one repeat, debug build, DSPy 1 and 8 threads; results are checked, not stored")

    p = sub.add_parser("optimizers", help="optimizers on the embedded model through `promptopt serve-lm`")
    p.add_argument("--tasks", default="sst2,trec,xquad_en")
    p.add_argument("--optimizers", default="bootstrap,mipro,gepa")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--train", type=int, default=50)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--frameworks", default="dspy,promptopt-http,promptopt-inprocess")
    p.add_argument("--task-model", default=None, metavar="NAME",
                   help="the embedded task model (default smollm2-135m; e.g. gemma3-270m), served to both frameworks; "
                        "runs with another task model are stored in bench/results/optimizers-task-NAME[-prompt-NAME].json")
    p.add_argument("--prompt-model", default=None, metavar="NAME",
                   help="an embedded model (e.g. qwen2.5-coder-1.5b) that proposes and reflects for both frameworks, "
                        "served to DSPy by a second serve-lm; needs --frameworks without promptopt-http; stored in "
                        "bench/results/optimizers-NAME.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs stored in bench/results/optimizers.json and run only the missing ones")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop a framework's run still going after SECONDS and record it as stopped: its wall time "
                        "is then at least SECONDS, a lower bound the report uses")

    p = sub.add_parser("tracking", help="MLflow tracking overhead of an optimization, promptopt and DSPy")
    p.add_argument("--repeats", type=int, default=20, help="runs per promptopt setting")
    p.add_argument("--dspy-repeats", type=int, default=5, help="runs per DSPy setting (0 skips DSPy)")
    p.add_argument("--dspy-modes", default="off,autolog,autolog-full,autolog-traces")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")

    p = sub.add_parser("jobs", help="job queue: overhead of empty jobs, worker scale-out, calls repeated after a kill")
    p.add_argument("--jobs", type=int, default=10_000, help="empty jobs through each queue")
    p.add_argument("--claimers", type=int, default=4)
    p.add_argument("--workers", default="1,2,4", help="worker process counts of the scale-out")
    p.add_argument("--scale-jobs", type=int, default=12, help="LM-bound jobs per scale-out run")
    p.add_argument("--delay-ms", type=int, default=50, help="the fake model's delay per call")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")

    p = sub.add_parser("serve", help="prediction serving overhead of `promptopt serve` against the instant server")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per load level")
    p.add_argument("--connections", default="1,16,64")
    p.add_argument("--rate", type=float, default=1000.0, help="the paced run's requests per second")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")

    p = sub.add_parser("soak", help="`promptopt serve` for minutes under predictions, feedback and an experiment")
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--rate", type=float, default=1000.0, help="paced predictions per second")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")

    sub.add_parser("report", help="rewrite docs/benchmarks.md from bench/results/*.json")

    args = parser.parse_args(argv)
    if args.command == "overhead":
        if args.smoke:
            results = overhead.run(examples=200, repeats=1, loadgen_seconds=1.0, dspy_threads=(1, 8),
                                   profile="debug", build_first=not args.no_build)
        else:
            results = overhead.run(examples=args.examples, repeats=args.repeats,
                                   loadgen_seconds=args.loadgen_seconds, build_first=not args.no_build)
        problems = check_overhead(results)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if args.smoke:
            docs.save(paths.OUT / "overhead-smoke.json", results)
            print(f"smoke results: {paths.OUT / 'overhead-smoke.json'}")
        elif not problems:
            docs.save(docs.OVERHEAD_JSON, results)
            print(f"wrote {', '.join(docs.write_doc())} into {paths.DOC}")
        return 1 if problems else 0
    if args.command == "optimizers":
        from . import optimizers

        results = optimizers.run(args)
        docs.save(optimizers.results_path(args.prompt_model, optimizers.task_model_of(args)), results)
        print(f"wrote {', '.join(docs.write_doc())} into {paths.DOC}")
        return 0
    if args.command == "tracking":
        from . import tracking

        results = tracking.run(args.repeats, args.dspy_repeats, dspy_modes=args.dspy_modes.split(","),
                               build_first=not args.no_build)
        problems = tracking.check(results["runs"])
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(tracking.tables(results))
        if problems:
            return 1
        tracking.save(results)
        print(f"wrote {', '.join(docs.write_doc())} into {paths.DOC}")
        return 0
    if args.command == "soak":
        from . import soak

        results = soak.run(minutes=args.minutes, rate=args.rate, build_first=not args.no_build)
        print(soak.table(results))
        problems = soak.check(results)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if args.command == "serve":
        from . import serving

        results = serving.run(seconds=args.seconds, connections=tuple(int(c) for c in args.connections.split(",")),
                              rate=args.rate, build_first=not args.no_build)
        print(serving.tables(results))
        print(f"wrote {serving.RESULTS}")
        return 0
    if args.command == "jobs":
        from . import jobs

        results = jobs.run(jobs=args.jobs, claimers=args.claimers,
                           workers=tuple(int(w) for w in args.workers.split(",")), scale_jobs=args.scale_jobs,
                           delay_ms=args.delay_ms, build_first=not args.no_build)
        print(jobs.tables(results))
        print(f"wrote {jobs.RESULTS}")
        return 0
    print(f"wrote {', '.join(docs.write_doc()) or 'nothing'} into {paths.DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
