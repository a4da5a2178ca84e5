#!/bin/bash
# Every test: Rust unit and kernel tests (cargo test, with the test-hooks
# feature through the crate's dev-dependency on itself), then the Perl suite
# (prove) against the shared object as it ships, built without that feature.
# Kernel tests never skip: without root, BPF or network namespaces they fail.
set -euo pipefail
. "$(dirname "$0")/prepare.sh" test

cargo test --release --locked -p microseg
cargo build --release --locked -p pve-rs-microseg
PVE_RS_MICROSEG_SO="$PWD/target/release/libpve_rs_microseg.so" prove t/
