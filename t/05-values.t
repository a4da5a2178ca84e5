#!/usr/bin/perl
# Arguments behave as Perl values do: $1, substrings, tied scalars and
# objects with string overloading give exactly what the plain string gives,
# and get-magic runs once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;

use MicrosegLab;
use PVE::RS::SDN::Microseg;

package CountingTie {
    sub TIESCALAR { my ($class, $v) = @_; return bless { v => $v, fetches => 0 }, $class }
    sub FETCH { my $self = shift; $self->{fetches}++; return $self->{v} }
    sub STORE { $_[0]{v} = $_[1] }
}

package Stringy {
    use overload '""' => sub { $_[0]{name} }, fallback => 1;
    sub new { my ($class, $name) = @_; return bless { name => $name }, $class }
}

package main;

my $lab = lab_new();
add_veth($lab, 'veth101i0', 1, 1);
write_config(running_config(groups => [[ 'g', 7 ]], rules => [], assign => [[ 101, 'g' ]]));
PVE::RS::SDN::Microseg::apply_full();

for my $name ('veth101i0', 'tap555i0', 'eth0') {
    my $plain = PVE::RS::SDN::Microseg::apply_iface($name);

    "iface=$name;" =~ /=(\w+);/ or die;
    is(PVE::RS::SDN::Microseg::apply_iface($1), $plain, "$name: \$1 as the plain string ($plain)");

    my $long = "xx${name}yy";
    is(PVE::RS::SDN::Microseg::apply_iface(substr($long, 2, length($name))), $plain, "$name: substr");

    tie my $tied, 'CountingTie', $name;
    is(PVE::RS::SDN::Microseg::apply_iface($tied), $plain, "$name: tied scalar");
    is((tied $tied)->{fetches}, 1, "$name: tied scalar fetched once");

    is(PVE::RS::SDN::Microseg::apply_iface(Stringy->new($name)), $plain, "$name: object with string overloading");
}

# A call's warnings reach the caller as Perl warnings (the PVE task log).
{
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    my $cfg = running_config(groups => [[ 'g', 7 ]], assign => [[ 101, 'g' ]]);
    $cfg =~ s/"microseg": \{"ids": \{/"microseg": {"ids": {"guard": {"type": "vtep-guard", "ifaces": "nosuch0"}, "x": {"type": "future-thing"},/
	or die "no microseg key";
    write_config($cfg);
    my $r = PVE::RS::SDN::Microseg::apply_full();
    is($r->{guarded}, 0, 'no underlay interface guarded');
    is_deeply([ sort @warnings ], [
	"microseg section 'x': unknown type 'future-thing' ignored\n",
	"microseg: vtep guard: underlay interface nosuch0 does not exist on this node\n",
    ], 'warnings raised with warn(), each once, ending in a newline') or diag(explain(\@warnings));

    # The same config again: what it carries that is ignored is not reported again.
    @warnings = ();
    PVE::RS::SDN::Microseg::apply_full();
    PVE::RS::SDN::Microseg::apply_iface('veth101i0');
    is_deeply([ sort @warnings ], [
	"microseg: vtep guard: underlay interface nosuch0 does not exist on this node\n",
    ], 'the unknown type is reported once per config change') or diag(explain(\@warnings));
    # A changed config: reported again.
    $cfg =~ s/"version": 5/"version": 6/ or die;
    write_config($cfg);
    @warnings = ();
    PVE::RS::SDN::Microseg::apply_iface('veth101i0');
    is_deeply(\@warnings, [ "microseg section 'x': unknown type 'future-thing' ignored\n" ], 'and again after a change')
	or diag(explain(\@warnings));
}

done_testing();
