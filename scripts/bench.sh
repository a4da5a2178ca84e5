#!/bin/bash
# The benchmarks: prints one table and writes BENCHMARKS.md. Needs root.
# BENCH_ONLY=iface,scale,install,packet,throughput runs a subset (no file written).
set -euo pipefail
. "$(dirname "$0")/prepare.sh" bench

cargo build --release --locked --workspace
cargo bench --locked --bench microseg
