#!/bin/bash
# Builds the Debian package, checks it (lintian, systemd-analyze), installs
# it, runs a full pass through the installed module against a test config in
# a private network namespace and bpffs, then purges it.
set -euo pipefail
. "$(dirname "$0")/prepare.sh" package-check

pkg=libpve-rs-microseg-perl
version=$(dpkg-parsechangelog -S Version)
deb="../${pkg}_${version}_amd64.deb"

dpkg-buildpackage -b -us -uc
echo "== lintian"
lintian --fail-on error --suppress-tags-from-file debian/lintian-ci-suppress "$deb"

work=$(mktemp -d /tmp/microseg-pkg.XXXXXX)
cleanup() {
    umount -l "$work/bpf" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== systemd-analyze verify"
dpkg-deb -x "$deb" "$work/root"
unit="$work/root/lib/systemd/system/pve-microseg.service"
[ -f "$unit" ] || unit="$work/root/usr/lib/systemd/system/pve-microseg.service"
systemd-analyze verify "$unit"

echo "== install"
dpkg -i "$deb"
perl -MPVE::RS::SDN::Microseg -e '
    my $so = $DynaLoader::dl_shared_objects[-1];
    print "module: $INC{q{PVE/RS/SDN/Microseg.pm}}\nshared object: $so\n";
    die "not the installed module\n" if $INC{q{PVE/RS/SDN/Microseg.pm}} !~ m{^/usr/share/perl5/};
    die "not the installed shared object\n" if $so !~ m{^/usr/lib/.*/auto/PVE/RS/SDN/Microseg/Microseg\.so$};
'

echo "== full pass from the installed paths"
mkdir -p "$work/bpf"
mount -t bpf bpf "$work/bpf"
cat > "$work/running-config" <<'JSON'
{"version": 1, "zones": {"ids": {"z": {"type": "simple"}}},
 "microseg": {"ids": {
   "g": {"type": "group", "id": "g", "mark": "7"},
   "r": {"type": "rule", "id": "r", "dst": "g", "allow": 1},
   "a": {"type": "assignment", "id": "a", "vmid": 100, "iface": 0, "group": "g"}}}}
JSON
env -u PVE_RS_MICROSEG_SO \
    PVE_MICROSEG_RUNNING_CONFIG="$work/running-config" \
    PVE_MICROSEG_BPF_ROOT="$work/bpf/proxmox-ebpf" \
    PVE_MICROSEG_RUN_DIR="$work/run" \
    unshare -n sh -ec '
        ip link add veth100i0 type veth peer name peer0
        perl -MPVE::RS::SDN::Microseg -e "
            my \$r = PVE::RS::SDN::Microseg::apply_full();
            print qq{apply_full: \$r->{nics} NIC(s), \$r->{links_created} links, loaded=\$r->{loaded}\n};
            die qq{expected 1 NIC\n} if \$r->{nics} != 1;
        "
        for prog in microseg_stamp microseg_enforce; do
            test -e "$PVE_MICROSEG_BPF_ROOT/microseg/links/veth100i0:$prog"
        done
        perl -MPVE::RS::SDN::Microseg -e "PVE::RS::SDN::Microseg::clear()"
        test ! -e "$PVE_MICROSEG_BPF_ROOT"
    '

echo "== purge"
dpkg --purge "$pkg"
! perl -MPVE::RS::SDN::Microseg -e 1 2>/dev/null
test ! -e /usr/share/perl5/PVE/RS/SDN/Microseg.pm
echo "package check: all steps succeeded"
