package PVE::RS::SDN::Microseg;

# Group-based microsegmentation for guest NICs, enforced with eBPF.
#
# The work is done in Rust, in-process: this module only finds the shared
# object and bootstraps it. See the POD below for the functions.

use strict;
use warnings;

use DynaLoader ();

our $VERSION = '0.1.0';

my $SO_NAME = 'auto/PVE/RS/SDN/Microseg/Microseg.so';

sub _find_so {
    my $env = $ENV{PVE_RS_MICROSEG_SO};
    return $env if defined($env) && length($env);
    for my $dir (@INC) {
	next if ref($dir);
	my $path = "$dir/$SO_NAME";
	return $path if -f $path;
    }
    die "PVE::RS::SDN::Microseg: shared object $SO_NAME not found in \@INC"
	." (set PVE_RS_MICROSEG_SO to its path)\n";
}

sub _bootstrap {
    my $so = _find_so();
    my $libref = DynaLoader::dl_load_file($so, 0)
	or die "PVE::RS::SDN::Microseg: cannot load $so: " . DynaLoader::dl_error() . "\n";
    my $boot = DynaLoader::dl_find_symbol($libref, 'boot_PVE__RS__SDN__Microseg')
	or die "PVE::RS::SDN::Microseg: $so has no boot_PVE__RS__SDN__Microseg"
	    ." (not a microseg library?)\n";
    my $xs = DynaLoader::dl_install_xsub('PVE::RS::SDN::Microseg::bootstrap', $boot, $so);
    # The XS handshake compares our $VERSION with the one compiled into the
    # shared object: a stale build is refused here, not half-used later.
    eval { $xs->(__PACKAGE__, $VERSION); 1 } or do {
	my $err = $@;
	chomp $err;
	die "PVE::RS::SDN::Microseg: refusing $so: $err"
	    ." (module version $VERSION; rebuild or reinstall the library)\n";
    };
    push @DynaLoader::dl_shared_objects, $so;
}

_bootstrap();

1;

__END__

=head1 NAME

PVE::RS::SDN::Microseg - group-based microsegmentation of guest NICs, enforced with eBPF

=head1 SYNOPSIS

  use PVE::RS::SDN::Microseg;

  # pve-network's tap_plug, before the NIC joins its bridge:
  my $outcome = PVE::RS::SDN::Microseg::apply_iface($iface);

  # an SDN apply or a network reload:
  my $report = PVE::RS::SDN::Microseg::apply_full();

=head1 DESCRIPTION

Guest NICs (QEMU taps, LXC veths) are put into groups by the C<microseg>
sections of the SDN running config (F</etc/pve/sdn/.running-config>), and
rules say which group may open what toward which. The module enforces that in
the kernel, in-process: no fork, no exec. Every function dies on error with a
message that ends in C<"\n"> and names what is wrong; the kernel state is then
left as it was. Warnings of a call (unknown config fields, missing underlay
interfaces, once per config change) are raised as Perl warnings, which a PVE
task log shows, and go to the journal.

=head1 FUNCTIONS

=over 4

=item apply_full()

Makes the kernel state of every subsystem equal the running config on this
node. Returns a hash reference of what it changed: C<loaded>, C<map_writes>,
C<map_deletes>, C<links_created>, C<links_updated>, C<links_detached>,
C<nics>, C<guarded>, C<srv6>.

=item apply_iface($iface)

Enforces one guest NIC (C<tap100i0>, C<veth100i0>) as the last full pass
recorded it. Returns C<enforced>, C<unassigned>, C<not-guest-nic>,
C<vanished> or C<full-pass>.

=item status()

What is enforced on this node, read from the kernel: C<nics>, C<rules>,
C<flows>, C<subsystems>, C<underlay>, C<warnings>.

=item simulate($src, $dst, $proto, $dport)

Which rule decides a flow from group C<$src> (C<undef>: unstamped) to group
C<$dst>, and why; C<$proto> and C<$dport> are optional.

=item clear()

Removes all kernel state of every subsystem; idempotent.

=item effective_policy_json()

The resolved policy as JSON; reads the config only.

=back

=head1 ENVIRONMENT

C<PVE_MICROSEG_RUNNING_CONFIG>, C<PVE_MICROSEG_BPF_ROOT>,
C<PVE_MICROSEG_RUN_DIR> override where the config, the pins and the run state
are; C<PVE_MICROSEG_LOG> (C<off> .. C<trace>) and C<PVE_MICROSEG_LOG_TARGET>
(C<syslog>, C<stderr>) the logging; C<PVE_RS_MICROSEG_SO> the shared object.

=head1 SEE ALSO

L<pve-microseg(1)>

=cut
