#!/usr/bin/env bash
# The Kubernetes side end to end against the real CRD API server, as CI runs it:
#  - starts a private k8s-testenv instance (own state dir and ports, so it never disturbs a
#    shared one) and stops it at the end;
#  - runs the controller's integration tests against that server
#    (controller/tests/controller_k8s.rs and controller_k8s_node.rs; controller_k8s_restart.rs runs its own instance
#    because it stops and wipes the server mid-run) and shows what an operator sees.
# Unit tests run with the workspace's `cargo test`; deploy/ is checked by deploy/validate.sh and
# tests/k8s/controller-deploy.sh.
# CI=true is exported: any test that lacks its dependency fails instead of skipping.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KIT=${BULWARK_K8S_TESTENV:-$ROOT/tests/k8s/testenv}
fail() { echo "tests/k8s/controller.sh: FAIL: $*" >&2; exit 1; }
[ -x "$KIT/up" ] || fail "no k8s-testenv kit at $KIT (set BULWARK_K8S_TESTENV)"

export K8S_TESTENV_RUN=${K8S_TESTENV_RUN_CONTROLLER:-/tmp/bulwark-ctl-k8s}
export K8S_TESTENV_PORT=${K8S_TESTENV_PORT_CONTROLLER:-16643}
export K8S_TESTENV_ETCD_PORT=${K8S_TESTENV_ETCD_PORT_CONTROLLER:-23940}
export CI=true BULWARK_K8S_TESTENV=$KIT
"$KIT/down" >/dev/null 2>&1 || true
eval "$("$KIT/up")" || fail "k8s-testenv/up failed"
trap '"$KIT/down" >/dev/null 2>&1 || true' EXIT

cd "$ROOT"
echo "== controller integration tests (KUBECONFIG=$KUBECONFIG)"
log=$(mktemp)
set +e
cargo test -p bulwark-controller --test controller_k8s --test controller_k8s_node --test controller_k8s_restart 2>&1 | tee "$log" | grep -E "^test |test result|panicked|SKIPPED|FAILED|Running"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || { tail -80 "$log"; fail "cargo test -p bulwark-controller failed"; }
rm -f "$log"

echo "== what an operator sees"
"$K8S_TESTENV_BIN/kubectl" get tracingpolicies
"$K8S_TESTENV_BIN/kubectl" get tracingpoliciesnamespaced -A
"$K8S_TESTENV_BIN/kubectl" get policyviolations -A

echo "tests/k8s/controller.sh: OK"
