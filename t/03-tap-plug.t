#!/usr/bin/perl
# A simulated tap_plug for a veth and a real tap, and a simulated SDN reload:
# real traffic shows the policy each time.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;

use MicrosegLab;
use PVE::RS::SDN::Microseg;

# A NIC that QEMU or LXC has just created and set up, plugged with the
# README's hook: enforced by apply_iface before it joins the VNet's bridge
# (t/08-plug-order.t checks each step of that order).
sub sim_tap_plug {
    my ($iface, $bridge) = @_;
    run("ip link set $iface up");
    my $res = PVE::RS::SDN::Microseg::apply_iface($iface);
    run("ip link set $iface master $bridge");
    return $res;
}

my $lab = lab_new();
write_config(three_tier_config());

# The guests appear one by one, as at VM and container start.
add_veth($lab, 'veth101i0', 1, 0);
is(sim_tap_plug('veth101i0', 'vmbr0'), 'full-pass', 'first plug on the node installs the programs');
add_tap($lab, 'tap102i0', 2, 0);
is(sim_tap_plug('tap102i0', 'vmbr0'), 'enforced', 'tap guest plugged and enforced');
add_veth($lab, 'veth103i0', 3, 0);
is(sim_tap_plug('veth103i0', 'vmbr0'), 'enforced', 'veth guest plugged and enforced');

my %want = (
    'host>veth101i0' => 1, 'host>tap102i0' => 0, 'host>veth103i0' => 0,
    'veth101i0>host' => 1, 'veth101i0>tap102i0' => 1, 'veth101i0>veth103i0' => 1,
    'tap102i0>host' => 1, 'tap102i0>veth101i0' => 0, 'tap102i0>veth103i0' => 0,
    'veth103i0>host' => 1, 'veth103i0>veth101i0' => 1, 'veth103i0>tap102i0' => 0,
);
my $got = measure($lab);
is_deeply($got, \%want, 'measured matrix equals the policy after tap_plug') or diag(matrix_string($lab, $got));

# SDN reload: db may now reach web (more specific than db -> app deny), the
# host may no longer.
write_config(three_tier_config([ 'web-db', 'web', 'db', 1 ], [ 'db-app', 'db', 'app', 0 ], [ 'db-web', 'db', 'web', 1 ],
    [ 'app-app', 'app', 'app', 1 ]));
my $r = PVE::RS::SDN::Microseg::apply_full();
is($r->{loaded}, 0, 'reload: no program reloaded');
ok($r->{map_writes} >= 1 && $r->{map_deletes} >= 1, "reload: rule map synced ($r->{map_writes} written, $r->{map_deletes} removed)");
$want{'tap102i0>veth101i0'} = 1;
$want{'host>veth101i0'} = 0;
$got = measure($lab);
is_deeply($got, \%want, 'measured matrix follows the reloaded policy') or diag(matrix_string($lab, $got));

PVE::RS::SDN::Microseg::clear();
$got = measure($lab);
is_deeply([ grep { !$got->{$_} } sort keys %$got ], [], 'clear: everything passes again');
PVE::RS::SDN::Microseg::clear();
is(MicrosegLab::pin_state(), '', 'clear: no pins, no run state; a second clear is fine');

done_testing();
