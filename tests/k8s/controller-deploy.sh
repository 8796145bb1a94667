#!/usr/bin/env bash
# deploy/validate.sh accepts deploy/ as checked in, and rejects each kind of mistake it exists to
# catch, in the base and in the overlays: an unknown field (strict schema), a capability beyond
# the documented set, an extra host mount, a daemon that does not pin its programs, a stale CRD
# copy, an image tag that is not Cargo.toml's version, an overlay patch that no longer fits the
# base, an events file on no writable volume, an environment variable nothing reads. Works on
# copies in a temp dir; never touches the tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "tests/k8s/controller-deploy.sh: FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# What validate.sh reads: deploy/, crds/, and the version (scripts/build-image.sh --print-tag
# reads Cargo.toml and daemon/Cargo.toml).
fresh() {
  rm -rf "$work/t"; mkdir -p "$work/t/daemon" "$work/t/scripts"
  cp -r "$ROOT/deploy" "$ROOT/crds" "$ROOT/Cargo.toml" "$work/t/"
  cp "$ROOT/daemon/Cargo.toml" "$work/t/daemon/"
  cp "$ROOT/scripts/build-image.sh" "$work/t/scripts/"
}
ds=deploy/base/daemonset.yaml
example=deploy/overlays/example

fresh
"$work/t/deploy/validate.sh" >"$work/log" 2>&1 || { cat "$work/log"; fail "pristine deploy/ rejected"; }
echo "ok: pristine deploy/ (base and overlays) passes"

expect_fail() { # name, expected message
  if "$work/t/deploy/validate.sh" >"$work/log" 2>&1; then cat "$work/log"; fail "$1: accepted"; fi
  grep -q -- "$2" "$work/log" || { cat "$work/log"; fail "$1: failed without '$2'"; }
  echo "ok: $1 is rejected"
}

fresh; sed -i 's/^      hostPID: true/      hostPID: true\n      hostPIDs: true/' "$work/t/$ds"
expect_fail "unknown field hostPIDs" "kubernetes-validate rejected"

fresh; sed -i 's/^            - SYS_RESOURCE/            - SYS_RESOURCE\n            - SYS_PTRACE/' "$work/t/$ds"
expect_fail "extra capability SYS_PTRACE" "capabilities"

fresh; sed -i 's|^      - name: tmp$|      - name: root\n        hostPath:\n          path: /\n      - name: tmp|' "$work/t/$ds"
expect_fail "extra hostPath /" "hostPaths"

fresh; sed -i '/- --pin-dir=/d' "$work/t/$ds"
expect_fail "a DaemonSet that does not pin" "must pin"

# The ClusterRole grants every API call the daemon makes (pod CIDRs: Nodes; declared protocols).
fresh; python3 - "$work/t/deploy/base/rbac.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace('  resources: ["nodes"]\n  verbs: ["get", "list", "watch"]', '  resources: ["nodes"]\n  verbs: ["get"]')
open(p, "w").write(s)
PY
grep -q 'resources: \["nodes"\]' "$work/t/deploy/base/rbac.yaml" || fail "test setup: no nodes rule in rbac.yaml"
expect_fail "a ClusterRole that cannot watch this node's Node" "nodes (core) lacks list, watch"
fresh; sed -i 's|resources: \["encryptedprotocols/status"\]|resources: ["encryptedprotocols/statuz"]|' "$work/t/deploy/base/rbac.yaml"
expect_fail "a ClusterRole that cannot write EncryptedProtocol status" "encryptedprotocols/status (bulwark.dev) lacks patch"

fresh; echo "# edited" >> "$work/t/deploy/crds/policyviolations.bulwark.dev.yaml"
expect_fail "stale CRD copy" "is stale"

fresh; sed -i '/^- policyviolations/d' "$work/t/deploy/crds/kustomization.yaml"
expect_fail "a CRD left out of deploy/crds/kustomization.yaml" "must list exactly the files of crds/"

# The image tag follows Cargo.toml: a version bump without deploy/ following is caught, and so
# is a tag edited in the base or an overlay.
fresh; sed -i 's/^version = "\(.*\)"/version = "99.0.0"/' "$work/t/Cargo.toml"
grep -q '^version = "99.0.0"' "$work/t/Cargo.toml" || fail "test setup: no workspace version in Cargo.toml"
expect_fail "Cargo.toml version bumped, deploy/ not" "is not bulwark:99.0.0"

fresh; sed -i 's|^\(        image: bulwark:\).*|\199.0.0|' "$work/t/$ds"
expect_fail "base DaemonSet image tag not Cargo's version" "image bulwark:99.0.0 is not bulwark:"

fresh; sed -i 's|^  newTag: .*|  newTag: "99.0.0"|' "$work/t/$example/kustomization.yaml"
expect_fail "overlay image tag not Cargo's version" "platform/bulwark:99.0.0 is not bulwark:"

# Overlays get the base's checks.
fresh; cat >>"$work/t/$example/kustomization.yaml" <<'EOF'
- target: {kind: DaemonSet, name: bulwark}
  patch: |
    - op: add
      path: /spec/template/spec/containers/0/securityContext/capabilities/add/-
      value: SYS_PTRACE
EOF
expect_fail "overlay adding capability SYS_PTRACE" "deploy/overlays/example: capabilities"

fresh; sed -i 's/^      nodeSelector:/      nodeSelectr:/' "$work/t/$example/placement.yaml"
expect_fail "overlay patch with a misspelt field" "rendered from deploy/overlays/example"

fresh; sed -i 's|path: /sys/fs/cgroup/unified|path: /|' "$work/t/deploy/overlays/cgroup-hybrid/cgroup-hybrid.yaml"
expect_fail "overlay mounting / as the cgroup tree" "hostPaths: volume cgroup is /"

fresh; sed -i 's|value: --events=/var/log/bulwark/events.jsonl|value: --events=/var/lib/bulwark/events.jsonl|' "$work/t/$example/events-file.yaml"
expect_fail "overlay writing events where nothing is writable" "is on no writable volume"

fresh; sed -i 's/- name: BULWARK_CLUSTER_CIDRS/- name: BULWARK_CLUSTER_CIDR/' "$work/t/$example/cluster-cidrs.yaml"
expect_fail "overlay setting a misspelt env var" "env BULWARK_CLUSTER_CIDR is read by nothing"

# The events patch replaces an argument by position; its `test` op stops the render when the
# base's argument list changed under it, instead of replacing the wrong argument.
fresh; sed -i '/^        - --events=-$/d; s|^        - --pin-dir=/sys/fs/bpf/bulwark$|&\n        - --events=-|' "$work/t/$ds"
grep -q -- '- --events=-' "$work/t/$ds" || fail "test setup: --events not moved"
expect_fail "base arguments reordered under the events patch" "kubectl kustomize deploy/overlays/example failed"
echo "tests/k8s/controller-deploy.sh: OK"
