#!/usr/bin/perl
# The module loads from the built shared object, exposes the three functions,
# and refuses a shared object built for another version.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use Test::More;

use MicrosegLab;
use_ok('PVE::RS::SDN::Microseg');

for my $f (qw(apply_full apply_iface clear)) {
    ok(defined &{"PVE::RS::SDN::Microseg::$f"}, "$f exists");
}
is($PVE::RS::SDN::Microseg::VERSION, '0.1.0', 'module version');

# The shipped shared object carries no test hooks (crash points, test objects).
{
    open(my $so, '<:raw', $ENV{PVE_RS_MICROSEG_SO}) or die "$ENV{PVE_RS_MICROSEG_SO}: $!";
    my $bytes = do { local $/; <$so> };
    unlike($bytes, qr/PVE_MICROSEG_TEST_CRASH_AT/, 'no crash points in the shared object');
    unlike($bytes, qr/order_probe|microseg_test_extra/, 'no test BPF objects in the shared object');
}

# A stale .so: the same library, but the module asks for another version.
my $dir = tempdir(CLEANUP => 1);
mkdir "$dir/PVE"; mkdir "$dir/PVE/RS"; mkdir "$dir/PVE/RS/SDN";
open(my $in, '<', "$FindBin::Bin/../perl/PVE/RS/SDN/Microseg.pm") or die;
my $pm = do { local $/; <$in> };
$pm =~ s/our \$VERSION = '0\.1\.0'/our \$VERSION = '0.2.0'/ or die "version line not found";
open(my $out, '>', "$dir/PVE/RS/SDN/Microseg.pm") or die;
print $out $pm;
close($out);
my $err = `$^X -I$dir -e 'use PVE::RS::SDN::Microseg; print "loaded\\n"' 2>&1`;
isnt($?, 0, 'stale shared object: perl exits non-zero');
unlike($err, qr/^loaded/m, 'stale shared object: module not loaded');
like($err, qr/refusing \S+libpve_rs_microseg\.so: .*version 0\.1\.0 does not match bootstrap parameter 0\.2\.0.*rebuild or reinstall/,
    'stale shared object: clear message');

# A missing shared object.
$err = `PVE_RS_MICROSEG_SO=/nonexistent/lib.so $^X -I$FindBin::Bin/../perl -e 'use PVE::RS::SDN::Microseg' 2>&1`;
like($err, qr{cannot load /nonexistent/lib\.so}, 'missing shared object: clear message');

done_testing();
