#!/bin/bash
# Installs what building, testing and packaging need, idempotently (as root).
# Debian packages come from apt; the Rust toolchain (>= 1.87, for aya 0.14)
# must already be installed with rustup, Debian 12's rustc is too old.
set -euo pipefail

packages=(
    clang libbpf-dev linux-libc-dev gcc libc6-dev # BPF objects and the XS glue
    perl libperl-dev                              # perl headers for the glue
    iproute2 kmod nftables iperf3 bpftool util-linux # test, demo and benchmark topologies
    dnsmasq-base isc-dhcp-client                  # host services: a real DHCP server and client
    dpkg-dev debhelper lintian systemd fakeroot   # the Debian package and its checks
    systemd-container                             # boots the installed unit under a real systemd
    groff-base man-db bash-completion             # the man page renders, the completion loads
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found: install Rust >= 1.87 with rustup" >&2
    exit 1
fi
