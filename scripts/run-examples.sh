#!/usr/bin/env bash
# Run the bulwark daemon standalone (no cluster) on the example policies, events to stdout.
# Needs root. Extra arguments go to `bulwark run`. Ctrl-C (or SIGTERM to this script) stops the
# daemon and then unloads its programs, so the host is left clean: `bulwark run` alone keeps
# enforcing after it stops (its programs are pinned) until `bulwark unload`.
# BULWARK_BIN=path/to/bulwark uses that binary instead of building a release one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || { echo "scripts/run-examples.sh: run as root (it loads eBPF programs)" >&2; exit 2; }
scripts/bootstrap.sh
BIN=${BULWARK_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release -p bulwark
  BIN=target/release/bulwark
fi
# A pin directory of its own: unloading it never touches another daemon's pins.
PIN_DIR=/sys/fs/bpf/bulwark-examples

"$BIN" run --policy-dir policies/examples --pin-dir "$PIN_DIR" "$@" &
daemon=$!
# Ctrl-C reaches the daemon too (same process group); a SIGTERM to this script is passed on.
trap 'kill -TERM "$daemon" 2>/dev/null || true' INT TERM
set +e
while :; do
  wait "$daemon"; rc=$?
  kill -0 "$daemon" 2>/dev/null || break
done
set -e
trap - INT TERM
echo "scripts/run-examples.sh: the daemon stopped; unloading its programs" >&2
"$BIN" unload --pin-dir "$PIN_DIR" >&2
exit "$rc"
