//! The stateful policy on a simulated node with real packets (SPEC
//! sections 1-4): a one-way rule lets `a` open TCP, UDP and ICMP toward `b`
//! and get the replies, while `b` opens nothing toward `a`; ARP and
//! neighbour discovery run for real (no static entries) and follow the
//! policy; a revoked rule stops an established connection.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use common::packet::{arp, send_raw, Frame};
use microseg::kernel::sys;
use microseg::subsystems::microseg::maps::FLOWS;
use common::*;

/// front (10) > a (11); b (20); c (30), the scanner.
fn config(web_rule: bool) -> String {
    let web = if web_rule {
        r#""web": {"type": "rule", "src": "a", "dst": "b", "proto": "tcp", "dport": "80", "allow": 1},"#
    } else {
        ""
    };
    format!(
        r#"{{"microseg": {{"ids": {{
        "front": {{"type": "group", "mark": 10}},
        "a": {{"type": "group", "mark": 11, "parent": "front"}},
        "b": {{"type": "group", "mark": 20}},
        "c": {{"type": "group", "mark": 30}},
        {web}
        "dns": {{"type": "rule", "src": "front", "dst": "b", "proto": "udp", "dport": "5353", "allow": 1}},
        "ping": {{"type": "rule", "src": "a", "dst": "b", "proto": "icmp", "allow": 1}},
        "ping6": {{"type": "rule", "src": "a", "dst": "b", "proto": "icmpv6", "allow": 1}},
        "a101": {{"type": "assignment", "vmid": 101, "iface": 0, "group": "a"}},
        "a102": {{"type": "assignment", "vmid": 102, "iface": 0, "group": "b"}},
        "a103": {{"type": "assignment", "vmid": 103, "iface": 0, "group": "c"}},
        "a104": {{"type": "assignment", "vmid": 104, "iface": 0, "group": "b"}},
        "a105": {{"type": "assignment", "vmid": 105, "iface": 0, "group": "front"}},
        "a106": {{"type": "assignment", "vmid": 106, "iface": 0, "group": "c"}},
        "a107": {{"type": "assignment", "vmid": 107, "iface": 0, "group": "a"}}
    }}}}}}"#
    )
}

fn v6(host: u8) -> Ipv6Addr {
    format!("fd00::{host}").parse().unwrap()
}

/// Six veth guests and a tap guest; no static neighbour entries anywhere, and
/// an IPv6 address on every veth guest.
fn node() -> Lab {
    let mut lab = Lab::new();
    for vmid in 101..=106u32 {
        lab.add_veth(&format!("veth{vmid}i0"), (vmid - 100) as u8, true);
    }
    lab.add_tap("tap107i0", 7, true);
    for vmid in 101..=106u8 {
        let ns = lab.guest_ns(&format!("veth{vmid}i0")).name.clone();
        ip_batch(Some(&ns), &format!("addr add {}/64 dev eth0 nodad\nneigh flush all nud permanent\n", v6(vmid - 100)));
    }
    sh("ip neigh flush dev vmbr0 nud permanent");
    lab
}

fn in_guest<T>(lab: &Lab, guest: &str, f: impl FnOnce() -> T) -> T {
    in_netns(lab.guest_ns(guest), f)
}

/// A TCP exchange: connect, send, read the answer.
fn tcp_talk(lab: &Lab, from: &str, to: SocketAddr) -> std::io::Result<String> {
    in_guest(lab, from, || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(2000))?;
        s.set_read_timeout(Some(Duration::from_millis(3000)))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A TCP server in `guest` answering every connection with "world:<what it read>".
fn tcp_server(lab: &Lab, guest: &str, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let listener = in_guest(lab, guest, || TcpListener::bind(addr).unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let _ = s.write_all(format!("world:{}", String::from_utf8_lossy(&buf[..n])).as_bytes());
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// A UDP echo server in `guest`.
fn udp_server(lab: &Lab, guest: &str, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let sock = in_guest(lab, guest, || UdpSocket::bind(addr).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    })
}

fn udp_ask(lab: &Lab, from: &str, local: SocketAddr, to: SocketAddr) -> Option<String> {
    in_guest(lab, from, || {
        let s = UdpSocket::bind(local).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        for _ in 0..2 {
            s.send_to(b"question", to).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = s.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    })
}

/// One ICMP echo from `guest` to `to` over a raw socket; whether the reply came.
fn ping(lab: &Lab, guest: &str, to: Ipv4Addr) -> bool {
    in_guest(lab, guest, || {
        // SAFETY: raw socket calls with checked results and sized buffers.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            assert!(fd >= 0);
            let tv = libc::timeval { tv_sec: 0, tv_usec: 300_000 };
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), 16);
            let id: u16 = 0x4d53;
            let mut msg = vec![8u8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
            msg.extend_from_slice(b"microseg-ping");
            let mut sum: u32 = msg.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            msg[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from(to).to_be() },
                sin_zero: [0; 8],
            };
            let mut got = false;
            for _ in 0..3 {
                libc::sendto(fd, msg.as_ptr().cast(), msg.len(), 0, (&addr as *const libc::sockaddr_in).cast(), 16);
                let mut buf = [0u8; 256];
                loop {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 28 {
                        break;
                    }
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    if buf[12..16] == to.octets() && buf[ihl] == 0 && u16::from_be_bytes([buf[ihl + 4], buf[ihl + 5]]) == id {
                        got = true;
                        break;
                    }
                }
                if got {
                    break;
                }
            }
            libc::close(fd);
            got
        }
    })
}

/// The neighbour entry `guest` has for `addr`: its state, and whether it
/// holds a link-layer address.
fn neighbour(lab: &Lab, guest: &str, addr: &str) -> String {
    let ns = &lab.guest_ns(guest).name;
    sh(&format!("ip -n {ns} neigh show {addr}")).trim().to_string()
}

fn resolved(entry: &str) -> bool {
    entry.contains("lladdr")
}

#[test]
fn a_one_way_rule_opens_one_way_and_replies_come_back() {
    let sandbox = Sandbox::new("oneway");
    let ms = sandbox.microseg();
    let mut lab = node();
    sandbox.write_config(&config(true));
    ms.apply_full().unwrap();
    let (a, b, b2, c) = ("veth101i0", "veth102i0", "veth104i0", "veth103i0");
    let (ip_a, ip_b) = (lab.endpoint_ip(a), lab.endpoint_ip(b));

    // TCP: a reaches b:80 and data flows both ways; b:81 is closed to a.
    let _s80 = tcp_server(&lab, b, SocketAddr::V4(SocketAddrV4::new(ip_b, 80)));
    let _s81 = tcp_server(&lab, b, SocketAddr::V4(SocketAddrV4::new(ip_b, 81)));
    assert_eq!(tcp_talk(&lab, a, SocketAddrV4::new(ip_b, 80).into()).unwrap(), "world:hello");
    assert!(tcp_talk(&lab, a, SocketAddrV4::new(ip_b, 81).into()).is_err(), "a reached b:81");
    // ARP ran for real, in both directions, as the policy says.
    assert!(resolved(&neighbour(&lab, a, &ip_b.to_string())), "a could not resolve b");
    assert!(resolved(&neighbour(&lab, b, &ip_a.to_string())), "b could not resolve a to answer");
    // b opens nothing toward a.
    let _sa = tcp_server(&lab, a, SocketAddr::V4(SocketAddrV4::new(ip_a, 80)));
    assert!(tcp_talk(&lab, b, SocketAddrV4::new(ip_a, 80).into()).is_err(), "b opened a connection toward a");

    // UDP request and response (front -> b covers a, nested); not the other way.
    let _u = udp_server(&lab, b, SocketAddr::V4(SocketAddrV4::new(ip_b, 5353)));
    let ask = |from, local: Ipv4Addr, to: Ipv4Addr| {
        udp_ask(&lab, from, SocketAddrV4::new(local, 0).into(), SocketAddrV4::new(to, 5353).into())
    };
    assert_eq!(ask(a, ip_a, ip_b).as_deref(), Some("question"), "a's UDP request got no answer");
    let _ua = udp_server(&lab, a, SocketAddr::V4(SocketAddrV4::new(ip_a, 5353)));
    assert_eq!(ask(b, ip_b, ip_a), None, "b opened UDP toward a");

    // ICMP echo one way.
    assert!(ping(&lab, a, ip_b), "a -> b echo");
    assert!(!ping(&lab, b, ip_a), "b -> a echo");

    // IPv6: neighbour discovery and UDP over it, the same way.
    let _u6 = udp_server(&lab, b, SocketAddr::V6(SocketAddrV6::new(v6(2), 5353, 0, 0)));
    let got = udp_ask(&lab, a, SocketAddrV6::new(v6(1), 0, 0, 0).into(), SocketAddrV6::new(v6(2), 5353, 0, 0).into());
    assert_eq!(got.as_deref(), Some("question"), "a's UDP request over IPv6");
    assert!(resolved(&neighbour(&lab, a, &v6(2).to_string())), "ND a -> b");
    let _u6a = udp_server(&lab, a, SocketAddr::V6(SocketAddrV6::new(v6(1), 5353, 0, 0)));
    let back = udp_ask(&lab, b, SocketAddrV6::new(v6(2), 0, 0, 0).into(), SocketAddrV6::new(v6(1), 5353, 0, 0).into());
    assert_eq!(back, None, "b opened UDP over IPv6 toward a");

    // A scan from c (no rule toward anyone) resolves nobody, over ARP and ND.
    for target in [a, b, b2, "veth105i0"] {
        let (t4, t6) = (lab.endpoint_ip(target), v6(lab.endpoint_ip(target).octets()[3]));
        in_guest(&lab, c, || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = s.send_to(b"scan", SocketAddrV4::new(t4, 9));
            let s6 = UdpSocket::bind("[::]:0").unwrap();
            let _ = s6.send_to(b"scan", SocketAddrV6::new(t6, 9, 0, 0));
        });
    }
    std::thread::sleep(Duration::from_millis(3500));
    for target in [a, b, b2, "veth105i0"] {
        let ip4 = lab.endpoint_ip(target);
        let e4 = neighbour(&lab, c, &ip4.to_string());
        let e6 = neighbour(&lab, c, &v6(ip4.octets()[3]).to_string());
        assert!(!resolved(&e4) && !resolved(&e6), "c's scan found {target}: {e4} / {e6}");
    }

    // The tap guest (a) asks b over UDP and answers b's ARP itself.
    let fd = match &lab.endpoints.iter().find(|e| e.name == "tap107i0").unwrap().kind {
        Kind::Tap { fd } => fd.try_clone().unwrap(),
        _ => unreachable!(),
    };
    let tap_ip = ip(7);
    let request = Frame::new(mac(7), mac(2)).udp(tap_ip.into(), ip_b.into(), 47000, 5353, b"from-tap");
    let mut fd = fd;
    fd.write_all(&request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut answered = None;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && answered.is_none() {
        match fd.read(&mut buf) {
            Ok(n) if n >= 42 && buf[12..14] == [0x08, 0x06] && buf[21] == 1 && buf[38..42] == tap_ip.octets() => {
                // b asks who has the tap's address: the tap answers.
                let requester = Ipv4Addr::new(buf[28], buf[29], buf[30], buf[31]);
                let mut asker = [0u8; 6];
                asker.copy_from_slice(&buf[6..12]);
                fd.write_all(&arp(mac(7), asker, 2, tap_ip, requester)).unwrap();
            }
            Ok(n) if n >= 42 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 && buf[30..34] == tap_ip.octets() => {
                answered = Some(String::from_utf8_lossy(&buf[42..n]).into_owned());
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert_eq!(answered.as_deref(), Some("from-tap"), "the tap guest's request got no answer");
    let _ = send_raw; // (raw frames from namespace guests are covered elsewhere)
    lab.endpoints.clear();
}

#[test]
fn revoking_a_rule_stops_an_established_connection_within_a_second() {
    use std::sync::{Arc, Mutex};
    let sandbox = Sandbox::new("revoke");
    let ms = sandbox.microseg();
    let lab = node();
    sandbox.write_config(&config(true));
    ms.apply_full().unwrap();
    let (a, b) = ("veth101i0", "veth102i0");
    let ip_b = lab.endpoint_ip(b);
    // b's server logs what it receives on one long-lived connection.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = in_guest(&lab, b, || TcpListener::bind(SocketAddrV4::new(ip_b, 80)).unwrap());
    let log = received.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        drop(listener);
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            let what = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = s.write_all(format!("world:{what}").as_bytes());
            log.lock().unwrap().push(what);
        }
    });
    let mut conn = in_guest(&lab, a, || TcpStream::connect_timeout(&SocketAddrV4::new(ip_b, 80).into(), Duration::from_secs(3)))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(3000))).unwrap();
    let mut buf = [0u8; 64];
    conn.write_all(b"one").unwrap();
    let n = conn.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"world:one", "the connection carries data both ways");

    // The rule goes: within a second nothing more reaches b on that connection.
    sandbox.write_config(&config(false));
    let t = Instant::now();
    ms.apply_full().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "apply_full took {took:?}");
    conn.write_all(b"two").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(*received.lock().unwrap(), vec!["one".to_string()], "data reached b after the rule was revoked");
    drop(conn);
    drop(server);

    // Re-added: new connections work again.
    sandbox.write_config(&config(true));
    ms.apply_full().unwrap();
    let _s = tcp_server(&lab, b, SocketAddr::V4(SocketAddrV4::new(ip_b, 80)));
    assert_eq!(tcp_talk(&lab, a, SocketAddrV4::new(ip_b, 80).into()).unwrap(), "world:hello");
}

/// A flood of new flows from `guest` toward `to` (a new destination port
/// each datagram) until stopped; more than the flow table holds per second.
struct Flood {
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One flood test at a time: two floods would take both CPUs of a small
/// machine and starve the flows they are meant to leave alone.
fn one_flood_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Flood {
    fn start(lab: &Lab, guest: &str, to: Ipv4Addr) -> Flood {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        // The flooder may resolve nobody, so it gets the address by hand.
        ip_batch(Some(&lab.guest_ns(guest).name), &format!("neigh replace {to} lladdr 02:00:00:00:00:02 dev eth0 nud permanent\n"));
        let (on, sent) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        let sock = in_guest(lab, guest, || UdpSocket::bind("0.0.0.0:0").unwrap());
        let (flag, count) = (on.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut port = 1u16;
            while flag.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    let _ = sock.send_to(b"x", SocketAddrV4::new(to, port));
                    port = port.wrapping_add(1).max(1);
                }
                count.fetch_add(256, Ordering::Relaxed);
            }
        });
        Flood { on, sent, thread: Some(thread) }
    }

    /// Stops it; how many new flows it sent.
    fn stop(mut self) -> u64 {
        self.on.store(false, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Longest gap between two arrivals and how many arrived, from a loop that
/// runs `tick` (true: something arrived) for `secs` seconds.
fn arrivals(secs: u64, mut tick: impl FnMut() -> bool) -> (u32, Duration) {
    let start = Instant::now();
    let (mut arrived, mut longest_gap, mut last) = (0u32, Duration::ZERO, Instant::now());
    while start.elapsed() < Duration::from_secs(secs) {
        if tick() {
            arrived += 1;
            longest_gap = longest_gap.max(last.elapsed());
            last = Instant::now();
        }
    }
    (arrived, longest_gap.max(last.elapsed()))
}

#[test]
fn a_flood_of_new_flows_does_not_break_another_guests_flow() {
    let _alone = one_flood_at_a_time();
    let sandbox = Sandbox::new("flood");
    let ms = sandbox.microseg();
    let lab = node();
    sandbox.write_config(&config(true));
    ms.apply_full().unwrap();
    let (a, b, c) = ("veth101i0", "veth102i0", "veth103i0");
    let (ip_a, ip_b) = (lab.endpoint_ip(a), lab.endpoint_ip(b));
    let _echo = udp_server(&lab, b, SocketAddr::V4(SocketAddrV4::new(ip_b, 5353)));
    let sock = in_guest(&lab, a, || UdpSocket::bind(SocketAddrV4::new(ip_a, 0)).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // Warm up the active flow (ARP, the flow entry).
    assert!(udp_ask(&lab, a, SocketAddrV4::new(ip_a, 0).into(), SocketAddrV4::new(ip_b, 5353).into()).is_some());

    // c floods for 10 s; meanwhile a's flow exchanges a request every 20 ms.
    let flood = Flood::start(&lab, c, ip_b);
    let mut asked = 0u32;
    let mut buf = [0u8; 64];
    let (answered, longest_gap) = arrivals(10, || {
        sock.send_to(b"ping", SocketAddrV4::new(ip_b, 5353)).unwrap();
        asked += 1;
        let got = sock.recv(&mut buf).is_ok();
        std::thread::sleep(Duration::from_millis(20));
        got
    });
    let flooded = flood.stop();
    let flows = sys::obj_get(&ms.policy().map_pin(FLOWS.name)).unwrap();
    let table = FLOWS.open_fd(flows.as_fd()).unwrap().entries().unwrap().len();
    println!(
        "flood: {flooded} new flows from c in 10 s ({} per second), flow table at {table}; a's flow: {answered}/{asked} answered, \
         longest gap {longest_gap:?}",
        flooded / 10
    );
    assert!(flooded > 200_000, "the flood was too weak to fill the table");
    assert!(longest_gap < Duration::from_secs(1), "a's flow was broken for {longest_gap:?}");
    assert!(answered * 10 >= asked * 9, "a's flow lost more than a tenth of its answers: {answered}/{asked}");
    // The flow still works, and a new one can be opened with the table full.
    sock.send_to(b"after", SocketAddrV4::new(ip_b, 5353)).unwrap();
    assert!(sock.recv(&mut buf).is_ok(), "a's flow is gone after the flood");
    assert!(udp_ask(&lab, a, SocketAddrV4::new(ip_a, 0).into(), SocketAddrV4::new(ip_b, 5353).into()).is_some());
}

