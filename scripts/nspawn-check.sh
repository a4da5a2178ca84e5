#!/bin/bash
# Boots the installed package under a real systemd (systemd-nspawn, private
# network, a private bpffs): the container's root is the host's /usr (where
# the package is installed) read-only and a copy of its /etc (where dpkg
# enabled the unit), with stand-ins for PVE: pve-cluster.service mounts
# /etc/pve two seconds into the boot, pve-guests.service records what is
# enforced when it starts. Checks that pve-microseg.service ran only once
# /etc/pve was mounted and before pve-guests, enforced the guest NIC, and
# logged to the journal under its own identifier with priorities; then that
# a Perl caller's warnings reach its stderr and the journal, once per
# config change.
# Called by package-check.sh with the package installed.
set -euo pipefail

box=$(mktemp -d /tmp/microseg-nspawn.XXXXXX)
cleanup() {
    umount -l "$box/bpf" 2>/dev/null || true
    rm -rf "$box"
}
trap cleanup EXIT

root="$box/root"
mkdir -p "$root"/{usr,var,tmp,run,proc,sys,dev,root,srv/pve-standin/sdn} "$box/result" "$box/bpf"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$root/$d"; done
cp -a /etc "$root/etc"
rm -f "$root/etc/os-release" "$root/etc/machine-id"
cp /usr/lib/os-release "$root/etc/os-release"
tr -d '-' < /proc/sys/kernel/random/uuid > "$root/etc/machine-id"
mount -t bpf bpf "$box/bpf"
test -L "$root/etc/systemd/system/multi-user.target.wants/pve-microseg.service" \
    || { echo "nspawn-check: the package did not enable pve-microseg.service" >&2; exit 1; }

# The cluster's running config, with a field this version does not know (a warning).
cat > "$root/srv/pve-standin/sdn/.running-config" <<'JSON'
{"version": 1, "microseg": {"ids": {
   "g": {"type": "group", "mark": 7, "colour": "blue"},
   "r": {"type": "rule", "dst": "g", "allow": 1},
   "a": {"type": "assignment", "vmid": 100, "iface": 0, "group": "g"}}}}
JSON

units="$root/etc/systemd/system"
# A stand-in for a PVE unit: NAME DESCRIPTION ORDERING COMMAND (a oneshot
# that stays active, so that units ordered after it see it done).
standin() {
    printf '[Unit]\nDescription=%s\n%s\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c '"'"'%s'"'"'\n' \
        "$2" "$3" "$4" > "$units/$1"
}
standin pve-cluster.service "stand-in for pmxcfs: mounts /etc/pve late" "" \
    'sleep 2; mkdir -p /etc/pve; mount --bind /srv/pve-standin /etc/pve'
standin guest-nic.service "stand-in for a guest NIC plugged before the boot-time pass" "Before=pve-microseg.service" \
    'ip link add veth100i0 type veth peer name peer100 && ip link set veth100i0 up'
standin pve-guests.service "stand-in for guest autostart: records what is enforced when guests start" \
    "After=pve-cluster.service" \
    '{ systemctl show -p ActiveState -p Result pve-microseg.service; mountpoint /etc/pve; ls /sys/fs/bpf/proxmox-ebpf/microseg/links; } > /result/at-guests 2>&1'
cat > "$units/collect.service" <<'EOF2'
[Unit]
Description=collects the results and powers off
After=pve-guests.service pve-microseg.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/usr/sbin/pve-microseg status --output-format json > /result/status.json 2>&1; sed -i s/colour/flavour/ /etc/pve/sdn/.running-config; perl -MPVE::RS::SDN::Microseg -e "PVE::RS::SDN::Microseg::apply_full() for 1 .. 2" 2> /result/perl-stderr; sleep 1; journalctl -b -t pve-microseg -o json --output-fields=PRIORITY,MESSAGE > /result/journal.json; journalctl -b -t pve-microseg -o cat > /result/journal.txt; systemctl show -p ActiveState -p Result pve-microseg.service > /result/unit; systemctl poweroff'
EOF2

echo "== boot"
timeout 180 systemd-nspawn -q -D "$root" --bind-ro=/usr --private-network --register=no --keep-unit \
    --bind="$box/result:/result" --bind="$box/bpf:/sys/fs/bpf" \
    --capability=all --system-call-filter='bpf perf_event_open' --machine="msboot$$" -b -- \
    systemd.wants=pve-cluster.service systemd.wants=guest-nic.service \
    systemd.wants=pve-guests.service systemd.wants=collect.service > "$box/boot.log" 2>&1 \
    || { tail -40 "$box/boot.log"; echo "nspawn-check: the container did not boot and power off" >&2; exit 1; }
r="$box/result"
for f in unit at-guests status.json journal.txt journal.json perl-stderr; do
    [ -s "$r/$f" ] || { tail -40 "$box/boot.log"; echo "nspawn-check: no $f" >&2; exit 1; }
done
echo "-- pve-microseg.service:"; cat "$r/unit"
echo "-- when pve-guests.service started:"; cat "$r/at-guests"
echo "-- journal (pve-microseg):"; cat "$r/journal.txt"

fail() { echo "nspawn-check: $*" >&2; exit 1; }
grep -qx 'ActiveState=active' "$r/unit" && grep -qx 'Result=success' "$r/unit" || fail "the unit did not succeed"
# Before the guests, after /etc/pve was mounted (else its condition skips it).
grep -qx 'ActiveState=active' "$r/at-guests" || fail "pve-guests started before pve-microseg finished"
grep -qx '/etc/pve is a mountpoint' "$r/at-guests" || fail "/etc/pve not mounted when guests started"
grep -qx 'veth100i0:microseg_enforce' "$r/at-guests" && grep -qx 'veth100i0:microseg_stamp' "$r/at-guests" \
    || fail "the guest NIC was not enforced when guests started"
perl -MJSON::PP -e '
    local $/; my $s = decode_json(<STDIN>);
    my ($nic) = grep { $_->{name} eq "veth100i0" } @{$s->{nics}};
    die "veth100i0 not enforced: " . encode_json($s) . "\n" if !$nic || !$nic->{enforced} || $nic->{group} ne "g";
' < "$r/status.json" || fail "status does not show the guest enforced"
# Its own identifier, the right priorities, each record once, one summary line.
perl -MJSON::PP -e '
    my (%n, @summary);
    while (my $line = <STDIN>) {
        my $e = decode_json($line);
        $n{"$e->{PRIORITY}:$e->{MESSAGE}"}++;
        push @summary, $e if $e->{MESSAGE} =~ /full pass:/;
    }
    die "not three full-pass summaries (the unit, two Perl calls)\n" if @summary != 3;
    for my $e (@summary) {
        die "summary not at info priority\n" if $e->{PRIORITY} != 6;
        die "summary not one key=value line: $e->{MESSAGE}\n" if $e->{MESSAGE} !~ /full pass: (?:\w+=(?:\d+|yes|no) ?)+$/;
    }
    for my $field ("colour", "flavour") {
        my @warn = grep { /^4:.*unknown field .$field. ignored/ } keys %n;
        die "the unknown field $field was not warned about at warning priority, once\n" if @warn != 1 || $n{$warn[0]} != 1;
    }
    my @dup = grep { $n{$_} > 1 && !/full pass:/ } keys %n;
    die "logged twice: @dup\n" if @dup;
' < "$r/journal.json" || fail "journal records"
# A Perl caller (a PVE daemon): the changed config's warning on its stderr
# as a Perl warning, once for two calls (and in the journal, checked above).
echo "-- stderr of the perl caller:"; cat "$r/perl-stderr"
[ "$(grep -c "^microseg group 'g': unknown field 'flavour' ignored$" "$r/perl-stderr")" = 1 ] \
    || fail "the Perl caller did not get the warning once on stderr"
echo "nspawn check: the unit ran before pve-guests once /etc/pve was mounted, enforced veth100i0, logged to the journal"
