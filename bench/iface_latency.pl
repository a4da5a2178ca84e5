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

my @inproc;
for my $i (1 .. $n_inproc) {
    my $t = time();
    my $r = PVE::RS::SDN::Microseg::apply_iface($i % 2 ? 'veth100i0' : 'tap101i0');
    push @inproc, (time() - $t) * 1e6;
    die "unexpected $r" if $r ne 'enforced';
}
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
print encode_json({
    inproc_calls => $n_inproc, oneshot_calls => $n_oneshot,
    inproc_p50_us => pct(50, @inproc), inproc_p99_us => pct(99, @inproc),
    oneshot_p50_us => pct(50, @oneshot), oneshot_p99_us => pct(99, @oneshot),
}), "\n";
