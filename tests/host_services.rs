//! Host services a guest needs, without a rule (SPEC section 4): a real
//! dnsmasq on the node hands out a DHCPv4 lease and router advertisements
//! for SLAAC to a guest in a group with no unstamped rule; the guest reaches
//! an address beyond the node's gateway, and a flow kept alive for 60 s
//! (past the neighbour re-probes on both sides) loses nothing. A guest of
//! another group sending DHCP offers and router advertisements does not
//! reach it.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::packet::{send_raw, Frame};
use common::*;

const CONFIG: &str = r#"{"microseg": {"ids": {
    "g": {"type": "group", "mark": 10},
    "evil": {"type": "group", "mark": 66},
    "a101": {"type": "assignment", "vmid": 101, "iface": 0, "group": "g"},
    "a102": {"type": "assignment", "vmid": 102, "iface": 0, "group": "evil"}
}}}"#;

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames `guest` receives for `window`, raw (AF_PACKET on its eth0).
fn capture(lab: &Lab, guest: &str, window: Duration, during: impl FnOnce()) -> Vec<Vec<u8>> {
    let fd = in_netns(lab.guest_ns(guest), || {
        // SAFETY: a packet socket bound to eth0, non-blocking reads into a sized buffer.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, (libc::ETH_P_ALL as u16).to_be() as i32);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            addr.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            assert_eq!(libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32), 0);
            fd
        }
    });
    during();
    let mut frames = Vec::new();
    let end = Instant::now() + window;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        // SAFETY: as above.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            frames.push(buf[..n as usize].to_vec());
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    frames
}

/// A DHCPv4 offer (UDP 67 -> 68, broadcast) or a router advertisement
/// (ICMPv6 134) among `frames`, from the MAC `from`.
fn services_from(frames: &[Vec<u8>], from: [u8; 6]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for f in frames.iter().filter(|f| f.len() > 54 && f[6..12] == from) {
        if f[12..14] == [0x08, 0x00] && f[23] == 17 && f[34..36] == 67u16.to_be_bytes() && f[36..38] == 68u16.to_be_bytes() {
            out.push("dhcp-offer");
        }
        if f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 134 {
            out.push("router-advertisement");
        }
    }
    out
}

#[test]
fn dhcp_and_slaac_from_the_node_work_without_a_rule_and_rogue_ones_do_not() {
    let sandbox = Sandbox::new("services");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    let dir = sandbox.dir.clone();
    // The node: the VNet gateway on vmbr0 (IPv4 and IPv6), routing to an
    // outside network (sysctls of the test's own namespaces only).
    ip_batch(None, "addr add fd00::fe/64 dev vmbr0 nodad\n");
    let outside = Netns::new("outside");
    ip_batch(None, &format!("link add up0 type veth peer name eth0 netns {}\naddr add 198.51.100.1/24 dev up0\nlink set up0 up\n", outside.name));
    ip_batch(Some(&outside.name), "link set lo up\naddr add 198.51.100.2/24 dev eth0\nlink set eth0 up\nroute add default via 198.51.100.1\n");
    sh("sysctl -qw net.ipv4.ip_forward=1");
    lab.add_veth("veth101i0", 1, true);
    lab.add_veth("veth102i0", 2, true);
    let guest = lab.guest_ns("veth101i0").name.clone();
    // The guest has no address of its own: DHCP and SLAAC give it one.
    ip_batch(Some(&guest), "addr flush dev eth0\nneigh flush all nud permanent\n");
    sh(&format!("ip netns exec {guest} sysctl -qw net.ipv6.conf.eth0.accept_ra=2 net.ipv6.conf.eth0.autoconf=1"));
    sh("ip neigh flush dev vmbr0 nud permanent");
    sandbox.write_config(CONFIG);
    ms.apply_full().unwrap();

    let _dnsmasq = Killed(
        Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--interface=vmbr0", "--bind-interfaces", "--port=0"])
            .args(["--dhcp-range=10.77.0.100,10.77.0.150,2m", "--dhcp-option=option:router,10.77.0.254"])
            .args(["--enable-ra", "--dhcp-range=::,constructor:vmbr0,ra-stateless,2m", "--ra-param=vmbr0,10,120"])
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .args(["--user=root", "--group=root", "--log-facility=-"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)"),
    );
    std::thread::sleep(Duration::from_millis(500));

    // DHCPv4: a lease from the node's server, the group has no unstamped rule.
    let out = Command::new("ip")
        .args(["netns", "exec", &guest, "timeout", "20", "dhclient", "-1", "-4", "-v"])
        .arg("-pf")
        .arg(dir.join("dhclient.pid"))
        .arg("-lf")
        .arg(dir.join("dhclient.leases"))
        .arg("eth0")
        .output()
        .unwrap();
    let _dhclient = Command::new("sh").arg("-c").arg(format!("kill $(cat {}) 2>/dev/null", dir.join("dhclient.pid").display())).status();
    let addr4 = sh(&format!("ip -n {guest} -4 -br addr show eth0"));
    assert!(out.status.success() && addr4.contains("10.77.0.1"), "no DHCP lease: {addr4}\n{}", String::from_utf8_lossy(&out.stderr));
    let leased: Ipv4Addr = addr4.split_whitespace().nth(2).unwrap().split('/').next().unwrap().parse().unwrap();

    // SLAAC from the node's router advertisements.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut addr6 = String::new();
    while Instant::now() < deadline {
        // Toggling forwarding makes the guest send a router solicitation
        // again, so the test need not wait for a periodic advertisement.
        sh(&format!("ip netns exec {guest} sh -c 'echo 1 > /proc/sys/net/ipv6/conf/eth0/forwarding; echo 0 > /proc/sys/net/ipv6/conf/eth0/forwarding'"));
        addr6 = sh(&format!("ip -n {guest} -6 -br addr show eth0 scope global"));
        if addr6.contains("fd00::") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(addr6.contains("fd00::"), "no SLAAC address: {addr6}");

    // Beyond the gateway, a flow kept alive for 60 s loses nothing.
    let server = in_netns(&outside, || UdpSocket::bind("198.51.100.2:7777").unwrap());
    server.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let end = Instant::now() + Duration::from_secs(70);
        while Instant::now() < end {
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        }
    });
    let client = in_netns(lab.guest_ns("veth101i0"), || UdpSocket::bind(SocketAddrV4::new(leased, 0)).unwrap());
    client.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    let (mut asked, mut answered) = (0, 0);
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while start.elapsed() < Duration::from_secs(62) {
        client.send_to(format!("keepalive {asked}").as_bytes(), SocketAddrV4::new(OUTSIDE, 7777)).unwrap();
        asked += 1;
        if client.recv(&mut buf).is_ok() {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    println!("host services: lease {leased}, {addr6}; a flow through the gateway: {answered}/{asked} answered over 62 s");
    assert_eq!(answered, asked, "the long-lived flow lost packets");
    drop(echo);

    // A guest of another group sends DHCP offers and router advertisements: nothing reaches the guest.
    let evil_mac = mac(2);
    let frames = capture(&lab, "veth101i0", Duration::from_millis(1500), || {
        in_netns(lab.guest_ns("veth102i0"), || {
            let offer = Frame::new(evil_mac, [0xff; 6]).udp(ip(2).into(), Ipv4Addr::BROADCAST.into(), 67, 68, &[2u8; 240]);
            let ra = Frame::new(evil_mac, [0x33, 0x33, 0, 0, 0, 1]).ip(
                "fe80::2".parse::<std::net::Ipv6Addr>().unwrap().into(),
                "ff02::1".parse::<std::net::Ipv6Addr>().unwrap().into(),
                58,
                &[],
                &[134, 0, 0, 0, 64, 0, 0, 120, 0, 0, 0, 0, 0, 0, 0, 0],
            );
            for _ in 0..3 {
                send_raw("eth0", &offer);
                send_raw("eth0", &ra);
            }
        });
    });
    assert_eq!(services_from(&frames, evil_mac), Vec::<&str>::new(), "a rogue DHCP offer or RA reached the guest");
    lab.endpoints.clear();
}

/// Path MTU discovery (SPEC section 4): a guest with no rule back from the
/// outside sends a large TCP transfer through the node to a network behind
/// a smaller MTU; the node's "fragmentation needed" / "packet too big"
/// errors quote the guest's own flow and reach it, so the transfer completes.
#[test]
fn path_mtu_discovery_works_through_a_smaller_routed_hop() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let sandbox = Sandbox::new("pmtu");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    ip_batch(None, "addr add fd00::fe/64 dev vmbr0 nodad\n");
    let outside = Netns::new("outside");
    ip_batch(
        None,
        &format!(
            "link add up0 mtu 1280 type veth peer name eth0 netns {}\naddr add 198.51.100.1/24 dev up0\n\
             addr add fd01::1/64 dev up0 nodad\nlink set up0 up\n",
            outside.name
        ),
    );
    ip_batch(
        Some(&outside.name),
        // The outside end keeps MTU 1500 (its MSS invites full-size
        // segments); only the node's side of the hop is 1280.
        "link set lo up\naddr add 198.51.100.2/24 dev eth0\naddr add fd01::2/64 dev eth0 nodad\n\
         link set eth0 up\nroute add default via 198.51.100.1\nroute add default via fd01::1\n",
    );
    sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    lab.add_veth("veth101i0", 1, true);
    let guest = lab.guest_ns("veth101i0").name.clone();
    ip_batch(Some(&guest), "addr add fd00::1/64 dev eth0 nodad\nroute add default via 10.77.0.254\nroute add default via fd00::fe\n");
    sandbox.write_config(CONFIG);
    ms.apply_full().unwrap();

    for server_addr in ["198.51.100.2:8080".parse::<SocketAddr>().unwrap(), "[fd01::2]:8080".parse().unwrap()] {
        let listener = in_netns(&outside, || TcpListener::bind(server_addr).unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut total = 0usize;
            let mut buf = [0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = s.write_all(&total.to_be_bytes());
            total
        });
        let sent = in_netns(lab.guest_ns("veth101i0"), || {
            let mut s = TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)).expect("connect through the node");
            s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let data = vec![0x5au8; 256 * 1024];
            s.write_all(&data).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut total = [0u8; 8];
            s.read_exact(&mut total).map(|()| usize::from_be_bytes(total)).unwrap_or(0)
        });
        let got = server.join().unwrap();
        println!("path MTU to {server_addr}: {got} of {} bytes arrived", 256 * 1024);
        assert_eq!((sent, got), (256 * 1024, 256 * 1024), "the transfer to {server_addr} stalled: PMTU discovery failed");
    }
    lab.endpoints.clear();
}
