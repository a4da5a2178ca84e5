#!/usr/bin/perl
# apply_iface latency, called in-process from Perl (as tap_plug does) and as
# a one-shot process per call (the fork/exec model of a command-line agent,
# here the pve-microseg CLI doing the same work). Prints one JSON line.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use JSON::PP;
use Time::HiRes qw(time);

use MicrosegLab;
use PVE::RS::SDN::Microseg;

my ($n_inproc, $n_oneshot) = (5000, 300);
my $cli = $ENV{BENCH_CLI} or die "BENCH_CLI: path of pve-microseg\n";

my $lab = lab_new();
add_veth($lab, 'veth100i0', 1, 1);
add_tap($lab, 'tap101i0', 2, 1);
write_config(running_config(groups => [[ 'a', 1 ], [ 'b', 2 ]], rules => [[ 'r', 'a', 'b', 1 ]],
    assign => [[ 100, 'a' ], [ 101, 'b' ]]));
PVE::RS::SDN::Microseg::apply_full();

sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[int($p / 100 * $#v + 0.5)];
}

# $n_inproc in-process calls on the two enforced NICs: each call's µs.
sub time_apply_iface {
    my @us;
    for my $i (1 .. $n_inproc) {
	my $t = time();
	my $r = PVE::RS::SDN::Microseg::apply_iface($i % 2 ? 'veth100i0' : 'tap101i0');
	push @us, (time() - $t) * 1e6;
	die "unexpected $r" if $r ne 'enforced';
    }
    return @us;
}

my @inproc = time_apply_iface();
# The CLI's one line of output goes to /dev/null; list-form system() execs
# the CLI directly, with no shell in between.
open(my $stdout, '>&', \*STDOUT) or die;
open(STDOUT, '>', '/dev/null') or die;
my @oneshot;
for my $i (1 .. $n_oneshot) {
    my $t = time();
    system($cli, 'apply-iface', $i % 2 ? 'veth100i0' : 'tap101i0') == 0 or die "cli failed\n";
    push @oneshot, (time() - $t) * 1e6;
}
open(STDOUT, '>&', $stdout) or die;

# The same with a running config of about 10 MB: 5,000 groups, 100,000
# rules, 20,000 assignments (the two NICs among them).
my @groups = map { [ "g$_", $_ ] } 1 .. 5000;
my @rules = map { [ "r$_", 'g' . (1 + $_ % 5000), 'g' . (1 + ($_ * 7919 + int($_ / 5000)) % 5000), 1 ] } 1 .. 100_000;
my @assign = ([ 100, 'g1' ], [ 101, 'g2' ], map { [ 1000 + $_, 'g' . (1 + $_ % 5000) ] } 1 .. 19_998);
my $big = running_config(groups => \@groups, rules => \@rules, assign => \@assign);
printf STDERR "iface_latency: %.1f MB config\n", length($big) / 1e6;
write_config($big);
my $t0 = time();
PVE::RS::SDN::Microseg::apply_full();
my $full_big_ms = (time() - $t0) * 1e3;
$t0 = time();
PVE::RS::SDN::Microseg::apply_full();
my $noop_big_ms = (time() - $t0) * 1e3;
printf STDERR "iface_latency: apply_full %.0f ms, no-op %.0f ms\n", $full_big_ms, $noop_big_ms;
my @big = time_apply_iface();
# Changed since the last full pass: the config is read (the slow path).
write_config($big . ' ');
my @changed;
for my $i (1 .. 20) {
    my $t = time();
    PVE::RS::SDN::Microseg::apply_iface('veth100i0');
    push @changed, (time() - $t) * 1e6;
}
PVE::RS::SDN::Microseg::clear();
print encode_json({
    inproc_calls => $n_inproc, oneshot_calls => $n_oneshot,
    inproc_p50_us => pct(50, @inproc), inproc_p99_us => pct(99, @inproc),
    oneshot_p50_us => pct(50, @oneshot), oneshot_p99_us => pct(99, @oneshot),
    config_bytes => length($big), full_big_ms => $full_big_ms, noop_big_ms => $noop_big_ms,
    big_p50_us => pct(50, @big), big_p99_us => pct(99, @big),
    changed_p50_us => pct(50, @changed),
}), "\n";
