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
out_dirs=()
for dir in "$base/a" "$base/b/a-longer/build path"; do
    mkdir -p "$dir"
    tar -C "$src" --exclude=./target --exclude=./.git -cf - . | tar -C "$dir" -xf -
    out=$(cd "$dir" && cargo check --quiet --locked -p microseg --lib --message-format=json \
        | perl -MJSON::PP -ne '
            my $m = eval { decode_json($_) } or next;
            print $m->{out_dir} if ($m->{reason} // "") eq "build-script-executed" && $m->{package_id} =~ /#microseg@/;')
    [ -d "$out" ] || { echo "check-reproducible: no build-script output for $dir" >&2; exit 1; }
    out_dirs+=("$out")
done
a="${out_dirs[0]}"; b="${out_dirs[1]}"
[ "$a" != "$b" ] || { echo "check-reproducible: both builds used one output directory" >&2; exit 1; }
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
