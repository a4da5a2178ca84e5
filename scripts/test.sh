#!/bin/bash
# Every test: Rust unit and kernel tests (cargo test), then the Perl suite
# (prove) against the real shared object. Kernel tests never skip: without
# root, BPF or network namespaces they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "test: must run as root (BPF programs, network namespaces, bpffs mounts)" >&2
    exit 1
fi
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cargo build --release --locked --workspace
cargo test --release --locked --workspace
PVE_RS_MICROSEG_SO="$PWD/target/release/libpve_rs_microseg.so" prove t/
