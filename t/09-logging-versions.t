#!/usr/bin/perl
# Where records go without a system log, and the build's version check.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use Test::More;

use MicrosegLab;

my $root = "$FindBin::Bin/..";

# A perl process with no /dev/log (a private mount namespace where it is a
# plain file, or absent): records go to stderr; the call's warnings are
# Perl warnings, once; the full-pass summary is one key=value line.
{
    my $dir = sandbox();
    my $cfg = running_config(groups => [[ 'g', 7 ]], assign => [[ 101, 'g' ]]);
    $cfg =~ s/"microseg": \{"ids": \{/"microseg": {"ids": {"x": {"type": "future-thing"},/ or die "no microseg key";
    write_config($cfg);
    my $blocker = "$dir/not-a-socket";
    open(my $fh, '>', $blocker) or die "$blocker: $!\n";
    close($fh);
    my $script = "$dir/two-passes.pl";
    open(my $pl, '>', $script) or die "$script: $!\n";
    print $pl "use PVE::RS::SDN::Microseg;\n"
	."PVE::RS::SDN::Microseg::apply_full() for 1 .. 2;\n"
	."print \"done\\n\";\n";
    close($pl);
    my $cmd = "unshare -m sh -c 'if [ -e /dev/log ]; then mount --bind $blocker /dev/log; fi;"
	." exec $^X -I$root/perl $script' 2>&1";
    my @lines = split(/\n/, `$cmd`);
    is($?, 0, 'two full passes without a system log') or diag(join("\n", @lines));
    is(scalar(grep { $_ eq "microseg section 'x': unknown type 'future-thing' ignored" } @lines), 1,
	'the warning appears once on stderr, as a Perl warning') or diag(join("\n", @lines));
    my @summary = grep { /^pve-microseg: info: microseg: full pass: / } @lines;
    is(scalar(@summary), 2, 'each full pass logs its summary on stderr') or diag(join("\n", @lines));
    like($summary[0] // '', qr/^pve-microseg: info: microseg: full pass: (?:\w+=(?:\d+|yes|no) ?)+$/,
	'the summary is one readable key=value line');
    is(scalar(grep { $_ eq 'done' } @lines), 1, 'the program ran to its end');
}

# The version is kept in debian/changelog, Cargo.toml and Microseg.pm; the
# build (perl-rs/build.rs and debian/rules) refuses when they differ.
{
    is(system("sh $root/scripts/check-versions.sh $root"), 0, 'this tree: one version');
    my $copy = tempdir(CLEANUP => 1);
    for my $f ('debian/changelog', 'Cargo.toml', 'perl/PVE/RS/SDN/Microseg.pm') {
	my ($d) = $f =~ m{^(.*)/} ? ($1) : ('');
	system("mkdir -p $copy/$d") if $d;
	system("cp $root/$f $copy/$f") == 0 or die "copy $f\n";
    }
    my $pm = "$copy/perl/PVE/RS/SDN/Microseg.pm";
    run("sed -i \"s/^our \\\$VERSION = '\\([^']*\\)';/our \\\$VERSION = '9.9.9';/\" $pm");
    my $out = `sh $root/scripts/check-versions.sh $copy 2>&1`;
    isnt($?, 0, 'a module version that differs fails the check');
    like($out, qr/^check-versions: versions differ: debian\/changelog \S+, Cargo.toml \S+, Microseg.pm 9\.9\.9$/m, $out);
}

done_testing();
