#!/usr/bin/perl
# The microseg demo: a simulated Proxmox VE node in network namespaces, the
# library driven in-process from Perl as pve-network drives it, and the
# connectivity matrix measured with real packets beside the one the policy
# predicts. Exits non-zero on any mismatch. Cleans up on exit and on Ctrl-C.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use JSON::PP;
use Socket ();
use MicrosegLab;
use PVE::RS::SDN::Microseg;

# Ctrl-C: exit through MicrosegLab's END block, which removes namespaces,
# mounts and pins. Once exiting, further signals are ignored.
$SIG{INT} = $SIG{TERM} = sub { $SIG{INT} = $SIG{TERM} = 'IGNORE'; print "\ninterrupted, cleaning up\n"; exit 130 };
$| = 1;

# The SDN running config as pve-network writes it: zones, vnets and subnets
# beside the microseg section (only that one is read).
my @groups = (
    [ 'dmz', 100 ], [ 'web', 101, 'dmz' ],
    [ 'app', 200 ], [ 'api', 201, 'app' ], [ 'worker', 202, 'app' ],
    [ 'db', 300 ], [ 'dbprimary', 301, 'db' ],
    [ 'mgmt', 900 ],
);
# The policy is stateful: a rule says who may open flows toward whom, and
# the replies come back without a rule of their own.
my @rules = (
    [ 'gw-to-dmz', undef, 'dmz', 1 ],      # host and gateway (unstamped) reach the DMZ
    [ 'dmz-to-app', 'dmz', 'app', 1 ],     # one way: app answers, but opens nothing toward dmz
    [ 'app-to-db', 'app', 'db', 1 ],
    [ 'db-to-app', 'db', 'app', 1 ],
    [ 'worker-to-db', 'worker', 'db', 0 ], # more specific source: workers may not
    [ 'mgmt-to-dmz', 'mgmt', 'dmz', 1 ],
    [ 'mgmt-to-app', 'mgmt', 'app', 1 ],
    [ 'mgmt-dns-db', 'mgmt', 'dbprimary', 1, 'udp', '53' ], # one port only, one way
);
my @assign = ([ 100, 'web' ], [ 101, 'web' ], [ 102, 'web' ], [ 200, 'api' ], [ 202, 'worker' ],
    [ 300, 'dbprimary' ], [ 301, 'db' ], [ 900, 'mgmt' ]);
my $config = running_config(groups => \@groups, rules => \@rules, assign => \@assign);
$config =~ s/"zones": \{"ids": \{"z1": \{"type": "simple"\}\}\}/"zones": {"ids": {"z1": {"type": "vxlan", "peers": "192.0.2.1,192.0.2.2", "mtu": 1450}}}/;
$config =~ s/\}\}\},\s*"microseg"/}}}, "subnets": {"ids": {"z1-10.77.0.0-24": {"type": "subnet", "vnet": "v1", "gateway": "10.77.0.254"}}}, "microseg"/;

print "== microseg demo: a simulated Proxmox VE node ==\n\n";
my $lab = lab_new();
print "node: bridge vmbr0 (the VNet), host address 10.77.0.254 on it (unstamped)\n";
write_config($config);
print "running config: $ENV{PVE_MICROSEG_RUNNING_CONFIG}\n\n";

my @guests = (
    [ 'tap100i0', 10 ], [ 'tap101i0', 11 ], [ 'veth200i0', 20 ], [ 'tap202i0', 22 ],
    [ 'veth300i0', 30 ], [ 'veth301i0', 31 ], [ 'veth900i0', 90 ],
);
for my $g (@guests) {
    my ($name, $host) = @$g;
    if ($name =~ /^tap/) { add_tap($lab, $name, $host, 1) } else { add_veth($lab, $name, $host, 1) }
}
print "guests: ", join(', ', map { $_->[0] } @guests), "\n";

my $r = PVE::RS::SDN::Microseg::apply_full();
printf "apply_full(): programs loaded: %s, %d map entries written, %d links attached, %d NICs enforced\n",
    $r->{loaded} ? 'yes' : 'no', $r->{map_writes}, $r->{links_created}, $r->{nics};

# A VM starts: QEMU creates its tap, pve-bridge calls tap_plug, which calls apply_iface.
my $fh = MicrosegLab::open_tap('tap102i0');
run('ip link set tap102i0 master vmbr0');
my $res = PVE::RS::SDN::Microseg::apply_iface('tap102i0');
run('ip link set tap102i0 up');
add_tap($lab, 'tap102i0', 12, 0, $fh);
print "tap_plug tap102i0 -> apply_iface: $res\n\n";

# Address resolution follows the policy: a scan from a db guest with its
# neighbour table emptied, before any traffic (a guest that talks to the
# scanner would answer it), resolves only the guests it may open flows to.
print "ARP scan from veth301i0 (db), static neighbour entries removed:\n";
neighbours_of($lab, 'veth301i0', 1);
my $scanner = udp_socket_in($lab, 'veth301i0', 0);
my %targets = ('veth200i0' => 20, 'veth300i0' => 30, 'veth900i0' => 90);
for my $host (values %targets) {
    send($scanner, 'scan', 0, Socket::pack_sockaddr_in(9, Socket::inet_aton("10.77.0.$host")));
}
sleep(3);
my %found = map { $_ => 1 } neighbours_of($lab, 'veth301i0', 0);
my $ok_scan = 1;
for my $t (sort keys %targets) {
    my $addr = "10.77.0.$targets{$t}";
    my $expect = $t eq 'veth200i0';
    $ok_scan &&= ($found{$addr} ? 1 : 0) == $expect;
    printf "  %-10s %-12s %s (expected %s)\n", $t, $addr, $found{$addr} ? 'resolved' : 'not found',
	$expect ? 'resolved: db may open flows toward app' : 'not found: db may open nothing toward it';
}
# The static entries again: the tap guests of the demo do not answer ARP themselves.
MicrosegLab::_neighbours($lab);
print "\n";

# What the policy predicts, from the library's own resolution.
my $policy = decode_json(PVE::RS::SDN::Microseg::effective_policy_json());
my %group_of_mark = map { $policy->{groups}{$_} => $_ } keys %{$policy->{groups}};
my @names = map { $_->{name} } @{$lab->{eps}};
my %want;
for my $s (@names) {
    for my $d (@names) {
	next if $s eq $d;
	my $sm = $policy->{nics}{$s} // 0;
	my $dm = $policy->{nics}{$d};
	$want{"$s>$d"} = !defined($dm) ? 1 : (($policy->{pairs}{"$sm:$dm"} // 'none') eq 'allow' ? 1 : 0);
    }
}

my $got = measure($lab);

my $label = sub { my $n = shift; my $m = $policy->{nics}{$n}; defined($m) ? "$n($group_of_mark{$m})" : "$n(-)" };
my $w = 21;
print "measured with real packets (one UDP datagram per direction), expected from the policy:\n";
print "  pass = delivered, drop = dropped, '!' marks a mismatch\n\n";
printf "%-${w}s", 'src \\ dst';
printf "%-${w}s", $label->($_) for @names;
print "\n";
my $mismatches = 0;
for my $s (@names) {
    printf "%-${w}s", $label->($s);
    for my $d (@names) {
	if ($s eq $d) { printf "%-${w}s", '.'; next }
	my ($g, $e) = ($got->{"$s>$d"}, $want{"$s>$d"});
	my $cell = ($g ? 'pass' : 'drop') . ($g == $e ? '' : ' ! want ' . ($e ? 'pass' : 'drop'));
	$mismatches++ if $g != $e;
	printf "%-${w}s", $cell;
    }
    print "\n";
}

print "\nhighlights:\n";
my @highlights = (
    [ 'tap100i0>veth200i0', 'allowed pair: web -> api via dmz -> app (nested: web is in dmz, api in app)' ],
    [ 'veth200i0>tap100i0', 'one way: api opens nothing toward web (no app -> dmz rule; replies would pass)' ],
    [ 'tap100i0>veth300i0', 'denied pair: web -> dbprimary, no rule (default deny)' ],
    [ 'veth200i0>veth300i0', 'nested inheritance: api -> dbprimary via app -> db' ],
    [ 'tap202i0>veth300i0', 'more specific source wins: worker -> db deny beats app -> db allow' ],
    [ 'host>tap101i0', 'unstamped source: host -> web via the (unstamped) -> dmz rule' ],
    [ 'host>veth200i0', 'unstamped source without a rule: host -> api dropped' ],
    [ 'tap102i0>veth200i0', 'the guest plugged through apply_iface is stamped: web -> api' ],
    [ 'veth301i0>tap102i0', 'and enforced: db -> web has no rule' ],
);
for my $h (@highlights) {
    my ($pair, $text) = @$h;
    printf "  %-22s %-5s (expected %-4s) %s\n", $pair, $got->{$pair} ? 'pass' : 'drop', $want{$pair} ? 'pass' : 'drop', $text;
}

my $total = scalar(keys %want);
my $passing = grep { $want{$_} } keys %want;
printf "\n%d pairs measured, %d expected to pass, %d to drop: %s\n", $total, $passing, $total - $passing,
    $mismatches ? "$mismatches MISMATCHES" : 'all match the policy';

# Stateful: mgmt may open udp/53 toward dbprimary, and nothing else; the
# answer comes back, dbprimary opens nothing toward mgmt.
print "\nstateful: rule mgmt-dns-db lets mgmt open udp/53 toward dbprimary, one way\n";
my $wait_for = sub {
    my ($sock) = @_;
    for (1 .. 50) {
	my $from = recv($sock, my $buf, 256, 0);
	return ($buf, $from) if defined($from);
	select(undef, undef, undef, 0.02);
    }
    return;
};
my $dns = udp_socket_in($lab, 'veth300i0', 53);
my $client = udp_socket_in($lab, 'veth900i0', 0);
send($client, 'query', 0, Socket::pack_sockaddr_in(53, Socket::inet_aton('10.77.0.30')));
my ($q, $asker) = $wait_for->($dns);
my $ok_request = defined($q) && $q eq 'query';
printf "  %-5s mgmt (veth900i0) -> dbprimary (veth300i0) udp/53: the request arrives\n", $ok_request ? 'pass' : 'drop';
my $ok_reply = 0;
if ($ok_request) {
    send($dns, 'answer', 0, $asker);
    my ($a) = $wait_for->($client);
    $ok_reply = defined($a) && $a eq 'answer';
}
printf "  %-5s dbprimary -> mgmt: the answer comes back as a reply (no rule db -> mgmt)\n", $ok_reply ? 'pass' : 'drop';
my $opener = udp_socket_in($lab, 'veth300i0', 0);
send($opener, 'unasked', 0, Socket::pack_sockaddr_in((Socket::unpack_sockaddr_in(getsockname($client)))[0], Socket::inet_aton('10.77.0.90')));
my ($u) = $wait_for->($client);
my $ok_one_way = !defined($u);
printf "  %-5s dbprimary -> mgmt from another port: not a reply, no rule: dropped\n", $ok_one_way ? 'drop' : 'pass';

my $stateful_ok = $ok_request && $ok_reply && $ok_one_way && $ok_scan;
print "\nstateful checks: ", ($stateful_ok ? 'all as the policy says' : 'MISMATCH'), "\n";
$SIG{INT} = $SIG{TERM} = 'IGNORE';
exit($mismatches || !$stateful_ok ? 1 : 0);
