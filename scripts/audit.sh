#!/usr/bin/env bash
# Checks every crate in Cargo.lock against the RustSec advisory database with `cargo audit`
# (installed, pinned, with `cargo install --locked` when missing). Exits non-zero on a
# vulnerability; warnings (unmaintained or yanked crates) are printed and do not fail.
#
#   scripts/audit.sh            # fetches the database from github.com/rustsec/advisory-db
#   scripts/audit.sh DB_DIR     # uses a clone of that repository, without fetching
#
# The database lives on GitHub only (no package registry carries it), so the check needs either
# access to GitHub or a clone brought in by hand; CI machines without either cannot run it.
set -euo pipefail
cd "$(dirname "$0")/.."

version="0.22.2"
if ! cargo audit --version 2>/dev/null | grep -q " $version\$"; then
  cargo install --locked --quiet cargo-audit --version "$version"
fi

if [[ $# -ge 1 ]]; then
  db="$1"
  if [[ ! -d "$db/crates" ]]; then
    echo "error: \`$db\` is not a clone of the RustSec advisory database (no \`crates/\` folder)" >&2
    exit 2
  fi
  exec cargo audit --db "$db" --no-fetch --stale
fi
exec cargo audit
