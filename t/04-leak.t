#!/usr/bin/perl
# In one perl process, 10,000 apply_iface, 200 apply_full, 10,000 simulate and 10,000 status
# calls leave no descriptor, thread or memory behind.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);

use MicrosegLab;
use PVE::RS::SDN::Microseg;

sub fds { opendir(my $d, '/proc/self/fd') or die; my $n = grep { /^\d+$/ } readdir($d); return $n - 1 }
sub status {
    my ($key) = @_;
    open(my $fh, '<', '/proc/self/status') or die;
    while (<$fh>) { return $1 if /^\Q$key\E:\s+(\d+)/ }
    die "no $key";
}
sub figures { return { fds => fds(), threads => status('Threads'), rss_kb => status('VmRSS') } }

my $lab = lab_new();
add_veth($lab, 'veth101i0', 1, 1);
add_tap($lab, 'tap102i0', 2, 1);
my $good = running_config(groups => [[ 'a', 1 ], [ 'b', 2, 'a' ]], rules => [[ 'r', 'a', 'b', 1 ]],
    assign => [[ 101, 'a' ], [ 102, 'b' ]]);
write_config($good);
PVE::RS::SDN::Microseg::apply_full();

# Every path once before measuring: allocator arenas and lazily initialised
# runtime state (the first error may symbolise a backtrace) are not leaks.
sub error_path {
    my ($n) = @_;
    write_config('{ broken');
    for (1 .. $n) { eval { PVE::RS::SDN::Microseg::apply_iface('veth101i0') }; die "no error" if !$@ }
    write_config($good);
}
for (1 .. 200) { PVE::RS::SDN::Microseg::apply_iface($_ % 2 ? 'veth101i0' : 'tap102i0') }
for (1 .. 20) { PVE::RS::SDN::Microseg::apply_full() }
for (1 .. 200) { PVE::RS::SDN::Microseg::simulate('veth101i0', 'tap102i0', 'udp', 53) }
for (1 .. 200) { PVE::RS::SDN::Microseg::status() }
error_path(50);

my $before = figures();
my $t0 = time();
for my $i (1 .. 10_000) {
    my $r = PVE::RS::SDN::Microseg::apply_iface($i % 2 ? 'veth101i0' : 'tap102i0');
    die "apply_iface: $r" if $r ne 'enforced';
}
my $t1 = time();
for (1 .. 200) { PVE::RS::SDN::Microseg::apply_full() }
my $t2 = time();
for (1 .. 10_000) {
    my $s = PVE::RS::SDN::Microseg::simulate('veth101i0', 'tap102i0', 'udp', 53);
    die "simulate: no verdict" if !$s->{verdict};
}
my $t3 = time();
for (1 .. 10_000) {
    my $s = PVE::RS::SDN::Microseg::status();
    die "status: no NICs" if @{$s->{nics}} != 2;
}
my $t4 = time();
# Errors must not leak either.
error_path(1000);
my $after = figures();

diag(sprintf("10,000 apply_iface: %.3f s (%.1f us/call); 200 apply_full: %.3f s (%.2f ms/call); "
    . "10,000 simulate: %.3f s; 10,000 status: %.3f s (%.1f us/call)",
    $t1 - $t0, ($t1 - $t0) * 1e6 / 10_000, $t2 - $t1, ($t2 - $t1) * 1e3 / 200, $t3 - $t2, $t4 - $t3,
    ($t4 - $t3) * 1e6 / 10_000));
diag(sprintf("before: %d fds, %d threads, %d KiB RSS; after: %d fds, %d threads, %d KiB RSS",
    @$before{qw(fds threads rss_kb)}, @$after{qw(fds threads rss_kb)}));
is($after->{fds}, $before->{fds}, 'no file descriptor leaked');
is($after->{threads}, $before->{threads}, 'no thread left behind');
# RSS moves by allocator page granularity; a leak of even 64 bytes per call
# would show as over 700 KiB here.
cmp_ok($after->{rss_kb} - $before->{rss_kb}, '<=', 256, 'RSS did not grow (within 256 KiB of allocator noise)');

done_testing();
