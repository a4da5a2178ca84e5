#!/usr/bin/perl
# status(): what is enforced on this node, as the hash SPEC section 7 names,
# with counters that follow real packets and warnings for what is not enforced.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;

use MicrosegLab;
use PVE::RS::SDN::Microseg;

my $lab = lab_new();
add_veth($lab, 'veth101i0', 1, 1);
add_veth($lab, 'veth102i0', 2, 1);
add_tap($lab, 'tap103i0', 3, 1);
write_config(running_config(
    groups => [[ 'web', 11 ], [ 'db', 20 ]],
    rules => [[ 'web-db', 'web', 'db', 1, 'udp', '5555' ]],
    assign => [[ 101, 'web' ], [ 102, 'db' ], [ 103, 'db' ]],
));
# No IPv6 anywhere (router solicitations, neighbour discovery, MLD): the
# only packets are the measurement's, so the counters can be exact.
for my $ns ('', map { $_->{ns} // () } @{$lab->{eps}}) {
    my $exec = $ns ? "ip netns exec $ns " : '';
    system("${exec}sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1") == 0 or die;
}
select(undef, undef, undef, 1.5);
PVE::RS::SDN::Microseg::apply_full();
# A first round teaches the bridge every MAC: later frames go to their port
# only (until then the bridge floods them to every port, and every NIC's
# egress counts them).
measure($lab);
my $s0 = PVE::RS::SDN::Microseg::status();
my $m = measure($lab);

my $s = PVE::RS::SDN::Microseg::status();
my %nic0 = map { $_->{name} => $_ } @{$s0->{nics}};
is_deeply([ sort keys %$s ], [qw(flows nics rules subsystems underlay warnings)], 'the top-level keys of SPEC section 7');
my %nic = map { $_->{name} => $_ } @{$s->{nics}};
is_deeply([ sort keys %nic ], [qw(tap103i0 veth101i0 veth102i0)], 'every guest NIC');
my $db = $nic{veth102i0};
is_deeply([ @$db{qw(group mark audit enforced)} ], [ 'db', 20, 0, 1 ], 'group, mark, audit, enforced');
ok($db->{ifindex} > 0, 'ifindex');
is_deeply([ sort keys %{$db->{counters}} ], [qw(allowed audited blocked dropped replied unrecorded)], 'counter columns');
# measure() sends two datagrams per ordered pair.
my $c0 = $nic0{veth102i0}{counters};
is($db->{counters}{allowed} - $c0->{allowed}, 2, 'web -> db: two datagrams allowed');
is($db->{counters}{dropped} - $c0->{dropped}, 2 * 2, 'tap103i0 and the host -> db: dropped');
is($db->{counters}{replied} - $c0->{replied}, 0, 'nothing answered');
is($s->{rules}{'web-db'}{hits} - $s0->{rules}{'web-db'}{hits}, 2 + 2, 'web-db decided the datagrams to both db NICs');
ok($s->{flows}{capacity} == 65536 && $s->{flows}{entries} >= 1, 'flow table entries and capacity');
is($s->{subsystems}{microseg}{loaded}, 1, 'microseg loaded');
ok($s->{subsystems}{microseg}{version}, 'with its version');
is_deeply($s->{warnings}, [], 'nothing to warn about');

# A NIC restarted without apply_iface.
system("ip link del tap103i0") == 0 or die;
add_tap($lab, 'tap103i0', 3, 1);
$s = PVE::RS::SDN::Microseg::status();
like($s->{warnings}[0], qr/^tap103i0: assigned to group db but carries no microseg programs: it was re-created/, 'a re-created NIC is warned about');
PVE::RS::SDN::Microseg::apply_iface('tap103i0');
is_deeply(PVE::RS::SDN::Microseg::status()->{warnings}, [], '... until apply_iface');

PVE::RS::SDN::Microseg::clear();
$s = PVE::RS::SDN::Microseg::status();
is($s->{subsystems}{microseg}{loaded}, 0, 'after clear: not loaded');
like($s->{warnings}[0], qr/assigned to group \w+ but microseg is not loaded on this node/, '... and assigned NICs are warned about');

done_testing();
