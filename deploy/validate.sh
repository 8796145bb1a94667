#!/usr/bin/env bash
# Offline validation of deploy/ (no cluster needed):
#  1. deploy/crds/ are identical to crds/ (kustomize cannot reference files outside deploy/);
#  2. `kubectl kustomize deploy/` renders;
#  3. every built-in kind in the rendered output validates against the Kubernetes OpenAPI schema
#     with PyPI `kubernetes-validate` (strict: unknown fields fail), installed into a venv on
#     first use ($BULWARK_VENV, default ~/.cache/bulwark/validate-venv);
#  4. the CRDs pass `crdcheck` (upstream apiextensions validation) when the k8s-testenv kit is here;
#  5. the DaemonSet asks for exactly the capabilities and host mounts documented in it, and pins
#     its programs (--pin-dir on the host's bpffs) so they outlive a restart.
# Exit status is non-zero on the first failure, with what failed.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "deploy/validate.sh: FAIL: $*" >&2; exit 1; }

KUBECTL=${KUBECTL:-}
if [ -z "$KUBECTL" ]; then
  if [ -n "${K8S_TESTENV_BIN:-}" ] && [ -x "$K8S_TESTENV_BIN/kubectl" ]; then KUBECTL=$K8S_TESTENV_BIN/kubectl
  elif [ -x /var/cache/k8s-testenv/bin/kubectl ]; then KUBECTL=/var/cache/k8s-testenv/bin/kubectl
  elif command -v kubectl >/dev/null; then KUBECTL=$(command -v kubectl)
  else fail "no kubectl: set KUBECTL, or run eval \"\$(tests/k8s/testenv/up)\""; fi
fi

echo "== deploy/crds/ matches crds/"
for f in crds/*.yaml; do
  cmp -s "$f" "deploy/$f" || fail "deploy/$f is stale or missing; run: cp crds/*.yaml deploy/crds/"
done
for f in deploy/crds/*.yaml; do
  [ -f "crds/$(basename "$f")" ] || fail "$f has no counterpart in crds/; remove it"
done

echo "== kubectl kustomize deploy/"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
"$KUBECTL" kustomize deploy/ > "$out/all.yaml" || fail "kubectl kustomize deploy/ failed"
kinds=$(grep -E '^kind: ' "$out/all.yaml" | sort | uniq -c)
echo "$kinds"
for k in Namespace CustomResourceDefinition ServiceAccount ClusterRole ClusterRoleBinding DaemonSet; do
  grep -q "^kind: $k\$" "$out/all.yaml" || fail "rendered output has no $k"
done

echo "== kubernetes-validate (strict)"
VENV=${BULWARK_VENV:-$HOME/.cache/bulwark/validate-venv}
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed (install python3-venv)"
  "$VENV/bin/pip" install --quiet kubernetes-validate || fail "pip install kubernetes-validate failed"
fi
# One document per file, so failures name the object.
python3 - "$out/all.yaml" "$out" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
for i, doc in enumerate(d for d in re.split(r'^---\s*$', text, flags=re.M) if d.strip()):
    open(f"{sys.argv[2]}/doc-{i:02d}.yaml", "w").write(doc)
PY
"$VENV/bin/kubernetes-validate" --strict "$out"/doc-*.yaml || fail "kubernetes-validate rejected the rendered manifests"
# The one-off unload Job (not in the kustomization), with a node name filled in.
sed 's/NODE_NAME/node-1/' deploy/unload-job.yaml > "$out/unload-job.yaml"
"$VENV/bin/kubernetes-validate" --strict "$out/unload-job.yaml" || fail "kubernetes-validate rejected deploy/unload-job.yaml"

echo "== crdcheck"
CRDCHECK=${K8S_TESTENV_BIN:-/var/cache/k8s-testenv/bin}/crdcheck
if [ -x "$CRDCHECK" ]; then
  for f in deploy/crds/*.yaml; do "$CRDCHECK" "$f" || fail "crdcheck rejected $f"; done
elif [ "${CI:-}" = "true" ]; then
  fail "crdcheck not found at $CRDCHECK but CI=true; run eval \"\$(tests/k8s/testenv/up)\""
else
  echo "crdcheck not found; skipped (set K8S_TESTENV_BIN)"
fi

echo "== DaemonSet host access is exactly the documented set"
python3 - "$out/all.yaml" <<'PY'
import sys, re
t = open(sys.argv[1]).read()
ds = next(d for d in re.split(r'^---\s*$', t, flags=re.M) if re.search(r'^kind: DaemonSet$', d, re.M))
caps = re.search(r'add:\n((?:\s+- \w+\n)+)', ds).group(1).split()
caps = sorted(c for c in caps if c != '-')
want = sorted(["BPF", "PERFMON", "SYS_ADMIN", "NET_ADMIN", "SYS_RESOURCE"])
assert caps == want, f"capabilities {caps} != {want}"
paths = sorted(re.findall(r'hostPath:\n\s+path: (\S+)', ds))
assert paths == sorted(["/sys/fs/bpf", "/sys/kernel/tracing", "/sys/fs/cgroup"]), f"hostPaths {paths}"
assert "hostPID: true" in ds, "hostPID missing"
assert "privileged: false" in ds, "must not be privileged"
assert "hostNetwork" not in ds, "hostNetwork is not needed"
assert "- --pin-dir=/sys/fs/bpf/bulwark" in ds, "the daemon must pin under the host's bpffs"
assert 'drop:\n            - ALL' in ds or "drop: [\"ALL\"]" in ds or "- ALL" in ds, "capabilities must drop ALL"
print("ok:", ", ".join(caps), "|", ", ".join(paths))
PY
echo "deploy/validate.sh: OK"
