#!/bin/bash
# The demo: a simulated Proxmox VE node in network namespaces, enforced by the
# library called from Perl, checked with real packets. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "demo: must run as root (BPF programs, network namespaces)" >&2
    exit 1
fi
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked -p pve-rs-microseg
PVE_RS_MICROSEG_SO="$PWD/target/release/libpve_rs_microseg.so" exec perl demo/demo.pl
