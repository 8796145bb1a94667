#!/usr/bin/env bash
# Offline validation of deploy/ (no cluster needed):
#  1. deploy/crds/ are identical to crds/ (kustomize cannot reference files outside deploy/) and
#     deploy/crds/kustomization.yaml lists exactly them;
#  2. `kubectl kustomize` renders deploy/ (the base) and every overlay in deploy/overlays/;
#  3. in each rendered output (deploy/check_rendered.py) the DaemonSet asks for exactly the
#     capabilities and host mounts documented in it (an overlay may add only the directory of an
#     events file), pins its programs (--pin-dir on the host's bpffs) so they outlive a restart,
#     and its image is bulwark:<version>, the tag scripts/build-image.sh gives Cargo.toml's
#     version (deploy/unload-job.yaml too; an overlay may change the registry, not the tag);
#  4. every built-in kind in every rendered output, and deploy/unload-job.yaml, validates against
#     the Kubernetes OpenAPI schema with PyPI `kubernetes-validate` (strict: unknown fields
#     fail), installed into a venv on first use ($BULWARK_VENV, default
#     ~/.cache/bulwark/validate-venv);
#  5. the CRDs pass `crdcheck` (upstream apiextensions validation) when the k8s-testenv kit is here.
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
  [ "$(basename "$f")" = kustomization.yaml ] || [ -f "crds/$(basename "$f")" ] \
    || fail "$f has no counterpart in crds/; remove it"
done
listed=$(sed -n 's/^- //p' deploy/crds/kustomization.yaml | sort)
[ "$listed" = "$(cd crds && ls -1 -- *.yaml | sort)" ] \
  || fail "deploy/crds/kustomization.yaml: resources must list exactly the files of crds/"

TAG=$(scripts/build-image.sh --print-tag) || fail "scripts/build-image.sh --print-tag failed"
echo "== the image is $TAG (Cargo.toml's version)"
job_images=$(sed -n 's/^ *image: //p' deploy/unload-job.yaml)
[ "$job_images" = "$TAG" ] || fail "deploy/unload-job.yaml: image '$job_images' is not $TAG (the version in Cargo.toml)"

VENV=${BULWARK_VENV:-$HOME/.cache/bulwark/validate-venv}
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed (install python3-venv)"
  "$VENV/bin/pip" install --quiet kubernetes-validate || fail "pip install kubernetes-validate failed"
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

# Renders one kustomization, splits it one document per file (so a schema failure names the
# object) and checks host access and image (deploy/check_rendered.py). The schema check of all
# renders runs once afterwards: kubernetes-validate takes a while to start.
check_install() { # directory
  local dir=$1 r verdict
  r="$out/$(echo "$dir" | tr / _)"
  mkdir -p "$r"
  echo "== kubectl kustomize $dir"
  "$KUBECTL" kustomize "$dir" > "$r/all.yaml" || fail "kubectl kustomize $dir failed"
  grep -E '^kind: ' "$r/all.yaml" | sort | uniq -c
  python3 - "$r/all.yaml" "$r" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
for i, doc in enumerate(d for d in re.split(r'^---\s*$', text, flags=re.M) if d.strip()):
    open(f"{sys.argv[2]}/doc-{i:02d}.yaml", "w").write(doc)
PY
  echo "== DaemonSet host access and image: $dir"
  verdict=$("$VENV/bin/python" deploy/check_rendered.py "$r/all.yaml" "$TAG" 2>&1) || fail "$dir: $verdict"
  echo "$verdict"
  installs+=("$dir")
}

installs=()
check_install deploy
for overlay in deploy/overlays/*/; do check_install "${overlay%/}"; done
# The one-off unload Job (not in the kustomization), with a node name filled in.
mkdir -p "$out/unload-job"
sed 's/NODE_NAME/node-1/' deploy/unload-job.yaml > "$out/unload-job/doc-00.yaml"

echo "== kubernetes-validate (strict): ${installs[*]} deploy/unload-job.yaml"
if ! "$VENV/bin/kubernetes-validate" --strict "$out"/*/doc-*.yaml; then
  for dir in "${installs[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict "$out/$(echo "$dir" | tr / _)"/doc-*.yaml >/dev/null 2>&1 \
      || fail "kubernetes-validate rejected the manifests rendered from $dir"
  done
  fail "kubernetes-validate rejected deploy/unload-job.yaml"
fi

echo "== crdcheck"
CRDCHECK=${K8S_TESTENV_BIN:-/var/cache/k8s-testenv/bin}/crdcheck
if [ -x "$CRDCHECK" ]; then
  for f in crds/*.yaml; do "$CRDCHECK" "deploy/$f" || fail "crdcheck rejected deploy/$f"; done
elif [ "${CI:-}" = "true" ]; then
  fail "crdcheck not found at $CRDCHECK but CI=true; run eval \"\$(tests/k8s/testenv/up)\""
else
  echo "crdcheck not found; skipped (set K8S_TESTENV_BIN)"
fi
echo "deploy/validate.sh: OK"
