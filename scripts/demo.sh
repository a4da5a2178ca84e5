#!/bin/bash
# The demo: a simulated Proxmox VE node in network namespaces, enforced by the
# library called from Perl, checked with real packets. Needs root.
set -euo pipefail
. "$(dirname "$0")/prepare.sh" demo

cargo build --release --locked -p pve-rs-microseg
PVE_RS_MICROSEG_SO="$PWD/target/release/libpve_rs_microseg.so" exec perl demo/demo.pl
