# Sourced by demo.sh, test.sh and bench.sh: refuse to run without root,
# install what is missing, put the Rust toolchain on PATH, enter the checkout.
# Usage: . scripts/prepare.sh NAME
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(id -u)" != 0 ]; then
    echo "$1: must run as root (BPF programs, network namespaces, bpffs mounts)" >&2
    exit 1
fi
scripts/deps.sh
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
