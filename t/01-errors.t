#!/usr/bin/perl
# Exceptions, usage errors and hostile input: clear messages, no crash, no
# kernel change.
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
my $good = running_config(
    groups => [[ 'web', 11 ], [ 'db', 20 ]],
    rules => [[ 'r1', 'web', 'db', 1 ]],
    assign => [[ 101, 'web' ], [ 102, 'db' ]],
);
write_config($good);
my $r = PVE::RS::SDN::Microseg::apply_full();
is($r->{loaded}, 1, 'first apply_full loads the programs');
is($r->{nics}, 2, 'two NICs enforced');
# One definition of the result: the hash has exactly the report's fields.
my $fields = PVE::RS::SDN::Microseg::_report_fields();
ok(scalar(@$fields) >= 8 && grep({ $_ eq 'guarded' } @$fields), 'report fields: ' . join(',', @$fields));
is_deeply([ sort keys %$r ], [ sort @$fields ], 'apply_full returns exactly the report fields');
my $state = pin_state();
like($state, qr{links/veth101i0:microseg_enforce}, 'link pins exist');

sub unchanged { is(pin_state(), $state, "$_[0]: pins and run state unchanged") }

# Invalid configs: the section is named, the message ends in "\n".
my @invalid = (
    [ running_config(groups => [[ 'zero', 0 ]]), qr/^microseg: apply_full: running config \S+: microseg group 'zero': mark 0 is outside 1\.\.=65535\n\z/ ],
    [ running_config(groups => [[ 'a', 5 ], [ 'b', 5 ]]), qr/microseg group 'b': mark 5 is already used by group 'a'\n\z/ ],
    [ running_config(groups => [[ 'a', 5, 'b' ], [ 'b', 6, 'a' ]]), qr/microseg group 'a': parent chain forms a cycle \(a -> b -> a\)\n\z/ ],
    [ running_config(groups => [[ 'a', 5 ]], rules => [[ 'rx', 'nope', 'a', 1 ]]), qr/microseg rule 'rx': src names unknown group 'nope'\n\z/ ],
    [ running_config(groups => [[ 'a', 5 ]], assign => [[ 101, 'gone' ]]), qr/microseg assignment 'a101': group names unknown group 'gone'\n\z/ ],
);
for my $case (@invalid) {
    write_config($case->[0]);
    eval { PVE::RS::SDN::Microseg::apply_full() };
    like($@, $case->[1], 'invalid config: ' . ($@ =~ s/\n//r));
    unchanged('invalid config');
    eval { PVE::RS::SDN::Microseg::apply_iface('veth101i0') };
    like($@, qr/^microseg: apply veth101i0: running config .*\n\z/, 'apply_iface on an invalid config dies too');
    unchanged('apply_iface on invalid config');
}

# Unreadable config: a directory where the file should be.
my $cfg = $ENV{PVE_MICROSEG_RUNNING_CONFIG};
unlink($cfg);
mkdir($cfg) or die;
eval { PVE::RS::SDN::Microseg::apply_full() };
like($@, qr/^microseg: apply_full: read running config: \Q$cfg\E is not a regular file\n\z/, 'unreadable config');
unchanged('unreadable config');
rmdir($cfg);
write_config($good);

# Hostile interface names: documented no-ops, nothing touched.
my @hostile = ('', 'tap', 'tap1i', '../../etc/passwd', 'x' x 300, "tap1\0i0", "tap\xff\xfei0", 'tap99999999999i0',
    "veth101i0\0", 'tap01i0', "tap1i0\n", "\x{263a}");
for my $name (@hostile) {
    my $res = eval { PVE::RS::SDN::Microseg::apply_iface($name) };
    is($@, '', 'no exception for ' . (length($name) > 20 ? 'a ' . length($name) . '-byte name' : "'" . ($name =~ s/([^ -~])/sprintf('\\x%02x', ord $1)/ger) . "'"));
    is($res, 'not-guest-nic', '... documented no-op: not-guest-nic');
}
unchanged('hostile names');
is(PVE::RS::SDN::Microseg::apply_iface('tap555i0'), 'unassigned', 'unassigned NIC: no-op');
write_config(running_config(groups => [[ 'web', 11 ], [ 'db', 20 ]], rules => [[ 'r1', 'web', 'db', 1 ]],
    assign => [[ 101, 'web' ], [ 102, 'db' ], [ 103, 'web' ]]));
is(PVE::RS::SDN::Microseg::apply_iface('veth103i0'), 'vanished', 'assigned but absent NIC: no-op');
unchanged('no-op names');
write_config($good);

# Usage errors.
eval { PVE::RS::SDN::Microseg::apply_iface() };
like($@, qr/^Usage: PVE::RS::SDN::Microseg::apply_iface\(iface\)/, 'apply_iface without argument');
eval { PVE::RS::SDN::Microseg::apply_iface('a', 'b') };
like($@, qr/^Usage: PVE::RS::SDN::Microseg::apply_iface\(iface\)/, 'apply_iface with two arguments');
eval { PVE::RS::SDN::Microseg::apply_iface(undef) };
like($@, qr/iface is undefined/, 'apply_iface(undef)');
eval { PVE::RS::SDN::Microseg::apply_iface([]) };
like($@, qr/iface must be a string, not a reference/, 'apply_iface([])');
eval { PVE::RS::SDN::Microseg::apply_full(1) };
like($@, qr/^Usage: PVE::RS::SDN::Microseg::apply_full\(\)/, 'apply_full with an argument');
eval { PVE::RS::SDN::Microseg::clear(1) };
like($@, qr/^Usage: PVE::RS::SDN::Microseg::clear\(\)/, 'clear with an argument');
unchanged('usage errors');

# A pin root that is not a bpffs is refused before anything is written.
{
    local $ENV{PVE_MICROSEG_BPF_ROOT} = "/tmp/microseg-tests/not-bpffs-$$";
    eval { PVE::RS::SDN::Microseg::apply_full() };
    like($@, qr/^microseg: apply_full: BPF pin root \S+ is not on a bpffs/, 'non-bpffs pin root refused');
    rmdir($ENV{PVE_MICROSEG_BPF_ROOT});
}

# Still working after all that.
$r = PVE::RS::SDN::Microseg::apply_full();
is($r->{loaded}, 0, 'apply_full after errors: nothing reloaded');
is($r->{map_writes} + $r->{links_created}, 0, '... nothing written');

done_testing();
