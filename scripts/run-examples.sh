#!/usr/bin/env bash
# Run the bulwark daemon standalone (no cluster) on the example policies, events to stdout.
# Needs root. Ctrl-C stops it cleanly. Extra arguments go to `bulwark run`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || { echo "scripts/run-examples.sh: run as root (it loads eBPF programs)" >&2; exit 2; }
scripts/bootstrap.sh
cargo build --release -p bulwark
exec target/release/bulwark run --policy-dir policies/examples "$@"
