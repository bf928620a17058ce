#!/usr/bin/env bash
# One-time, idempotent setup for building and testing vipd on Debian (x86_64) with rustup.
# Installs only what is missing: Debian packages, rust-src for the eBPF toolchain, and
# bpf-linker built against that toolchain's own libLLVM. Fast when all is already there.
#
# Knobs: EBPF_TOOLCHAIN (default: nightly), BPF_LINKER_VERSION (default: 0.13.0).
set -euo pipefail

EBPF_TOOLCHAIN=${EBPF_TOOLCHAIN:-nightly}
BPF_LINKER_VERSION=${BPF_LINKER_VERSION:-0.13.0}
# binutils: objdump, for the package's libc6 dependency (`cargo xtask dist`).
APT_PACKAGES=(bpftool iproute2 iputils-ping iputils-arping tcpdump util-linux procps nftables keepalived ucarp stress-ng frr binutils)

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (it installs Debian packages; vipd itself needs CAP_BPF and CAP_NET_ADMIN)"
    exit 1
fi

# 1. Debian packages.
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. rust-src for the toolchain that compiles the eBPF crate (-Z build-std=core).
if ! rustup toolchain list | grep -q "^$EBPF_TOOLCHAIN"; then
    say "installing the $EBPF_TOOLCHAIN toolchain"
    rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal
fi
if ! rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed | grep -q '^rust-src'; then
    say "adding rust-src to $EBPF_TOOLCHAIN"
    rustup component add rust-src --toolchain "$EBPF_TOOLCHAIN"
fi
for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

# 3. bpf-linker, linked against the same libLLVM as the eBPF toolchain's rustc.
sysroot=$(rustc +"$EBPF_TOOLCHAIN" --print sysroot)
libllvm=$(ls "$sysroot"/lib/libLLVM.so.*-rust-* | head -n1)
llvm_major=$(rustc +"$EBPF_TOOLCHAIN" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
shim=${LLVM_SHIM_DIR:-$HOME/.local/share/bpf-linker-llvm/$(basename "$libllvm")}
stamp="$shim/bpf-linker-$BPF_LINKER_VERSION.built"
if ! command -v bpf-linker >/dev/null 2>&1 || [ ! -e "$stamp" ] || ! bpf-linker --version >/dev/null 2>&1; then
    say "building bpf-linker $BPF_LINKER_VERSION against LLVM $llvm_major ($libllvm)"
    mkdir -p "$shim/lib"
    ln -sfn "$libllvm" "$shim/lib/libLLVM.so"
    ln -sfn "$libllvm" "$shim/lib/$(basename "$libllvm")"
    LLVM_PREFIX="$shim" cargo +"$EBPF_TOOLCHAIN" install bpf-linker --force \
        --version "$BPF_LINKER_VERSION" --locked --no-default-features --features "llvm-$llvm_major"
    touch "$stamp"
fi

# 4. bpffs, where vipd pins its maps.
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi
say "ready ($(bpf-linker --version 2>&1 | head -n1), $(bpftool version 2>&1 | head -n1))"
