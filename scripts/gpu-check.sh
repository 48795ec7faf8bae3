#!/usr/bin/env bash
# Checks the CUDA build of promptopt on an NVIDIA GPU and measures it against the CPU, in one go, and
# writes a Markdown report (default docs/benchmarks/gpu-report.md).
#
#   scripts/gpu-check.sh
#   GPU_CHECK_DEVICE=1 GPU_CHECK_REPORT=/tmp/gpu.md scripts/gpu-check.sh
#
# Needs: an NVIDIA GPU and driver (`nvidia-smi`), the CUDA toolkit (`nvcc`), a Rust toolchain, cmake
# and clang (scripts/install-prerequisites.sh), python3, and either the models in `models/` or network
# access for scripts/fetch-model.sh (which also needs pip). Not on such a machine it exits 2 at once.
#
# Steps, each with its own time limit (the whole is meant to take under 8 minutes on one
# data-centre GPU, the build included):
#   1. build, release: `cargo build --release -p promptopt-cli --features cuda`, the engine's tests and
#      its benchmark, for this GPU's architecture only (CMAKE_CUDA_ARCHITECTURES=native);
#   2. models: SmolLM2-135M-Instruct and Gemma 3 270M (scripts/fetch-model.sh, a no-op when present).
#      SmolLM2-135M-Instruct is also the largest instruction-tuned model the project ships;
#      GPU_CHECK_EXTRA_MODEL=local//path/to/model.gguf adds a larger one to the benchmark;
#   3. the engine's test suite on the GPU (PROMPTOPT_GPU_DEVICES=$GPU_CHECK_DEVICE);
#   4. the engine benchmark per model: single stream (prompt and generation tokens/s) and 32-token
#      rewrites at 1/8/32/128 concurrent requests (generation tokens/s, batch occupancy) on the GPU;
#      the same on 2 CPU cores (levels 1/8/32) with the GPU hidden (CUDA_VISIBLE_DEVICES=);
#   5. examples/sst2-bootstrap.yaml optimized on the GPU and on the 2 CPU cores (wall time, scores).
# The CPU baselines run on 2 cores each (the benchmark on cores 0-1, the optimization on cores 2-3,
# pinned with taskset) while the GPU steps run on the other cores, so that they overlap in time
# without sharing cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

DEVICE="${GPU_CHECK_DEVICE:-0}"
REPORT="${GPU_CHECK_REPORT:-docs/benchmarks/gpu-report.md}"
EXTRA_MODEL="${GPU_CHECK_EXTRA_MODEL:-}"
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/promptopt"
BENCH="$TARGET/release/examples/engine_bench"
STARTED=$SECONDS

fail_setup() {
    echo "gpu-check: $1" >&2
    exit 2
}

command -v nvidia-smi >/dev/null 2>&1 ||
    fail_setup "not a CUDA machine: \`nvidia-smi\` is not installed (this script needs an NVIDIA GPU and driver)"
nvidia-smi -L >/dev/null 2>&1 ||
    fail_setup "not a CUDA machine: \`nvidia-smi -L\` found no usable GPU"
command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]] ||
    fail_setup "the CUDA toolkit is missing: \`nvcc\` is not on the PATH nor in /usr/local/cuda/bin"
command -v cargo >/dev/null 2>&1 || fail_setup "no Rust toolchain: \`cargo\` is not on the PATH"
command -v python3 >/dev/null 2>&1 || fail_setup "python3 is needed to write the report"
command -v taskset >/dev/null 2>&1 || fail_setup "taskset (util-linux) is needed to pin the CPU baseline to 2 cores"
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="$PATH:/usr/local/cuda/bin"

CORES="$(nproc)"
if ((CORES < 6)); then
    fail_setup "this check needs at least 6 CPU cores (2 + 2 for the CPU baselines, the rest for the GPU runs); found $CORES"
fi
CPU_BENCH_SET="0,1"
CPU_OPT_SET="2,3"
GPU_SET="4-$((CORES - 1))"

WORK="$(mktemp -d)"
CPU_PIDS=()
cleanup() {
    local pid
    for pid in "${CPU_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/home-gpu" "$WORK/home-cpu" "$WORK/out"
STEPS="$WORK/steps.tsv"
: >"$STEPS"

# step NAME LIMIT_SECONDS FUNCTION: runs the exported shell FUNCTION with a time limit (the whole
# process group), logs it to $WORK/out/NAME.log, records the outcome and seconds, and stops the
# script when it fails.
step() {
    local name="$1" limit="$2" fn="$3" begun=$SECONDS rc=0
    echo "== $name (limit ${limit} s)"
    timeout --kill-after=10 "$limit" bash -c "set -euo pipefail; $fn" >"$WORK/out/$name.log" 2>&1 || rc=$?
    local took=$((SECONDS - begun))
    if ((rc == 0)); then
        printf '%s\tok\t%s\n' "$name" "$took" >>"$STEPS"
        echo "   ok in ${took} s"
        return 0
    fi
    local why="exit $rc"
    ((rc == 124 || rc == 137)) && why="over its ${limit} s limit"
    printf '%s\tfailed (%s)\t%s\n' "$name" "$why" "$took" >>"$STEPS"
    echo "   FAILED ($why) after ${took} s; the end of its log:" >&2
    tail -n 40 "$WORK/out/$name.log" >&2
    exit 1
}

gpu_name="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader -i "$DEVICE" 2>/dev/null || echo unknown)"
echo "gpu-check on GPU $DEVICE: $gpu_name; $CORES CPU cores"

# 1. The build: release, this GPU's architecture only, every core.
export CMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-native}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$CORES}"
export OMP_WAIT_POLICY=passive
build() {
    cargo build --release -p promptopt-cli --features cuda
    cargo build --release -p promptopt-engine --features cuda --example engine_bench
    cargo test --release -p promptopt-engine --features cuda --lib --tests --no-run
}
fetch_models() {
    scripts/fetch-model.sh gemma3-270m
}
# What the functions below read (they run in child shells).
MODELS_LIST="local/smollm2-135m local/gemma3-270m${EXTRA_MODEL:+ $EXTRA_MODEL}"
SST2_DIR="$ROOT/bench/data/sst2"
export DEVICE CPU_BENCH_SET CPU_OPT_SET GPU_SET BIN BENCH WORK MODELS_LIST SST2_DIR
export -f build fetch_models
step build 330 build

# 2. The models.
step models 120 fetch_models

# The CPU baselines in the background, 2 cores each, the GPU hidden from them.
cpu_bench() {
    local model i=0 models
    read -r -a models <<<"$MODELS_LIST"
    for model in "${models[@]}"; do
        CUDA_VISIBLE_DEVICES="" taskset -c "$CPU_BENCH_SET" "$BENCH" --model "$model" --threads 2 \
            --sections single,throughput --levels 1,8,32 --rounds 1 \
            --json "$WORK/out/bench-cpu-$i.json" >"$WORK/out/bench-cpu-$i.log" 2>&1
        i=$((i + 1))
    done
}
cpu_opt() {
    local begun=$SECONDS
    CUDA_VISIBLE_DEVICES="" PROMPTOPT_HOME="$WORK/home-cpu" PROMPTOPT_THREADS=2 DISABLE_MLFLOW=1 \
        taskset -c "$CPU_OPT_SET" "$BIN" optimize examples/sst2-bootstrap.yaml --gpu none --no-cache \
        --output "$WORK/out/opt-cpu" >"$WORK/out/opt-cpu.log" 2>&1
    echo $((SECONDS - begun)) >"$WORK/out/opt-cpu.seconds"
}
export -f cpu_bench cpu_opt
cpu_started=$SECONDS
timeout --kill-after=10 300 bash -c "set -euo pipefail; cpu_bench" &
CPU_PIDS+=("$!")
timeout --kill-after=10 300 bash -c "set -euo pipefail; cpu_opt" &
CPU_PIDS+=("$!")

# 3. The engine's tests on the GPU.
engine_tests() {
    PROMPTOPT_GPU_DEVICES="$DEVICE" taskset -c "$GPU_SET" \
        cargo test --release -p promptopt-engine --features cuda --lib --tests
}
export -f engine_tests
step engine-tests 120 engine_tests

# 4. The engine benchmark on the GPU.
gpu_bench() {
    local model i=0 models
    read -r -a models <<<"$MODELS_LIST"
    for model in "${models[@]}"; do
        taskset -c "$GPU_SET" "$BENCH" --model "$model" --gpu "$DEVICE" \
            --sections single,throughput --levels 1,8,32,128 --rounds 2 \
            --json "$WORK/out/bench-gpu-$i.json" >"$WORK/out/bench-gpu-$i.txt" 2>&1 || return 1
        i=$((i + 1))
    done
}

# 5. The optimization on the GPU (its concurrency follows the GPU's batch size).
gpu_opt() {
    local begun=$SECONDS
    PROMPTOPT_HOME="$WORK/home-gpu" DISABLE_MLFLOW=1 taskset -c "$GPU_SET" "$BIN" optimize \
        examples/sst2-bootstrap.yaml --gpu "$DEVICE" --no-cache --output "$WORK/out/opt-gpu"
    echo $((SECONDS - begun)) >"$WORK/out/opt-gpu.seconds"
}
export -f gpu_bench gpu_opt
step bench-gpu 150 gpu_bench
step optimize-gpu 120 gpu_opt

echo "== waiting for the CPU baselines (limit 300 s from their start)"
cpu_rc=0
for pid in "${CPU_PIDS[@]}"; do
    wait "$pid" || cpu_rc=$?
done
CPU_PIDS=()
if ((cpu_rc != 0)); then
    printf 'cpu-baselines\tfailed (exit %s)\t%s\n' "$cpu_rc" "$((SECONDS - cpu_started))" >>"$STEPS"
    echo "   the CPU baselines FAILED (exit $cpu_rc; 124: over their limit):" >&2
    tail -n 20 "$WORK"/out/bench-cpu-*.log "$WORK/out/opt-cpu.log" 2>/dev/null >&2 || true
    exit 1
fi
printf 'cpu-baselines (benchmark and optimization, each on 2 cores, overlapping the GPU steps)\tok\t%s\n' \
    "$((SECONDS - cpu_started))" >>"$STEPS"

# 6. The report.
mkdir -p "$(dirname "$REPORT")"
read -r -a MODELS <<<"$MODELS_LIST"
python3 - "$WORK" "$REPORT" "$gpu_name" "$((SECONDS - STARTED))" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "${MODELS[@]}" <<'PY'
import glob, json, os, re, sys, datetime

work, report, gpu, total, commit, *models = sys.argv[1:]
total = int(total)
out = os.path.join(work, "out")

def load(path):
    with open(path) as f:
        return json.load(f)

def level(bench, n):
    for row in bench.get("throughput", {}).get("levels", []):
        if row["concurrency"] == n:
            return row
    return None

lines = [
    "# GPU check",
    "",
    f"`scripts/gpu-check.sh` on {datetime.date.today().isoformat()}, commit {commit}: GPU {gpu}; "
    f"CPU baselines on 2 cores of the same machine each (`taskset`, 2 threads, GPU hidden). "
    f"Total {total} s, build included (goal: under 480 s).",
    "",
    "## Steps",
    "",
    "| step | outcome | seconds |",
    "|---|---|---:|",
]
with open(os.path.join(work, "steps.tsv")) as f:
    for row in f:
        name, outcome, seconds = row.rstrip("\n").split("\t")
        lines.append(f"| {name} | {outcome} | {seconds} |")

tests = open(os.path.join(out, "engine-tests.log")).read()
passed = sum(int(n) for n in re.findall(r"test result: ok\. (\d+) passed", tests))
lines += ["", f"Engine tests on the GPU: {passed} passed, none failed.", ""]

lines += ["## Engine: tokens per second", ""]
for i, model in enumerate(models):
    gpu_b = load(os.path.join(out, f"bench-gpu-{i}.json"))
    cpu_b = load(os.path.join(out, f"bench-cpu-{i}.json"))
    lines += [f"### `{model}`", ""]
    lines += [
        "| single stream | CPU (2 cores) | GPU | GPU / CPU |",
        "|---|---:|---:|---:|",
    ]
    for key, label in [("prompt_tok_s", "prompt tok/s"), ("gen_tok_s", "generation tok/s")]:
        c, g = cpu_b["single"][key], gpu_b["single"][key]
        lines.append(f"| {label} | {c:.1f} | {g:.1f} | {g / c:.1f}x |")
    lines += [
        "",
        f"| 32-token rewrites, concurrent | CPU gen tok/s | GPU gen tok/s | GPU / CPU | GPU requests per decode (mean / slots {gpu_b['throughput']['slots']}) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in (1, 8, 32, 128):
        g = level(gpu_b, n)
        c = level(cpu_b, n)
        if g is None:
            continue
        cpu_rate = f"{c['gen_tok_s']:.1f}" if c else "not run"
        ratio = f"{g['gen_tok_s'] / c['gen_tok_s']:.1f}x" if c else "-"
        lines.append(
            f"| {n} | {cpu_rate} | {g['gen_tok_s']:.1f} | {ratio} | {g['mean_sequences_per_decode']:.1f} |"
        )
    lines.append("")

def result(side):
    r = load(os.path.join(out, f"opt-{side}", "result.json"))
    seconds = int(open(os.path.join(out, f"opt-{side}.seconds")).read())
    return r, seconds

rc, sc = result("cpu")
rg, sg = result("gpu")
lines += [
    "## One optimization: `examples/sst2-bootstrap.yaml` (Gemma 3 270M, BootstrapFewShot)",
    "",
    "| | wall s (command) | pipeline s | baseline score | optimized score | LM calls |",
    "|---|---:|---:|---:|---:|---:|",
]
for name, r, s in (("CPU (2 cores)", rc, sc), ("GPU", rg, sg)):
    calls = (r.get("analytics") or {}).get("lm_calls", "-")
    lines.append(
        f"| {name} | {s} | {r['duration_seconds']:.1f} | {r['baseline_metrics']['score']:.4f} | "
        f"{r['optimized_metrics']['score']:.4f} | {calls} |"
    )
same = abs(rc["optimized_metrics"]["score"] - rg["optimized_metrics"]["score"]) < 1e-9
lines += [
    "",
    f"Wall-time ratio CPU / GPU: **{sc / max(sg, 1):.1f}x** (goal ≥ 5x). Optimized scores "
    + ("identical." if same else
       "differ: decoding many sequences in one batch changes float rounding, which flips near ties "
       "(see the engine's Determinism notes)."),
    "",
]
g32 = level(load(os.path.join(out, "bench-gpu-0.json")), 32)
c32 = level(load(os.path.join(out, "bench-cpu-0.json")), 32)
if g32 and c32:
    lines.append(
        f"SmolLM2-135M generation at 32 concurrent: **{g32['gen_tok_s'] / c32['gen_tok_s']:.1f}x** "
        "the 2-core CPU (goal ≥ 20x)."
    )
with open(report, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {report}")
PY
echo "gpu-check: done in $((SECONDS - STARTED)) s; report: $REPORT"
if ((SECONDS - STARTED > 480)); then
    echo "gpu-check: warning: over the 8-minute goal" >&2
fi
