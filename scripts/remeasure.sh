#!/usr/bin/env bash
# The re-measurement of docs/results.md: every shipped task × BootstrapFewShot, MIPROv2 and GEPA × seeds,
# with the chosen prompt model proposing and reflecting.
#
#   scripts/remeasure.sh OUT [PATTERN]
#   scripts/results-table.py --seeds OUT/*        # mean ± spread per request, and every winner's instruction
#
# Each run goes to OUT/<request>-s<seed>/ (`result.json`, `trajectory.svg`, `run.log`). A run whose
# `result.json` exists is skipped, so the matrix can be run in slices (PATTERN, a `grep -E` filter on
# the request names, e.g. `^sst2-`) and resumed after an interruption; a run that fails leaves no
# `result.json` and is tried again next time. The script stops at the first failing run.
#
# Settings (environment):
#   SEEDS          the seeds (default `0 1 2`)
#   PROMPT_MODEL   the MIPROv2/GEPA prompt model (default `local/qwen2.5-coder-1.5b`, the default for
#                  local task models); BootstrapFewShot runs need none and get none
#   CONCURRENCY    examples evaluated at once (default 8)
#   PROMPTOPT_BIN  the binary (default `target/release/promptopt`; build it with
#                  `cargo build --release -p promptopt-cli`)
# The models come from `scripts/fetch-model.sh gemma3-270m qwen2.5-coder-1.5b`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || $# -gt 2 || "$1" == -* ]]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
out="$1"
pattern="${2:-.}"
seeds="${SEEDS:-0 1 2}"
prompt_model="${PROMPT_MODEL:-local/qwen2.5-coder-1.5b}"
concurrency="${CONCURRENCY:-8}"
bin="${PROMPTOPT_BIN:-target/release/promptopt}"
if [[ ! -x "$bin" ]]; then
    echo "error: \`$bin\` is not an executable; build it with \`cargo build --release -p promptopt-cli\` or set PROMPTOPT_BIN" >&2
    exit 2
fi

# The matrix: six tasks × three algorithms. The two-stage QA program keeps SmolLM2-135M as its task
# model (as in its table); the others run Gemma 3 270M. The label tasks also run GEPA over
# BootstrapFewShot's demos (`*-gepa-demos`, the `few_shot_examples` target).
requests=(
    sst2-bootstrap sst2-mipro sst2-gepa sst2-gepa-demos
    agnews-bootstrap agnews-mipro agnews-gepa agnews-gepa-demos
    trec-bootstrap trec-mipro trec-gepa trec-gepa-demos
    xquad-bootstrap xquad-mipro xquad-gepa
    agnews-headline-bootstrap agnews-headline-mipro agnews-headline-gepa
    qa-two-stage-bootstrap qa-two-stage-mipro qa-two-stage-gepa
)

selected=0
for name in "${requests[@]}"; do
    grep -Eq -- "$pattern" <<<"$name" || continue
    selected=$((selected + 1))
    file="examples/results/$name.yaml"
    if [[ ! -f "$file" ]]; then
        echo "error: the matrix names \`$file\`, which does not exist" >&2
        exit 1
    fi
    flags=()
    case "$name" in
        *-mipro | *-gepa | *-gepa-demos) flags+=(--prompt-model "$prompt_model") ;;
    esac
    for seed in $seeds; do
        dir="$out/$name-s$seed"
        if [[ -f "$dir/result.json" ]]; then
            echo "remeasure: $name seed $seed: done before, skipped"
            continue
        fi
        mkdir -p "$dir"
        echo "remeasure: $name seed $seed: started $(date -u +%H:%M:%S)"
        if ! OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" "$bin" optimize "$file" --seed "$seed" \
            "${flags[@]}" --name "$name-s$seed" --output "$dir" --concurrency "$concurrency" \
            --no-cache >"$dir/summary.txt" 2>"$dir/run.log"; then
            rm -f "$dir/result.json"
            echo "error: $name seed $seed failed; its log is \`$dir/run.log\`" >&2
            exit 1
        fi
        echo "remeasure: $name seed $seed: finished $(date -u +%H:%M:%S)"
    done
done
if [[ $selected -eq 0 ]]; then
    echo "error: no request of the matrix matches \`$pattern\`" >&2
    exit 2
fi
