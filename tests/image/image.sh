#!/usr/bin/env bash
# The container image, built from this tree and run with podman (root; loads eBPF programs, so
# run it under the machine lock when others share the machine):
#  1. scripts/build-image.sh --debug builds it (the debug binary, to keep CI fast: the image is
#     the same but for the binary's profile, which its dev.bulwark.build-profile label says;
#     under scripts/test.sh it packages $BULWARK_BIN, the debug binary built there);
#  2. its labels carry Cargo.toml's version, the commit and the source URL, it runs as uid 65532
#     by default, and it holds the binary, the libraries ldd lists, /etc/passwd, /etc/group and
#     /tmp: nothing else (no shell);
#  3. `bulwark lint --strict` of policies/examples in it passes as that non-root user, and the
#     broken cases of tests/lint-cases fail (exit 1);
#  4. `bulwark probe` in it, run as the DaemonSet runs (user, capabilities, read-only root, host
#     PID namespace, host mounts, all read from the rendered deploy/ manifests), finds tracefs,
#     the cgroup v2 tree at --cgroup-root and BTF, loads every bulwark program through the
#     verifier and says ready; run as the image's default user it is refused (exit 1);
#  5. `bulwark run` in it, as the DaemonSet runs it, on a policy that matches nothing here, gets
#     ready with its programs pinned and exits 0 on SIGTERM; `bulwark unload`, run as
#     deploy/unload-job.yaml runs it (root, every capability dropped), then removes the pins.
# Without buildah/podman/runc it skips, except under CI=true, where it fails.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
fail() { echo "tests/image/image.sh: FAIL: $*" >&2; exit 1; }
T0=$SECONDS

[ "$(id -u)" -eq 0 ] || fail "run as root (the probe loads eBPF programs; rootful podman)"
for tool in buildah podman runc; do
  if ! command -v "$tool" >/dev/null; then
    [ "${CI:-}" = "true" ] && fail "$tool not found but CI=true (scripts/bootstrap.sh installs it)"
    echo "tests/image/image.sh: $tool not found; skipped (scripts/bootstrap.sh installs it)"; exit 0
  fi
done
KUBECTL=${KUBECTL:-${K8S_TESTENV_BIN:-/var/cache/k8s-testenv/bin}/kubectl}
[ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl) || fail "no kubectl to render deploy/ (set KUBECTL)"

VERSION=$(scripts/build-image.sh --print-tag); VERSION=${VERSION#bulwark:}
# Its own tag, so the test neither uses nor replaces an image the user built.
IMAGE=localhost/bulwark-image-test:$VERSION
SOURCE=https://example.invalid/bulwark-image-test
work=$(mktemp -d)
cleanup() { podman rm -f bulwark-image-test >/dev/null 2>&1 || true; podman rmi -f "$IMAGE" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# runc, not crun: crun refuses hosts with the hybrid cgroup layout whose v2 tree has a controller
# (this CI machine's). Limits: rootful podman raises nofile and nproc to 1048576 by default,
# which needs CAP_SYS_RESOURCE, which a sandboxed root may lack; lower limits always work.
PODMAN_OPTS=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --network none)
PODMAN_RUN=(podman run --rm "${PODMAN_OPTS[@]}")

echo "== build (debug binary)"
t=$SECONDS
# scripts/test.sh built the debug binary already ($BULWARK_BIN); alone, the script builds it.
BIN=${BULWARK_BIN:-$ROOT/target/debug/bulwark}
scripts/build-image.sh --debug ${BULWARK_BIN:+--binary "$BULWARK_BIN"} --tag "$IMAGE" --source "$SOURCE"
echo "built in $((SECONDS - t)) s"

echo "== labels, user, contents"
label() { podman image inspect "$IMAGE" --format "{{index .Labels \"$1\"}}"; }
revision=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || revision="$revision-dirty"
[ "$(label org.opencontainers.image.version)" = "$VERSION" ] || fail "version label '$(label org.opencontainers.image.version)' != $VERSION"
[ "$(label org.opencontainers.image.revision)" = "$revision" ] || fail "revision label '$(label org.opencontainers.image.revision)' != $revision"
[ "$(label org.opencontainers.image.source)" = "$SOURCE" ] || fail "source label '$(label org.opencontainers.image.source)' != $SOURCE"
[ "$(label dev.bulwark.build-profile)" = debug ] || fail "build-profile label '$(label dev.bulwark.build-profile)' != debug"
user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
[ "$user" = "65532:65532" ] || fail "default user '$user' != 65532:65532"
out=$("${PODMAN_RUN[@]}" "$IMAGE" --version)
[ "$out" = "bulwark $VERSION" ] || fail "--version in the image says '$out'"
podman create --name bulwark-image-test "$IMAGE" >/dev/null
podman export bulwark-image-test | tar -t | sed 's|/$||' | grep -v '^$' | sort >"$work/files"
podman rm bulwark-image-test >/dev/null
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
{ printf '%s\n' usr/bin/bulwark etc/passwd etc/group tmp; printf '%s\n' $libs | sed 's|^/||'; } \
  | while read -r f; do d=$f; while [ "$d" != . ]; do echo "$d"; d=$(dirname "$d"); done; done \
  | sort -u >"$work/want"
extra=$(comm -23 "$work/files" "$work/want")
[ -z "$extra" ] || fail "the image holds more than the binary and its libraries: $extra"
missing=$(comm -13 "$work/files" "$work/want")
[ -z "$missing" ] || fail "the image lacks: $missing"
echo "ok: labels, user 65532, $(wc -l <"$work/files") paths, no shell"

echo "== bulwark lint in the image (user 65532)"
"${PODMAN_RUN[@]}" -v "$ROOT/policies/examples:/policies:ro" "$IMAGE" lint --strict /policies >"$work/lint" 2>&1 \
  || { cat "$work/lint"; fail "lint --strict policies/examples in the image failed"; }
tail -1 "$work/lint"
set +e
"${PODMAN_RUN[@]}" -v "$ROOT/tests/lint-cases:/cases:ro" "$IMAGE" lint /cases >"$work/lint-cases" 2>&1; rc=$?
set -e
[ "$rc" -eq 1 ] || { cat "$work/lint-cases"; fail "lint tests/lint-cases in the image: exit $rc, want 1"; }
grep -q 'error\[BW' "$work/lint-cases" || { cat "$work/lint-cases"; fail "lint tests/lint-cases printed no error diagnostics"; }
echo "ok: examples clean, lint-cases rejected ($(grep -c 'error\[BW' "$work/lint-cases") errors)"

echo "== bulwark probe in the image, as the DaemonSet runs it"
# The install that fits this host's cgroup layout: the base, or the hybrid overlay.
cgroup2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
case "$cgroup2" in
  /sys/fs/cgroup) install=deploy ;;
  /sys/fs/cgroup/unified) install=deploy/overlays/cgroup-hybrid ;;
  *) fail "no cgroup v2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified (found '$cgroup2')" ;;
esac
"$KUBECTL" kustomize "$install" >"$work/rendered.yaml" || fail "kubectl kustomize $install failed"
python3 tests/image/pod_podman_flags.py "$work/rendered.yaml" DaemonSet >"$work/flags" \
  || fail "cannot turn $install's DaemonSet into podman flags"
mapfile -t ds_flags <"$work/flags"
echo "podman flags from $install: ${ds_flags[*]}"
set +e
"${PODMAN_RUN[@]}" "${ds_flags[@]}" "$IMAGE" probe --format json >"$work/probe.json" 2>"$work/probe.err"; rc=$?
set -e
[ "$rc" -eq 0 ] || { cat "$work/probe.err" "$work/probe.json"; fail "probe as the DaemonSet: exit $rc"; }
python3 - "$work/probe.json" <<'PY' || { cat "$work/probe.err"; fail "probe as the DaemonSet did not find a working host"; }
import json, sys
r = json.load(open(sys.argv[1]))
problems = []
if not r["root"]: problems.append("not root")
if not r["ready"]: problems.append("not ready: " + "; ".join(f"{c['name']}: {c['detail']}" for c in r["checks"] if c["required"] and not c["supported"]))
if r["tracefs"] != "/sys/kernel/tracing": problems.append(f"tracefs {r['tracefs']}")
if r["cgroup2"] != "/run/bulwark/cgroup": problems.append(f"cgroup2 {r['cgroup2']} (the DaemonSet's --cgroup-root is /run/bulwark/cgroup)")
if not r["btf"]: problems.append("no BTF")
bad = [p for p in r["programs"] if not p["loaded"] or not p["verified_insns"]]
if not r["programs"] or bad: problems.append(f"programs not verified: {bad or 'none listed'}")
if not r["uses"]: problems.append("says nothing about what it uses")
if problems:
    sys.exit("probe: " + "; ".join(problems))
print(f"ok: ready, root, tracefs, cgroup2 at {r['cgroup2']}, BTF, {len(r['programs'])} programs verified")
PY
set +e
"${PODMAN_RUN[@]}" "$IMAGE" probe --format json >"$work/probe-user.json" 2>/dev/null; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "probe as the image's default user: exit $rc, want 1 (refused)"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(r["root"] or r["ready"])' "$work/probe-user.json" \
  || fail "probe as the image's default user claims root or ready"
echo "ok: as uid 65532 the probe is refused (not root, not ready)"

echo "== bulwark run in the image, as the DaemonSet runs it; then unload, as the unload Job runs it"
# A monitor-mode policy that matches no binary this machine has: the daemon loads, attaches and
# pins its programs but changes nothing for anyone else. Its own pin directory, removed below.
mkdir -p "$work/policies"
cat >"$work/policies/image-test.yaml" <<'EOF'
apiVersion: bulwark.dev/v1alpha1
kind: TracingPolicy
metadata:
  name: image-test
spec:
  mode: monitor
  rules:
  - name: nothing
    hook: exec
    selectors:
    - matchBinaries:
      - operator: In
        values: [/nonexistent/bulwark-image-test]
EOF
PIN_DIR=/sys/fs/bpf/bulwark-image-test
[ ! -e "$PIN_DIR" ] || fail "$PIN_DIR exists already (a previous run's? bulwark unload --pin-dir $PIN_DIR)"
sed -e 's/NODE_NAME/node-1/' deploy/unload-job.yaml >"$work/unload-job.yaml"
python3 tests/image/pod_podman_flags.py "$work/unload-job.yaml" Job >"$work/job-flags" \
  || fail "cannot turn deploy/unload-job.yaml into podman flags"
mapfile -t job_flags <"$work/job-flags"
unload() { "${PODMAN_RUN[@]}" "${job_flags[@]}" "$IMAGE" unload --pin-dir="$PIN_DIR"; }
cleanup_run() { podman rm -f bulwark-image-test-run >/dev/null 2>&1 || true; [ ! -e "$PIN_DIR" ] || unload >/dev/null 2>&1 || true; cleanup; }
trap cleanup_run EXIT
podman run --detach "${PODMAN_OPTS[@]}" --name bulwark-image-test-run "${ds_flags[@]}" \
  -v "$work/policies:/policies:ro" "$IMAGE" \
  run --policy-dir=/policies --events=- --cgroup-root=/run/bulwark/cgroup --pin-dir="$PIN_DIR" >/dev/null
deadline=$((SECONDS + 60))
# The logs go to a file before grep reads them: `podman logs | grep -q` under pipefail fails
# whenever grep stops reading first (podman gets SIGPIPE), which a busy host's events make likely.
logged() { podman logs bulwark-image-test-run >"$work/run.log" 2>/dev/null || true; grep -q "$1" "$work/run.log"; }
until logged '"type":"status","state":"ready"'; do
  if [ "$(podman inspect bulwark-image-test-run --format '{{.State.Running}}')" != true ] || [ $SECONDS -ge $deadline ]; then
    podman logs bulwark-image-test-run 2>&1 | tail -20
    fail "the daemon in the image did not get ready (exited, or 60 s passed)"
  fi
  sleep 0.2
done
[ -d "$PIN_DIR" ] || fail "the daemon in the image is ready but pinned nothing under $PIN_DIR"
podman stop --time 20 bulwark-image-test-run >/dev/null
rc=$(podman inspect bulwark-image-test-run --format '{{.State.ExitCode}}')
logged '"type":"status","state":"stopping"' \
  || { podman logs bulwark-image-test-run 2>&1 | tail -20; fail "no stopping event after SIGTERM"; }
[ "$rc" -eq 0 ] || { podman logs bulwark-image-test-run 2>&1 | tail -20; fail "the daemon exited $rc after SIGTERM, want 0"; }
echo "ok: ready with its programs pinned in $PIN_DIR, SIGTERM -> stopping, exit 0"
unload >"$work/unload" 2>&1 || { cat "$work/unload"; fail "unload in the image, as the unload Job runs it, failed"; }
[ ! -e "$PIN_DIR" ] || { cat "$work/unload"; ls -la "$PIN_DIR"; fail "unload left $PIN_DIR"; }
echo "ok: unload (root, no capabilities) removed $PIN_DIR: $(head -1 "$work/unload")"

echo "tests/image/image.sh: OK in $((SECONDS - T0)) s"
