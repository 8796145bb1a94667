#!/usr/bin/env bash
# CRDs and example policies against the real CRD API server of tests/k8s/testenv.
# The caller runs `eval "$(tests/k8s/testenv/up)"` first (KUBECONFIG, K8S_TESTENV_BIN).
#  1. `crdcheck` accepts every file in crds/ with no warnings;
#  2. `kubectl apply --server-side -f crds/` succeeds and the CRDs become Established;
#  3. every file in policies/examples/ is accepted by server-side apply;
#  4. `kubectl get tracingpolicies` / `tracingpoliciesnamespaced -A` list every example.
# Exits non-zero on the first failure and says what failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "tests/k8s/crds.sh: FAIL: $*" >&2; exit 1; }
[ -n "${KUBECONFIG:-}" ] || fail "KUBECONFIG is not set; run: eval \"\$(tests/k8s/testenv/up)\""
[ -n "${K8S_TESTENV_BIN:-}" ] && [ -x "$K8S_TESTENV_BIN/kubectl" ] && [ -x "$K8S_TESTENV_BIN/crdcheck" ] \
  || fail "K8S_TESTENV_BIN is not set or lacks kubectl/crdcheck; run: eval \"\$(tests/k8s/testenv/up)\""
KUBECTL="$K8S_TESTENV_BIN/kubectl"
CRDCHECK="$K8S_TESTENV_BIN/crdcheck"

shopt -s nullglob
crds=(crds/*.yaml)
examples=(policies/examples/*.yaml)
[ ${#crds[@]} -gt 0 ] || fail "crds/ has no .yaml files; run: bulwark crds --write crds/"
[ ${#examples[@]} -gt 0 ] || fail "policies/examples/ has no .yaml files"

echo "== crdcheck (no warnings allowed)"
for f in "${crds[@]}"; do
  out=$("$CRDCHECK" "$f" 2>&1) || fail "crdcheck rejected $f: $out"
  if grep -qi "warning" <<<"$out"; then fail "crdcheck warns about $f: $out"; fi
  echo "$out"
done

echo "== server-side apply of crds/"
"$KUBECTL" apply --server-side --force-conflicts -f crds/ || fail "kubectl apply --server-side -f crds/"
for f in "${crds[@]}"; do
  name=$(awk '/^metadata:/{m=1;next} m&&/^  name:/{print $2; exit}' "$f")
  "$KUBECTL" wait --for=condition=Established --timeout=60s "crd/$name" >/dev/null \
    || fail "CRD $name did not become Established"
done

echo "== crdcheck and server-side apply of policies/examples/"
declare -A want_cluster=() want_ns=()
for f in "${examples[@]}"; do
  kind=$(awk '/^kind:/{print $2; exit}' "$f")
  case "$kind" in
    TracingPolicy) crd=crds/tracingpolicies.bulwark.dev.yaml ;;
    TracingPolicyNamespaced) crd=crds/tracingpoliciesnamespaced.bulwark.dev.yaml ;;
    *) fail "$f: unexpected kind '$kind'" ;;
  esac
  out=$("$CRDCHECK" "$crd" "$f" 2>&1) || fail "crdcheck rejected $f: $out"
  if grep -qi "warning" <<<"$out"; then fail "crdcheck warns about $f: $out"; fi
  name=$(awk '/^metadata:/{m=1;next} m&&/^  name:/{print $2; exit}' "$f")
  if [ "$kind" = TracingPolicyNamespaced ]; then
    ns=$(awk '/^metadata:/{m=1;next} m&&/^  namespace:/{print $2; exit}' "$f")
    ns=${ns:-default}
    want_ns["$ns/$name"]=1
    "$KUBECTL" apply --server-side --force-conflicts -n "$ns" -f "$f" || fail "server-side apply of $f"
  else
    want_cluster["$name"]=1
    "$KUBECTL" apply --server-side --force-conflicts -f "$f" || fail "server-side apply of $f"
  fi
done

echo "== kubectl get"
"$KUBECTL" get tracingpolicies
got=$("$KUBECTL" get tracingpolicies -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
for n in "${!want_cluster[@]}"; do
  grep -qx "$n" <<<"$got" || fail "kubectl get tracingpolicies does not list $n"
done
if [ ${#want_ns[@]} -gt 0 ]; then
  "$KUBECTL" get tracingpoliciesnamespaced -A
  got=$("$KUBECTL" get tracingpoliciesnamespaced -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}')
  for n in "${!want_ns[@]}"; do
    grep -qx "$n" <<<"$got" || fail "kubectl get tracingpoliciesnamespaced -A does not list $n"
  done
fi
echo "tests/k8s/crds.sh: OK (${#crds[@]} CRDs, ${#examples[@]} examples)"
