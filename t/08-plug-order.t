#!/usr/bin/perl
# The documented pve-network hook, in PVE's own order: QEMU's network script
# (or lxcnetaddbr) has created the NIC and set it up; then
# PVE::Network::SDN::Zones::tap_plug calls apply_iface, and only then does
# PVE::Network::tap_plug enslave the NIC: to the bridge, or with firewall=1 to
# fwbr<vmid>i<n>, which the fwpr<vmid>p<n>/fwln<vmid>i<n> veth pair joins to
# the bridge. A guest is never on a bridge unenforced.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;

use MicrosegLab;
use PVE::RS::SDN::Microseg;

# Both programs of the NIC are pinned as links, attached to it.
sub links_of {
    my ($iface) = @_;
    # pin_state lines are <path>:<inode>.
    return join(" ", sort map { m{/links/\Q$iface\E:(\w+):\d+$} ? $1 : () } split(/\n/, MicrosegLab::pin_state()));
}

sub master_of {
    my ($iface) = @_;
    my $out = `ip -o link show $iface`;
    return $out =~ /\bmaster (\S+)/ ? $1 : '';
}

# What the README's hook does, in tap_plug's order.
sub pve_tap_plug {
    my ($iface, $bridge, $firewall) = @_;
    die "$iface is not up\n" if `ip -o link show $iface` !~ /[<,]UP[,>]/;
    my $res = PVE::RS::SDN::Microseg::apply_iface($iface);
    # Enforced before it joins any bridge.
    is(master_of($iface), '', "$iface: on no bridge while apply_iface ran");
    is(links_of($iface), 'microseg_enforce microseg_stamp', "$iface: both programs attached before enslaving");
    if ($firewall) {
	my ($vmid, $n) = $iface =~ /^(?:tap|veth)(\d+)i(\d+)$/ or die "not a guest NIC: $iface\n";
	my ($fwbr, $fwpr, $fwln) = ("fwbr${vmid}i$n", "fwpr${vmid}p$n", "fwln${vmid}i$n");
	run("ip link add $fwbr type bridge && ip link set $fwbr up");
	run("ip link add $fwpr type veth peer name $fwln");
	run("ip link set $fwpr master $bridge && ip link set $fwpr up");
	run("ip link set $fwln master $fwbr && ip link set $fwln up");
	run("ip link set $iface master $fwbr");
    } else {
	run("ip link set $iface master $bridge");
    }
    return $res;
}

my $lab = lab_new();
write_config(three_tier_config());

# A VM on the plain bridge, a VM with firewall=1, a container on the plain bridge.
my $fh101 = MicrosegLab::open_tap('tap101i0');
run('ip link set tap101i0 up');
is(pve_tap_plug('tap101i0', 'vmbr0', 0), 'full-pass', 'tap101i0: the first plug on the node installs the programs');
add_tap($lab, 'tap101i0', 1, 0, $fh101);
my $fh102 = MicrosegLab::open_tap('tap102i0');
run('ip link set tap102i0 up');
is(pve_tap_plug('tap102i0', 'vmbr0', 1), 'enforced', 'tap102i0 (firewall=1) enforced');
is(master_of('tap102i0'), 'fwbr102i0', 'tap102i0 sits on its firewall bridge');
is(master_of('fwpr102p0'), 'vmbr0', 'fwpr102p0 joins the firewall bridge to vmbr0');
add_tap($lab, 'tap102i0', 2, 0, $fh102);
add_veth($lab, 'veth103i0', 3, 0);
run('ip link set veth103i0 up');
is(pve_tap_plug('veth103i0', 'vmbr0', 0), 'enforced', 'veth103i0 enforced');

my %want = (
    'host>tap101i0' => 1, 'host>tap102i0' => 0, 'host>veth103i0' => 0,
    'tap101i0>host' => 1, 'tap101i0>tap102i0' => 1, 'tap101i0>veth103i0' => 1,
    'tap102i0>host' => 1, 'tap102i0>tap101i0' => 0, 'tap102i0>veth103i0' => 0,
    'veth103i0>host' => 1, 'veth103i0>tap101i0' => 1, 'veth103i0>tap102i0' => 0,
);
my $got = measure($lab);
is_deeply($got, \%want, 'the matrix equals the policy, through the firewall bridge too') or diag(matrix_string($lab, $got));

PVE::RS::SDN::Microseg::clear();
done_testing();
