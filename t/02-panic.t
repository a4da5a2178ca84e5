#!/usr/bin/perl
# A Rust panic arrives in Perl as an exception; the process keeps working.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;

use MicrosegLab;
use PVE::RS::SDN::Microseg;

my $lab = lab_new();
add_veth($lab, 'veth101i0', 1, 1);
write_config(running_config(groups => [[ 'g', 7 ]], assign => [[ 101, 'g' ]]));

eval { PVE::RS::SDN::Microseg::_test_panic() };
like($@, qr/^microseg: test hooks are disabled/, 'the panic hook is off unless asked for');

{
    local $ENV{PVE_MICROSEG_TEST_HOOKS} = 1;
    local $ENV{RUST_BACKTRACE} = 0;
    for my $i (1 .. 3) {
	eval { PVE::RS::SDN::Microseg::_test_panic() };
	is($@, "microseg: internal error (panic): test panic requested through _test_panic\n", "panic $i became an exception");
    }
}
is(PVE::RS::SDN::Microseg::apply_iface('veth101i0'), 'full-pass', 'the next call works (first plug installs)');
is(PVE::RS::SDN::Microseg::apply_iface('veth101i0'), 'enforced', 'and the one after');

done_testing();
