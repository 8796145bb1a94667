#!/usr/bin/env bash
# CRDs and example policies against the real CRD API server of tests/k8s/testenv.
# The caller runs `eval "$(tests/k8s/testenv/up)"` first (KUBECONFIG, K8S_TESTENV_BIN).
#  1. `crdcheck` accepts every file in crds/ with no warnings;
#  2. `kubectl apply --server-side -f crds/` succeeds and the CRDs become Established;
#  3. every file in policies/examples/ is accepted by server-side apply;
#  4. `kubectl get tracingpolicies` / `tracingpoliciesnamespaced -A` list every example;
#  5. every file of tests/lint-cases/ gets from `kubectl apply --dry-run=server` what its
#     `# kubectl apply: accepts` or `# kubectl apply: refuses: TEXT` line says (TEXT is part of
#     kubectl's message), and `bulwark lint --strict` flags it: the server refuses what it can
#     check, and what only bulwark can judge is accepted by the server and flagged by the lint.
#     The bulwark binary is $BULWARK_BIN, else target/debug/bulwark.
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
echo "== lint cases: kubectl apply --dry-run=server and bulwark lint agree"
BULWARK=${BULWARK_BIN:-target/debug/bulwark}
[ -x "$BULWARK" ] || fail "$BULWARK not found; run: cargo build -p bulwark (or set BULWARK_BIN)"
cases=(tests/lint-cases/*.yaml)
[ ${#cases[@]} -gt 0 ] || fail "tests/lint-cases/ has no .yaml files"
refused=0
for f in "${cases[@]}"; do
  want=$(sed -n 's/^# kubectl apply: //p' "$f")
  [ "$(grep -c '^# kubectl apply: ' "$f")" -eq 1 ] \
    || fail "$f needs exactly one '# kubectl apply: accepts' or '# kubectl apply: refuses: TEXT' line"
  lint_rc=0; "$BULWARK" lint --strict "$f" >/dev/null || lint_rc=$?
  [ "$lint_rc" -eq 1 ] || fail "$f: bulwark lint --strict exited $lint_rc, want 1 (every case is a mistake)"
  rc=0; out=$("$KUBECTL" apply --dry-run=server -f "$f" 2>&1) || rc=$?
  case "$want" in
    accepts)
      [ "$rc" -eq 0 ] || fail "$f: the API server should accept it (only bulwark can judge this), got: $out" ;;
    "refuses: "*)
      text=${want#refuses: }
      [ "$rc" -ne 0 ] || fail "$f: kubectl apply accepted it; want a refusal containing: $text"
      grep -qF -- "$text" <<<"$out" || fail "$f: kubectl refused it, but not with '$text': $out"
      # A code in the server's message (a CEL rule's) is the code the lint gives the case.
      want_code=$(sed -n 's/.*# expect: \(BW[0-9]*\).*/\1/p' "$f")
      for got in $(grep -o 'BW[0-9][0-9][0-9]:' <<<"$out" | tr -d : | sort -u); do
        [ "$got" = "$want_code" ] || fail "$f: the API server says $got, the lint $want_code: $out"
      done
      refused=$((refused + 1)) ;;
    *) fail "$f: unknown expectation '# kubectl apply: $want'" ;;
  esac
done
echo "${#cases[@]} lint cases: $refused refused by kubectl apply, $((${#cases[@]} - refused)) accepted and flagged by bulwark lint only"

echo "tests/k8s/crds.sh: OK (${#crds[@]} CRDs, ${#examples[@]} examples, ${#cases[@]} lint cases)"
