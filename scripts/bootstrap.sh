#!/usr/bin/env bash
# Idempotent setup of everything bulwark's build and tests need on a fresh Debian 12 machine:
# apt packages the tests drive, nightly rust-src, bpf-linker built against the nightly's own
# libLLVM, tracefs and bpffs mounts. Safe to run again: every step checks before it acts.
# Called by `scripts/test.sh` and `scripts/run-examples.sh`; nobody has to call it by hand.
set -euo pipefail

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# --- apt packages the e2e tests and tooling use --------------------------------------------
APT_PKGS=(curl openssl gnutls-bin iproute2 python3 bpftool netcat-openbsd procps lz4 ca-certificates)
# The file hook's e2e tests build a small C probe (openat with a dirfd, open_by_handle_at, int 0x80).
APT_PKGS+=(gcc libc6-dev linux-libc-dev)
# The container image (scripts/build-image.sh, tests/image/image.sh): buildah builds it, podman
# with runc runs it (crun refuses hybrid cgroup hosts), binutils strips the binary, python3-yaml
# reads the rendered DaemonSet. ~15 s to install on a fresh Debian 12 machine.
APT_PKGS+=(buildah podman runc binutils python3-yaml)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing apt packages: ${missing[*]} (run as root to install them)"; exit 1
  fi
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- nightly rust-src (the eBPF crate builds core from source) ------------------------------
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

# --- bpf-linker 0.13.0 against the nightly's libLLVM ----------------------------------------
BPF_LINKER_VERSION=0.13.0
if ! { command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; }; then
  sysroot=$(rustc +nightly --print sysroot)
  llvm_so=$(find "$sysroot/lib" -maxdepth 1 -name 'libLLVM.so.*' | head -1)
  [ -n "$llvm_so" ] || { log "no libLLVM.so.* in $sysroot/lib; cannot build bpf-linker"; exit 1; }
  llvm_major=$(basename "$llvm_so" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')
  pfx=${BULWARK_LLVM_PREFIX:-/opt/bulwark-llvm}
  mkdir -p "$pfx/lib"
  # bpf-linker's build links -lLLVM; at run time the loader wants the versioned soname.
  ln -sf "$llvm_so" "$pfx/lib/libLLVM.so"
  ln -sf "$llvm_so" "$pfx/lib/$(basename "$llvm_so")"
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM $llvm_major (1-2 min)"
  LLVM_PREFIX=$pfx RUSTFLAGS="-C link-args=-Wl,-rpath,$pfx/lib" \
    cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked --no-default-features --features "llvm-$llvm_major"
fi

# --- kernel filesystems the daemon and tests need -------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  if [ ! -e /sys/kernel/tracing/events ]; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs at /sys/kernel/tracing"
  fi
  if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null || log "could not mount bpffs at /sys/fs/bpf"
  fi
fi
log "ok"
