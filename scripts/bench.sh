#!/bin/bash
# The benchmarks: prints one table and writes BENCHMARKS.md. Needs root.
# BENCH_ONLY=iface,scale,install,packet,throughput runs a subset (no file written).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench: must run as root (BPF programs, network namespaces)" >&2
    exit 1
fi
scripts/deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked --workspace
cargo bench --locked --bench microseg
