#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` from the sources vendored by the `llama-cpp-sys-2` crate, with the
# same CPU flags the engine's build uses (x86-64-v3: AVX2, FMA, F16C, BMI2; see .cargo/config.toml),
# so `engine_bench` compares like with like. `NATIVE=1` builds for this CPU instead (-march=native).
#
#   scripts/build-llama-bench.sh        # -> target-engine/llama-bench/bin/llama-bench
#
# Needs cmake and a C++ compiler; run `cargo fetch` first so the sources are in ~/.cargo/registry.
# The crates.io package leaves out llama.cpp's tools/ sources: set LLAMA_CPP_SRC to a llama.cpp checkout
# of the same version as the one llama-cpp-sys-2 vendors (its tools/ folder must hold llama-bench) to
# build from there. `engine_bench` finds the result at the path below, or wherever `LLAMA_BENCH` names.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo_root/target-engine/llama-bench"
version="$(sed -n '/^name = "llama-cpp-sys-2"$/{n;s/^version = "\(.*\)"$/\1/p;}' "$repo_root/Cargo.lock")"
if [[ -z "$version" ]]; then
    echo "error: \`llama-cpp-sys-2\` is not in Cargo.lock" >&2
    exit 1
fi
src="${LLAMA_CPP_SRC:-}"
for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$version"/llama.cpp; do
    [[ -z "${LLAMA_CPP_SRC:-}" && -d "$dir" ]] && src="$dir"
done
if [[ -z "$src" ]]; then
    echo "error: sources of llama-cpp-sys-2 $version not found; run \`cargo fetch\`" >&2
    exit 1
fi

if [[ ! -f "$src/tools/llama-bench/llama-bench.cpp" ]]; then
    # The crates.io package of llama-cpp-sys-2 ships only the library sources; the tools are left out.
    echo "error: \`$src\` has no tools/llama-bench sources; point LLAMA_CPP_SRC at a llama.cpp checkout of the same version" >&2
    exit 1
fi

if [[ "${NATIVE:-0}" == 1 ]]; then
    cpu_flags=(-DGGML_NATIVE=ON)
else
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi

# A build folder configured from another source tree cannot be reused.
cache="$out/build/CMakeCache.txt"
if [[ -f "$cache" ]] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$cache"; then
    rm -rf "$out/build"
fi

cmake -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DGGML_OPENMP=ON "${cpu_flags[@]}" > "$out.cmake.log"
cmake --build "$out/build" --target llama-bench -j "$(nproc)" > "$out.build.log"
mkdir -p "$out/bin"
cp "$out/build/bin/llama-bench" "$out/bin/llama-bench"
echo "built $out/bin/llama-bench (llama.cpp from llama-cpp-sys-2 $version)"
