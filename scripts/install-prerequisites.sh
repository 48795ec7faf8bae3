#!/usr/bin/env bash
# Installs the Debian packages promptopt's build needs when they are missing: cmake, clang and
# libclang-dev (llama.cpp is compiled by the `llama-cpp-sys-2` crate), and python3-venv for the
# test tools, redis-server and redis-tools for the job queue's tests, postgresql for the server's
# database tests. Uses sudo when not run as root.
set -euo pipefail

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v clang >/dev/null || missing+=(clang)
ldconfig -p | grep -q 'libclang[-.0-9]*\.so' || missing+=(libclang-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
