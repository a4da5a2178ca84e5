package MicrosegLab;

# Test scaffolding for the prove suite: a private network namespace for the
# whole test process, a private bpffs and run directory (set through the
# library's environment variables), guests in namespaces of their own behind
# veth<vmid>i<n>, and VM guests behind a real tap whose fd we hold as QEMU
# does. Everything is removed at exit, also when a test dies.

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use Socket qw(AF_INET SOCK_DGRAM inet_aton pack_sockaddr_in);
use Fcntl qw(O_RDWR O_NONBLOCK F_SETFL);
use Time::HiRes qw(sleep time);

our @EXPORT = qw(run sandbox write_config lab_new add_veth add_tap plug measure matrix_string pin_state running_config
    three_tier_config udp_socket_in neighbours_of);

my $ROOT = abs_path(dirname(__FILE__) . '/../..');
$ENV{PVE_RS_MICROSEG_SO} //= "$ROOT/target/release/libpve_rs_microseg.so";
unshift @INC, "$ROOT/perl";

use constant {
    SYS_UNSHARE => 272,    # x86_64
    SYS_SETNS => 308,
    CLONE_NEWNET => 0x40000000,
    TUNSETIFF => 0x400454ca,
    IFF_TAP => 0x0002,
    IFF_NO_PI => 0x1000,
    PORT => 5555,
    SUBNET => '10.77.0',
};

sub run {
    my ($cmd) = @_;
    my $out = `$cmd 2>&1`;
    die "command failed ($?): $cmd\n$out" if $? != 0;
    return $out;
}

my ($SANDBOX, @NETNS, $HOSTNS_FH, @CLEANUP_PIDS);
my $OWNER = $$;

# Private network namespace for this process: the library, `ip` and every
# socket see only this test's netdevs. Then a private bpffs outside /sys.
sub sandbox {
    return $SANDBOX if $SANDBOX;
    syscall(SYS_UNSHARE, CLONE_NEWNET) == 0 or die "unshare(CLONE_NEWNET): $!\n";
    run('ip link set lo up');
    open($HOSTNS_FH, '<', '/proc/self/ns/net') or die "open own netns: $!\n";
    make_path('/tmp/microseg-tests');
    my $dir = tempdir("prove-$$-XXXX", DIR => '/tmp/microseg-tests');
    make_path("$dir/bpf");
    run("mount -t bpf bpf $dir/bpf");
    $ENV{PVE_MICROSEG_RUNNING_CONFIG} = "$dir/running-config";
    $ENV{PVE_MICROSEG_BPF_ROOT} = "$dir/bpf/proxmox-ebpf";
    $ENV{PVE_MICROSEG_RUN_DIR} = "$dir/run";
    $SANDBOX = $dir;
    return $dir;
}

END {
    if ($SANDBOX && $$ == $OWNER) {
	# A second Ctrl-C must not cut the cleanup short.
	$SIG{INT} = $SIG{TERM} = 'IGNORE';
	my $rc = $?;
	eval { PVE::RS::SDN::Microseg::clear() } if defined &PVE::RS::SDN::Microseg::clear;
	system("umount -l $SANDBOX/bpf 2>/dev/null");
	remove_tree($SANDBOX);
	system("ip netns del $_ 2>/dev/null") for @NETNS;
	$? = $rc;
    }
}

sub write_config {
    my ($json) = @_;
    my $path = $ENV{PVE_MICROSEG_RUNNING_CONFIG};
    open(my $fh, '>', "$path.tmp") or die "write $path: $!\n";
    print $fh $json;
    close($fh);
    rename("$path.tmp", $path) or die "rename: $!\n";
}

# A running config as pve-network writes it, with other SDN keys beside it.
sub running_config {
    my (%p) = @_;
    my @ids;
    for my $g (@{$p{groups} // []}) {
	my ($id, $mark, $parent) = @$g;
	my $par = defined($parent) ? qq(, "parent": "$parent") : '';
	push @ids, qq("$id": {"type": "group", "id": "$id", "mark": "$mark"$par});
    }
    for my $r (@{$p{rules} // []}) {
	my ($id, $src, $dst, $allow, $proto, $dport) = @$r;
	my $s = defined($src) ? qq(, "src": "$src") : '';
	$s .= qq(, "proto": "$proto") if defined($proto);
	$s .= qq(, "dport": "$dport") if defined($dport);
	push @ids, qq("$id": {"type": "rule", "id": "$id", "dst": "$dst", "allow": $allow$s});
    }
    for my $a (@{$p{assign} // []}) {
	my ($vmid, $group) = @$a;
	push @ids, qq("a$vmid": {"type": "assignment", "id": "a$vmid", "vmid": $vmid, "iface": 0, "group": "$group"});
    }
    my $ms = join(",\n", @ids);
    return qq({"version": 5, "zones": {"ids": {"z1": {"type": "simple"}}},)
	.qq( "vnets": {"ids": {"v1": {"type": "vnet", "zone": "z1"}}},)
	.qq( "microseg": {"ids": {$ms}}});
}

# The plug tests' cluster: group app with web below it, and db; guests 101
# (web), 102 (db), 103 (app). The rules are @rules, or by default web -> db
# allowed, db -> app denied, the host -> web allowed, app -> app allowed.
sub three_tier_config {
    my (@rules) = @_;
    @rules = ([ 'web-db', 'web', 'db', 1 ], [ 'db-app', 'db', 'app', 0 ], [ 'host-web', undef, 'web', 1 ],
	[ 'app-app', 'app', 'app', 1 ]) if !@rules;
    return running_config(groups => [[ 'app', 10 ], [ 'web', 11, 'app' ], [ 'db', 20 ]],
	assign => [[ 101, 'web' ], [ 102, 'db' ], [ 103, 'app' ]], rules => \@rules);
}

sub mac { sprintf('02:00:00:00:00:%02x', $_[0]) }
sub ip4 { SUBNET . ".$_[0]" }

sub _setns {
    my ($fh) = @_;
    syscall(SYS_SETNS, fileno($fh), CLONE_NEWNET) == 0 or die "setns: $!\n";
}

# A UDP socket on PORT (or on $port: 0 for an ephemeral one).
sub _udp_socket {
    my ($host, $port) = @_;
    socket(my $s, AF_INET, SOCK_DGRAM, 0) or die "socket: $!\n";
    bind($s, pack_sockaddr_in($port // PORT, inet_aton(ip4($host)))) or die "bind " . ip4($host) . ": $!\n";
    fcntl($s, F_SETFL, O_NONBLOCK) or die "fcntl: $!\n";
    return $s;
}

# A non-blocking UDP socket inside the namespace of guest $name (a veth
# guest), on $port (0: ephemeral).
sub udp_socket_in {
    my ($lab, $name, $port) = @_;
    my ($e) = grep { $_->{name} eq $name } @{$lab->{eps}};
    die "no veth guest $name\n" if !$e || $e->{kind} ne 'veth';
    open(my $nsfh, '<', "/run/netns/$e->{ns}") or die "open netns: $!\n";
    _setns($nsfh);
    my $sock = eval { _udp_socket($e->{host}, $port) };
    my $err = $@;
    _setns($HOSTNS_FH);
    die $err if $err;
    return $sock;
}

# The addresses guest $name has resolved (its neighbour entries with a
# link-layer address), after dropping its static ones if $flush.
sub neighbours_of {
    my ($lab, $name, $flush) = @_;
    my ($e) = grep { $_->{name} eq $name } @{$lab->{eps}};
    if ($flush) {
	run("ip -n $e->{ns} neigh flush all nud permanent");
	return ();
    }
    my $out = `ip -n $e->{ns} neigh show`;
    return map { /^(\S+) .*lladdr/ ? ($1) : () } split(/\n/, $out);
}

# The node: bridge vmbr0 (the VNet) with the host's unstamped address.
sub lab_new {
    sandbox();
    run("ip link add vmbr0 type bridge && ip link set vmbr0 address " . mac(254)
	." && ip addr add " . ip4(254) . "/24 dev vmbr0 && ip link set vmbr0 up");
    return { eps => [ { name => 'host', host => 254, kind => 'host', sock => _udp_socket(254), tx => _udp_socket(254, 0) } ] };
}

sub plug {
    my ($name) = @_;
    run("ip link set $name master vmbr0 && ip link set $name up");
}

sub _neighbours {
    my ($lab) = @_;
    for my $e (@{$lab->{eps}}) {
	next if $e->{kind} eq 'tap';
	my $dev = $e->{kind} eq 'host' ? 'vmbr0' : 'eth0';
	my $batch = join('', map {
	    "neigh replace " . ip4($_->{host}) . " lladdr " . mac($_->{host}) . " dev $dev nud permanent\n"
	} grep { $_->{host} != $e->{host} } @{$lab->{eps}});
	my $ns = $e->{ns} ? "-n $e->{ns}" : '';
	open(my $ip, '|-', "ip $ns -batch -") or die "ip: $!\n";
	print $ip $batch;
	close($ip) or die "ip -batch failed\n";
    }
}

# An LXC-like guest: its own namespace behind veth<vmid>i<n>.
sub add_veth {
    my ($lab, $name, $host, $do_plug) = @_;
    my $ns = "ms$$-$name";
    run("ip netns add $ns");
    push @NETNS, $ns;
    run("ip link add $name type veth peer name eth0 netns $ns");
    run("ip -n $ns link set lo up && ip -n $ns link set eth0 address " . mac($host)
	." && ip -n $ns addr add " . ip4($host) . "/24 dev eth0 && ip -n $ns link set eth0 up");
    plug($name) if $do_plug;
    open(my $nsfh, '<', "/run/netns/$ns") or die "open netns $ns: $!\n";
    _setns($nsfh);
    my ($sock, $tx) = eval { (_udp_socket($host), _udp_socket($host, 0)) };
    my $err = $@;
    _setns($HOSTNS_FH);
    die $err if $err;
    push @{$lab->{eps}}, { name => $name, host => $host, kind => 'veth', ns => $ns, sock => $sock, tx => $tx };
    _neighbours($lab);
}

# Creates tap <name> through /dev/net/tun, as QEMU does; we hold its fd.
sub open_tap {
    my ($name) = @_;
    sysopen(my $fh, '/dev/net/tun', O_RDWR) or die "open /dev/net/tun: $!\n";
    my $ifr = pack('Z16 s x22', $name, IFF_TAP | IFF_NO_PI);
    ioctl($fh, TUNSETIFF, $ifr) or die "TUNSETIFF $name: $!\n";
    fcntl($fh, F_SETFL, O_NONBLOCK) or die "fcntl: $!\n";
    return $fh;
}

# A VM-like guest: we are the guest, reading and writing the tap's fd.
sub add_tap {
    my ($lab, $name, $host, $do_plug, $fh) = @_;
    $fh //= open_tap($name);
    plug($name) if $do_plug;
    push @{$lab->{eps}}, { name => $name, host => $host, kind => 'tap', fh => $fh };
    _neighbours($lab);
}

sub _csum {
    my ($data) = @_;
    $data .= "\0" if length($data) % 2;
    my $sum = 0;
    $sum += $_ for unpack('n*', $data);
    $sum = ($sum & 0xffff) + ($sum >> 16) while $sum > 0xffff;
    return ~$sum & 0xffff;
}

sub _frame {
    my ($from, $to, $payload) = @_;
    my $ip = pack('C C n n n C C n a4 a4', 0x45, 0, 28 + length($payload), 0, 0x4000, 64, 17, 0,
	inet_aton(ip4($from)), inet_aton(ip4($to)));
    substr($ip, 10, 2) = pack('n', _csum($ip));
    my $udp = pack('n n n n', 40000 + $from, PORT, 8 + length($payload), 0) . $payload;
    my $mac = sub { pack('C6', map { hex } split(/:/, mac($_[0]))) };
    return $mac->($to) . $mac->($from) . pack('n', 0x0800) . $ip . $udp;
}

sub _send {
    my ($e, $to, $payload) = @_;
    if ($e->{kind} eq 'tap') {
	syswrite($e->{fh}, _frame($e->{host}, $to->{host}, $payload)) or die "write tap: $!\n";
    } else {
	# From an ephemeral port: never the reply of a datagram sent the other
	# way, so each one measures one direction of the (stateful) policy.
	send($e->{tx}, $payload, 0, pack_sockaddr_in(PORT, inet_aton(ip4($to->{host}))))
	    or die "send: $!\n";
    }
}

sub _recv_all {
    my ($e) = @_;
    my @got;
    if ($e->{kind} eq 'tap') {
	my $me = inet_aton(ip4($e->{host}));
	while (defined(sysread($e->{fh}, my $f, 2048))) {
	    next if length($f) < 42 || substr($f, 12, 2) ne "\x08\x00" || ord(substr($f, 23, 1)) != 17;
	    next if substr($f, 30, 4) ne $me;
	    push @got, substr($f, 42);
	}
    } else {
	while (defined(recv($e->{sock}, my $buf, 2048, 0))) {
	    push @got, $buf;
	}
    }
    return @got;
}

# One datagram per ordered pair (twice); returns { "src>dst" => 0|1 }.
sub measure {
    my ($lab) = @_;
    my @eps = @{$lab->{eps}};
    _recv_all($_) for @eps;
    my %m;
    for my $round (1 .. 2) {
	for my $s (@eps) {
	    for my $d (@eps) {
		next if $s == $d;
		$m{"$s->{name}>$d->{name}"} //= 0;
		_send($s, $d, "$s->{name}>$d->{name}#$round");
	    }
	}
    }
    my $deadline = time() + 0.4;
    while (time() < $deadline) {
	for my $e (@eps) {
	    for my $p (_recv_all($e)) {
		my ($pair) = split(/#/, $p);
		my (undef, $dst) = split(/>/, $pair);
		$m{$pair} = 1 if defined($dst) && $dst eq $e->{name} && exists $m{$pair};
	    }
	}
	sleep(0.02);
    }
    return \%m;
}

sub matrix_string {
    my ($lab, $m) = @_;
    my @n = map { $_->{name} } @{$lab->{eps}};
    my $s = sprintf('%12s', 'src\\dst') . join('', map { sprintf('%12s', $_) } @n) . "\n";
    for my $src (@n) {
	$s .= sprintf('%12s', $src);
	$s .= sprintf('%12s', $src eq $_ ? '-' : ($m->{"$src>$_"} ? 'pass' : 'drop')) for @n;
	$s .= "\n";
    }
    return $s;
}

# Every pin and run-state file with its inode: a replaced pin shows up.
sub pin_state {
    my @out;
    for my $root ($ENV{PVE_MICROSEG_BPF_ROOT}, $ENV{PVE_MICROSEG_RUN_DIR}) {
	next if !-d $root;
	my @todo = ($root);
	while (my $d = shift @todo) {
	    opendir(my $dh, $d) or next;
	    for my $f (sort grep { !/^\.\.?$/ } readdir($dh)) {
		my $p = "$d/$f";
		my @st = lstat($p);
		push @out, "$p:$st[1]";
		push @todo, $p if -d $p;
	    }
	}
    }
    return join("\n", sort @out);
}

1;
