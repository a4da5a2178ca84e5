#!/bin/sh
# The version is kept in three places; a build fails when they differ:
# debian/changelog (the package), Cargo.toml (the crates, and the XS
# handshake), perl/PVE/RS/SDN/Microseg.pm ($VERSION, checked at load).
# Usage: check-versions.sh [SOURCE-ROOT]
set -eu
root="${1:-$(dirname "$0")/..}"
changelog=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$root/debian/changelog")
cargo=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)
module=$(sed -n "s/^our \$VERSION = '\([^']*\)';.*/\1/p" "$root/perl/PVE/RS/SDN/Microseg.pm")
# A Debian revision (-1) or a native +build suffix is not part of the crate version.
upstream=${changelog%%-*}
if [ -z "$changelog" ] || [ -z "$cargo" ] || [ -z "$module" ]; then
    echo "check-versions: cannot read a version (debian/changelog '$changelog', Cargo.toml '$cargo', Microseg.pm '$module')" >&2
    exit 1
fi
if [ "$upstream" != "$cargo" ] || [ "$module" != "$cargo" ]; then
    echo "check-versions: versions differ: debian/changelog $changelog, Cargo.toml $cargo, Microseg.pm $module" >&2
    exit 1
fi
