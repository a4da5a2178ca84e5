#!/bin/bash
# Two builds of the same source in different directories must give
# byte-identical BPF objects, and so the same fingerprints: otherwise every
# rebuild of the package would reload the programs on upgrade. Copies the
# working tree twice (paths of different lengths), runs the build script of
# each copy (cargo check, one shared target directory) and compares what it
# embeds.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
base=$(mktemp -d /tmp/microseg-repro.XXXXXX)
trap 'rm -rf "$base"' EXIT
export CARGO_TARGET_DIR="$base/target"
# Cargo gives both copies one build-script output directory: each build's
# objects are saved and removed from it, so the second build must make them
# anew (its sources are at other paths, so its build script reruns).
i=0
for dir in "$base/a" "$base/b/a-longer/build path"; do
    mkdir -p "$dir"
    tar -C "$src" --exclude=./target --exclude=./.git -cf - . | tar -C "$dir" -xf -
    out=$(cd "$dir" && cargo check --quiet --locked -p microseg --lib --message-format=json \
        | perl -MJSON::PP -ne '
            my $m = eval { decode_json($_) } or next;
            print $m->{out_dir} if ($m->{reason} // "") eq "build-script-executed" && $m->{package_id} =~ /#microseg@/;')
    ls "$out"/*.bpf.o > /dev/null 2>&1 || { echo "check-reproducible: no BPF objects built in $dir" >&2; exit 1; }
    i=$((i + 1))
    mkdir -p "$base/objects-$i"
    mv "$out"/*.bpf.o "$out"/*.bpf.o.sha256 "$base/objects-$i/"
done
a="$base/objects-1"; b="$base/objects-2"
n=0
for obj in "$a"/*.bpf.o; do
    name=$(basename "$obj")
    cmp "$obj" "$b/$name" || { echo "check-reproducible: $name differs between build directories" >&2; exit 1; }
    cmp "$obj.sha256" "$b/$name.sha256" || { echo "check-reproducible: fingerprint of $name differs" >&2; exit 1; }
    echo "  $name $(cut -c1-16 "$obj.sha256")... identical"
    n=$((n + 1))
done
[ "$n" -ge 3 ] || { echo "check-reproducible: only $n objects compared" >&2; exit 1; }
echo "check-reproducible: $n BPF objects byte-identical from two build directories"
