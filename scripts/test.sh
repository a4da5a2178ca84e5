#!/bin/bash
# Every test: Rust unit and kernel tests (cargo test), then the Perl suite
# (prove) against the real shared object. Kernel tests never skip: without
# root, BPF or network namespaces they fail.
set -euo pipefail
. "$(dirname "$0")/prepare.sh" test

cargo build --release --locked --workspace
cargo test --release --locked --workspace
PVE_RS_MICROSEG_SO="$PWD/target/release/libpve_rs_microseg.so" prove t/
