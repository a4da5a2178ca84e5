#!/bin/bash
# Builds the Debian package (source and binary), checks it (lintian on the
# .changes, warnings failing; systemd-analyze), installs it, runs every CLI
# command, the man page and the bash completion from the installed paths,
# boots it under a real systemd (nspawn-check.sh), runs a full pass through
# the installed module against a test config in a private network namespace
# and bpffs, then removes it while clear() fails and purges it: nothing of
# any subsystem may be left.
set -euo pipefail
. "$(dirname "$0")/prepare.sh" package-check

pkg=libpve-rs-microseg-perl
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
deb="../${pkg}_${version}_${arch}.deb"
changes="../${pkg}_${version}_${arch}.changes"

# -d: the Rust toolchain (>= 1.87) comes from rustup, not from a Debian
# package, so the declared build dependency cannot be checked by dpkg.
dpkg-buildpackage -us -uc -d
echo "== lintian"
lintian --fail-on warning,error --suppress-tags-from-file debian/lintian-ci-suppress "$changes"
echo "== reproducible BPF objects"
scripts/check-reproducible.sh

work=$(mktemp -d /tmp/microseg-pkg.XXXXXX)
cleanup() {
    umount -l "$work/bpf" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== install"
dpkg -i "$deb"
perl -MPVE::RS::SDN::Microseg -e '
    my $so = $DynaLoader::dl_shared_objects[-1];
    print "module: $INC{q{PVE/RS/SDN/Microseg.pm}}\nshared object: $so\n";
    die "not the installed module\n" if $INC{q{PVE/RS/SDN/Microseg.pm}} !~ m{^/usr/share/perl5/};
    die "not the installed shared object\n" if $so !~ m{^/usr/lib/.*/auto/PVE/RS/SDN/Microseg/Microseg\.so$};
'

echo "== systemd-analyze verify (the installed units: their commands and man pages exist)"
for name in pve-microseg pve-microseg-monitor; do
    unit=/lib/systemd/system/$name.service
    [ -f "$unit" ] || unit=/usr/lib/systemd/system/$name.service
    systemd-analyze verify "$unit"
done

echo "== full pass from the installed paths"
mkdir -p "$work/bpf"
mount -t bpf bpf "$work/bpf"
ns="msc-pkg-$$"
ip netns add "$ns"
cleanup_ns() { ip netns del "$ns" 2>/dev/null || true; cleanup; }
trap cleanup_ns EXIT
ip -n "$ns" link add veth100i0 type veth peer name peer0
ip -n "$ns" link add ul0 type veth peer name ul0peer
ip -n "$ns" link set ul0 up
cat > "$work/running-config" <<'JSON'
{"version": 1, "zones": {"ids": {"z": {"type": "vxlan", "peers": "192.0.2.1"}}},
 "microseg": {"ids": {
   "g": {"type": "group", "id": "g", "mark": "7"},
   "r": {"type": "rule", "id": "r", "dst": "g", "allow": 1},
   "a": {"type": "assignment", "id": "a", "vmid": 100, "iface": 0, "group": "g"},
   "u": {"type": "vtep-guard", "id": "u", "ifaces": "ul0"},
   "s": {"type": "srv6", "id": "s", "ifaces": "ul0", "peers": "2001:db8::2"}}}}
JSON
export PVE_MICROSEG_RUNNING_CONFIG="$work/running-config"
export PVE_MICROSEG_BPF_ROOT="$work/bpf/proxmox-ebpf"
export PVE_MICROSEG_RUN_DIR="$work/run"
unset PVE_RS_MICROSEG_SO
apply_full() {
    ip netns exec "$ns" perl -MPVE::RS::SDN::Microseg -e '
        my $r = PVE::RS::SDN::Microseg::apply_full();
        print "apply_full: $r->{nics} NIC(s), $r->{guarded} guarded, $r->{srv6} carrying SRv6, $r->{links_created} links, loaded=$r->{loaded}\n";
        die "expected 1 NIC, 1 guarded and 1 carrying interface\n" if $r->{nics} != 1 || $r->{guarded} != 1 || $r->{srv6} != 1;
    '
}
# Our programs as loaded in the kernel (bpftool names them from BTF): a
# program is unloaded once no pin, link or descriptor holds it, so after a
# purge none may remain.
tcx_progs() {
    bpftool -j prog show | grep -o '"name":"[a-z0-9_]*"' | grep -E 'microseg_|vtep_guard|srv6_' | sort | tr '\n' ' ' || true
}
# A program goes when its link is freed, and that is not at once when the
# last pin goes: the kernel frees the bpffs inode after an RCU grace period
# and puts the link from a work queue. clear() detaches each link itself
# (the hook stops running it then), the purge only removes pins (the hook
# stops when the work queue gets there); either way the programs' unloading
# is awaited, bounded (5 s).
await_no_progs() {
    local i
    for i in $(seq 50); do
        [ -z "$(tcx_progs)" ] && return 0
        sleep 0.1
    done
    echo "programs left attached after $1: $(tcx_progs)"
    return 1
}
apply_full
for prog in microseg_stamp microseg_enforce; do
    test -e "$PVE_MICROSEG_BPF_ROOT/microseg/links/veth100i0:$prog"
done
test -e "$PVE_MICROSEG_BPF_ROOT/vtepguard/links/ul0:vtep_guard"
for prog in srv6_receive srv6_send; do
    test -e "$PVE_MICROSEG_BPF_ROOT/srv6/links/ul0:$prog"
done
echo "attached: $(tcx_progs)"
[ "$(tcx_progs)" = '"name":"microseg_enforce" "name":"microseg_stamp" "name":"srv6_receive" "name":"srv6_send" "name":"vtep_guard" ' ]
perl -MPVE::RS::SDN::Microseg -e "PVE::RS::SDN::Microseg::clear()"
test ! -e "$PVE_MICROSEG_BPF_ROOT"
await_no_progs clear

echo "== the installed CLI, man page and completion"
cli() { ip netns exec "$ns" /usr/sbin/pve-microseg "$@"; }
cli apply-full > /dev/null
cli apply-iface veth100i0 --output-format json | perl -MJSON::PP -e '
    local $/; my $o = decode_json(<STDIN>); die "apply-iface: $o->{outcome}\n" if $o->{outcome} ne "enforced";'
cli status --output-format json | perl -MJSON::PP -e '
    local $/; my $s = decode_json(<STDIN>);
    my ($nic) = grep { $_->{name} eq "veth100i0" } @{$s->{nics}};
    die "status: veth100i0 not enforced\n" if !$nic || !$nic->{enforced};
    die "status: ul0 does not carry SRv6\n" if "@{$s->{underlay}{srv6}{carrying}}" ne "ul0";'
# (Output captured first: grep -q would cut a pipe short, which pipefail reports.)
status_text=$(cli status)
grep -q '^veth100i0 ' <<< "$status_text"
cli simulate g g --output-format json | perl -MJSON::PP -e '
    local $/; my $s = decode_json(<STDIN>); die "simulate: no verdict\n" if ($s->{verdict} // "") !~ /^(allow|deny)$/;'
cli monitor --count 1 --timeout 1 > /dev/null
cli clear
[ ! -e "$PVE_MICROSEG_BPF_ROOT/microseg" ]
full_text=$(cli apply-full)
grep -q 'links_created=5' <<< "$full_text"
man_text=$(MANWIDTH=80 man -P cat pve-microseg 2>/dev/null)
grep -q 'apply-full' <<< "$man_text"
complete_words() {
    ip netns exec "$ns" bash -c '
        . /usr/share/bash-completion/completions/pve-microseg
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pve_microseg; echo "${COMPREPLY[*]}"' _ "$@"
}
[ "$(complete_words pve-microseg sta)" = status ]
[ "$(complete_words pve-microseg apply-iface vet)" = veth100i0 ]
[ "$(complete_words pve-microseg status --output-format j)" = json ]

echo "== boot under systemd"
scripts/nspawn-check.sh

echo "== remove while clear() fails, then purge"
apply_full
# Another process holds a subsystem's lock: clear() at removal gives up
# after the lock timeout and the removal goes on without it.
# One process holds it (flock(1) would leave its child holding the lock
# after being killed).
perl -MFcntl=:flock -e 'open(my $f, ">>", $ARGV[0]) or die "$ARGV[0]: $!\n";
    flock($f, LOCK_EX) or die "flock: $!\n"; sleep 60' "$PVE_MICROSEG_RUN_DIR/microseg/lock" &
holder=$!
sleep 0.2
dpkg -r "$pkg" 2> "$work/remove.log" || { cat "$work/remove.log"; exit 1; }
cat "$work/remove.log"
grep -q "clear failed" "$work/remove.log"
kill "$holder"; wait "$holder" 2>/dev/null || true
test -e "$PVE_MICROSEG_BPF_ROOT/vtepguard/links/ul0:vtep_guard"
test -e "$PVE_MICROSEG_BPF_ROOT/srv6/links/ul0:srv6_send"
dpkg --purge "$pkg"
test ! -e "$PVE_MICROSEG_BPF_ROOT"
test ! -e "$PVE_MICROSEG_RUN_DIR"
await_no_progs purge
! perl -MPVE::RS::SDN::Microseg -e 1 2>/dev/null
test ! -e /usr/share/perl5/PVE/RS/SDN/Microseg.pm
echo "package check: all steps succeeded"
