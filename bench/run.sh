#!/usr/bin/env bash
# One command for the benchmark report: installs what the machine lacks, builds release
# binaries, runs every workload with and without bulwark (and with do-nothing programs on the
# same hooks), interleaved, and writes bench/out/report.json and bench/out/report.md.
# Root. Not part of the test suite. Extra arguments go to `bulwark-bench run`
# (e.g. --rounds 9, --quick). `bench/run.sh selectors [--rounds N] [--quick]` runs the
# selectors-per-node scenario instead (exec and connect with 10, 100 and 1,000 selectors,
# bench/out/selectors.md); `bench/run.sh syscalls [--rounds N] [--quick]` the system-call hooks'
# cost (getppid, open/close and a build-like mix; bench/out/syscalls.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh: run as root (it runs the daemon and makes network namespaces)" >&2; exit 2; }
scripts/bootstrap.sh
cargo build --release -p bulwark -p bulwark-bench
if [ "${1:-}" = selectors ] || [ "${1:-}" = syscalls ]; then
    scenario=$1
    shift
    exec target/release/bulwark-bench "$scenario" --bulwark target/release/bulwark --out bench/out "$@"
fi
exec target/release/bulwark-bench run --bulwark target/release/bulwark --out bench/out "$@"
