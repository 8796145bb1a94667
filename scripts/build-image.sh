#!/usr/bin/env bash
# Builds the bulwark container image with buildah (no Docker daemon) from this tree:
# compiles the `bulwark` binary, stages it with the shared libraries it links into a build
# context, builds deploy/image/Containerfile (FROM scratch) and tags the result
# bulwark:<version>, the version of the bulwark package in Cargo.toml (deploy/ names the same
# tag; deploy/validate.sh checks they agree).
#
#   scripts/build-image.sh                          # release binary (several minutes the first time)
#   scripts/build-image.sh --debug                  # debug binary (fast; CI's image test uses it)
#   scripts/build-image.sh --push registry.example.com/team
#                                                   # build, then push registry.example.com/team/bulwark:<version>
#   scripts/build-image.sh --print-tag              # bulwark:<version>, nothing built
#
# Needs buildah (Debian 12: apt-get install buildah; scripts/bootstrap.sh installs it) and root, or a rootless buildah
# setup. --push uses buildah's credentials: run `buildah login REGISTRY` (or `podman login`)
# first. A debug build is never pushed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
die() { echo "scripts/build-image.sh: $*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  echo; cat <<'EOF'
Options:
  --debug            build and package the debug binary (default: release)
  --tag NAME         tag the image NAME instead of bulwark:<version> (tests use their own)
  --binary PATH      package this already built binary instead of running cargo (CI, which
                     built it already); --debug still says which profile it is
  --source URL       org.opencontainers.image.source (default: the `origin` remote when it is
                     a network URL, credentials removed; else the label is left empty)
  --push REGISTRY    after building, push REGISTRY/bulwark:<version> (release builds only)
  --print-tag        print the tag this tree builds (bulwark:<version>) and exit
  -h, --help         this text
EOF
}

# The version of the `bulwark` package (daemon/Cargo.toml, or the workspace's when it inherits).
package_version() {
  python3 - "$ROOT" <<'PY'
import sys, tomllib
root = sys.argv[1]
pkg = tomllib.load(open(f"{root}/daemon/Cargo.toml", "rb"))["package"]
v = pkg["version"]
if isinstance(v, dict) and v.get("workspace"):
    v = tomllib.load(open(f"{root}/Cargo.toml", "rb"))["workspace"]["package"]["version"]
print(v)
PY
}

PROFILE=release SOURCE= SOURCE_SET= PUSH= TAG= BIN=
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) PROFILE=debug ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; BIN=$2; shift ;;
    --binary=*) BIN=${1#--binary=} ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a name"; TAG=$2; shift ;;
    --tag=*) TAG=${1#--tag=} ;;
    --source) [ $# -ge 2 ] || die "--source needs a URL"; SOURCE=$2; SOURCE_SET=1; shift ;;
    --source=*) SOURCE=${1#--source=}; SOURCE_SET=1 ;;
    --push) [ $# -ge 2 ] || die "--push needs a registry, e.g. --push registry.example.com/team"; PUSH=$2; shift ;;
    --push=*) PUSH=${1#--push=} ;;
    --print-tag) echo "bulwark:$(package_version)"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
  shift
done

VERSION=$(package_version)
TAG=${TAG:-bulwark:$VERSION}
[ -z "$PUSH" ] || [ "$PROFILE" = release ] || die "--push with --debug: only release builds are pushed"
command -v buildah >/dev/null || die "buildah not found: apt-get install buildah (Debian 12), or run scripts/bootstrap.sh"

REVISION=$(git rev-parse HEAD 2>/dev/null) || die "not a git checkout: the image's revision label needs the commit"
# A build from uncommitted changes says so in its revision label.
[ -z "$(git status --porcelain --untracked-files=no)" ] || REVISION="$REVISION-dirty"
if [ -z "$SOURCE_SET" ]; then
  origin=$(git remote get-url origin 2>/dev/null || true)
  case "$origin" in
    https://*|http://*|ssh://*|git@*) SOURCE=$(printf '%s' "$origin" | sed -E 's#^(https?://)[^/@]+@#\1#') ;;
  esac
fi

if [ -z "$BIN" ]; then
  echo "== cargo build ($PROFILE) of bulwark $VERSION"
  if [ "$PROFILE" = release ]; then
    cargo build --locked --release -p bulwark --bin bulwark
  else
    cargo build --locked -p bulwark --bin bulwark
  fi
  # Where cargo put it: CARGO_TARGET_DIR or a configured target-dir move it from ./target.
  target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$target_dir/$PROFILE/bulwark
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
"$BIN" --version | grep -qx "bulwark $VERSION" || die "$BIN --version says '$("$BIN" --version)', not bulwark $VERSION"

echo "== staging the binary and its shared libraries"
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs
mkdir -p "$rootfs/usr/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
# Debug info is most of a debug binary's size; symbols stay for backtraces.
objcopy --strip-debug "$BIN" "$rootfs/usr/bin/bulwark"
# Every library the dynamic loader resolves, and the loader itself, at the path it has on the
# build host: the binary was linked against exactly these (same glibc), so they are the ones
# it runs with. `ldd` prints "name => /path (addr)" and "/lib64/ld-linux-x86-64.so.2 (addr)".
ldd_out=$(ldd "$BIN") || die "ldd $BIN failed"
if grep -q 'not found' <<<"$ldd_out"; then die "unresolved libraries: $ldd_out"; fi
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
[ -n "$libs" ] || die "ldd listed no libraries for $BIN: $ldd_out"
for lib in $libs; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
  echo "  $lib"
done
# Names for the two users the image is run as (uid 0 for the node daemon, 65532 otherwise).
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"

echo "== buildah build -> $TAG"
buildah build --quiet \
  --file "$ROOT/deploy/image/Containerfile" \
  --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$REVISION" \
  --build-arg SOURCE="$SOURCE" \
  --build-arg PROFILE="$PROFILE" \
  --tag "$TAG" \
  "$ctx" >/dev/null
buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$TAG"

if [ -n "$PUSH" ]; then
  dest=${PUSH%/}/bulwark:$VERSION
  echo "== buildah push $TAG -> $dest"
  buildah push "$TAG" "docker://$dest"
  echo "pushed $dest; set it in your overlay: images: [{name: bulwark, newName: ${PUSH%/}/bulwark, newTag: \"$VERSION\"}]"
fi
