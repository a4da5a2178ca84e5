#!/usr/bin/perl
# simulate(): which rule decides a flow and why, without touching anything;
# it agrees with what the node measures, and names groups or NICs.
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
add_veth($lab, 'veth103i0', 3, 1);
write_config(running_config(
    groups => [[ 'app', 10 ], [ 'web', 11, 'app' ], [ 'db', 20 ]],
    rules => [
	[ 'app-db', 'app', 'db', 1 ],
	[ 'web-db-ssh', 'web', 'db', 0, 'tcp', '22' ],
	[ 'gw', undef, 'web', 1, 'udp', '5555' ],
    ],
    assign => [[ 101, 'web' ], [ 102, 'db' ]],
));
my $before = pin_state();

my $s = PVE::RS::SDN::Microseg::simulate('web', 'db', 'tcp', 22);
is_deeply([ sort keys %$s ], [qw(audit reason rule verdict)], 'the hash has the keys SPEC section 7 names');
is($s->{verdict}, 'deny', 'web -> db tcp/22: deny');
is($s->{rule}, 'web-db-ssh', '... by the dport rule');
like($s->{reason}, qr/^rule 'web-db-ssh' is the most specific match: destination distance 0, source distance 0, a dport match/, '... and why');
is($s->{audit}, 0, 'audit flag');

$s = PVE::RS::SDN::Microseg::simulate('veth101i0', 'veth102i0', 'tcp', '443');
is_deeply([ @$s{qw(verdict rule)} ], [ 'allow', 'app-db' ], 'NIC names: web -> db tcp/443 allowed by the inherited rule');
like($s->{reason}, qr/source distance 1, no L4 match/, '... inherited from the parent');

$s = PVE::RS::SDN::Microseg::simulate(undef, 'web', 'udp', 5555);
is_deeply([ @$s{qw(verdict rule)} ], [ 'allow', 'gw' ], 'undef source: unstamped');
$s = PVE::RS::SDN::Microseg::simulate('', 'web', 'udp');
is_deeply([ @$s{qw(verdict rule)} ], [ 'deny', undef ], "'' source, no port: no rule matches");
is($s->{reason}, 'no rule matches: default deny', '... and it says so');
$s = PVE::RS::SDN::Microseg::simulate('db', 'veth103i0');
is($s->{verdict}, 'allow', 'an unassigned NIC is not enforced');
like($s->{reason}, qr/not assigned/, '... and it says so');

# simulate agrees with what the node measures (UDP to port 5555 on every pair).
PVE::RS::SDN::Microseg::apply_full();
my $m = measure($lab);
for my $pair (sort keys %$m) {
    my ($src, $dst) = split />/, $pair;
    next if $dst eq 'host';
    my $sim = PVE::RS::SDN::Microseg::simulate($src eq 'host' ? '' : $src, $dst, 'udp', 5555);
    is($m->{$pair} ? 'allow' : 'deny', $sim->{verdict}, "measured $pair equals simulate ($sim->{verdict})");
}

# Errors name what is wrong; nothing is touched.
for my $case (
    [ [ 'web', 'nope', undef, undef ], qr/^microseg: simulate: dst 'nope' is neither a group nor a guest NIC\n\z/ ],
    [ [ 'web', 'db', 'tpc', undef ], qr/unknown proto 'tpc'/ ],
    [ [ 'web', 'db', 'icmp', 80 ], qr/dport needs proto tcp, udp or sctp/ ],
    [ [ 'web', 'db', 'tcp', 'x' ], qr/'x' is not a port/ ],
) {
    eval { PVE::RS::SDN::Microseg::simulate(@{$case->[0]}) };
    like($@, $case->[1], 'error: ' . ($@ =~ s/\n//r));
}
eval { PVE::RS::SDN::Microseg::simulate('web') };
like($@, qr/^Usage: PVE::RS::SDN::Microseg::simulate\(src, dst, proto, dport\)/, 'usage');
PVE::RS::SDN::Microseg::clear();
write_config(running_config(groups => [[ 'app', 10 ]], assign => []));
my $state = pin_state();
PVE::RS::SDN::Microseg::simulate('app', 'app', undef, undef) for 1 .. 3;
is(pin_state(), $state, 'simulate changes no kernel state');

done_testing();
