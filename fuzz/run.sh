#!/usr/bin/env bash
# Run the lint fuzz target for SECONDS (default 60), seeded with the example policies and the
# lint cases. Installs cargo-fuzz (from crates.io) if missing; needs the nightly toolchain
# (scripts/bootstrap.sh installs it). Exits non-zero if the fuzzer finds a crash; crashing
# inputs are kept in fuzz/artifacts/lint_source/.
set -euo pipefail
secs=${1:-60}
case "$secs" in ''|*[!0-9]*) echo "usage: fuzz/run.sh SECONDS" >&2; exit 2 ;; esac
cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
corpus=corpus/lint_source
mkdir -p "$corpus"
cp ../policies/examples/*.yaml ../tests/lint-cases/*.yaml "$corpus"/ 2>/dev/null || true
exec cargo +nightly fuzz run lint_source "$corpus" -- -max_total_time="$secs" -max_len=8192 -timeout=10
