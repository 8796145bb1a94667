#!/usr/bin/env bash
# deploy/validate.sh accepts deploy/ as checked in, and rejects each kind of mistake it exists to
# catch: an unknown field (strict schema), a capability beyond the documented set, an extra host
# mount, a daemon that does not pin its programs, a stale CRD copy. Works on copies in a temp
# dir; never touches the tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "tests/k8s/controller-deploy.sh: FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

fresh() { rm -rf "$work/t"; mkdir -p "$work/t"; cp -r "$ROOT/deploy" "$ROOT/crds" "$work/t/"; }

fresh
"$work/t/deploy/validate.sh" >"$work/log" 2>&1 || { cat "$work/log"; fail "pristine deploy/ rejected"; }
echo "ok: pristine deploy/ passes"

expect_fail() { # name, expected message
  if "$work/t/deploy/validate.sh" >"$work/log" 2>&1; then cat "$work/log"; fail "$1: accepted"; fi
  grep -q "$2" "$work/log" || { cat "$work/log"; fail "$1: failed without '$2'"; }
  echo "ok: $1 is rejected"
}

fresh; sed -i 's/^      hostPID: true/      hostPID: true\n      hostPIDs: true/' "$work/t/deploy/daemonset.yaml"
expect_fail "unknown field hostPIDs" "kubernetes-validate rejected"

fresh; sed -i 's/^            - SYS_RESOURCE/            - SYS_RESOURCE\n            - SYS_PTRACE/' "$work/t/deploy/daemonset.yaml"
expect_fail "extra capability SYS_PTRACE" "capabilities"

fresh; sed -i 's|^      - name: tmp$|      - name: root\n        hostPath:\n          path: /\n      - name: tmp|' "$work/t/deploy/daemonset.yaml"
expect_fail "extra hostPath /" "hostPaths"

fresh; sed -i '/- --pin-dir=/d' "$work/t/deploy/daemonset.yaml"
expect_fail "a DaemonSet that does not pin" "must pin"

fresh; echo "# edited" >> "$work/t/deploy/crds/policyviolations.bulwark.dev.yaml"
expect_fail "stale CRD copy" "is stale"
echo "tests/k8s/controller-deploy.sh: OK"
