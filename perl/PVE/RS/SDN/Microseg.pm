package PVE::RS::SDN::Microseg;

# Group-based microsegmentation for guest NICs, enforced with eBPF.
#
# The work is done in Rust, in-process: this module only finds the shared
# object and bootstraps it. Functions (all die on error, with a message that
# ends in "\n" and carries the context chain):
#
#   apply_full()          full pass; returns a hash ref of what changed
#   apply_iface($iface)   tap_plug path; returns 'enforced', 'full-pass',
#                         'not-guest-nic', 'unassigned' or 'vanished'
#   clear()               remove all kernel state; idempotent
#   effective_policy_json()  the resolved policy as JSON (reads the config only)
#
# PVE_RS_MICROSEG_SO overrides where the shared object is loaded from.

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
