//! Raw frames for test runs and for guests that write to a tap or a packet
//! socket: Ethernet with any VLAN tags, IPv4 or IPv6 (with extension
//! headers), UDP.

use std::net::IpAddr;

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// The Internet checksum of `data`.
pub fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame under construction: Ethernet header, tags, then the L3 packet.
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, VID) from the outermost in.
    pub tags: Vec<(u16, u16)>,
}

impl Frame {
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Frame {
        Frame { dst_mac, src_mac, tags: Vec::new() }
    }

    pub fn tag(mut self, tpid: u16, vid: u16) -> Frame {
        self.tags.push((tpid, vid));
        self
    }

    fn eth(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, vid) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IPv4 or IPv6 with protocol `proto` and `payload` (IPv6: after `ext`,
    /// a list of (next-header code, header bytes) extension headers).
    pub fn ip(&self, src: IpAddr, dst: IpAddr, proto: u8, ext: &[(u8, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut f = self.eth(0x0800);
                let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
                h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let c = csum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(payload);
                f
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut f = self.eth(0x86dd);
                let mut chain = Vec::new();
                let mut codes: Vec<u8> = ext.iter().map(|(c, _)| *c).collect();
                codes.push(proto);
                for (i, (_, body)) in ext.iter().enumerate() {
                    let mut e = body.clone();
                    e[0] = codes[i + 1];
                    chain.extend_from_slice(&e);
                }
                let len = (chain.len() + payload.len()) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&len.to_be_bytes());
                f.push(codes[0]);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&chain);
                f.extend_from_slice(payload);
                f
            }
            _ => panic!("mixed address families"),
        }
    }

    /// IP/UDP (checksum 0 over IPv4; a correct one over IPv6, where it is required).
    pub fn udp(&self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        self.udp_ext(src, dst, &[], sport, dport, payload)
    }

    pub fn udp_ext(&self, src: IpAddr, dst: IpAddr, ext: &[(u8, Vec<u8>)], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(u.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            pseudo.extend_from_slice(&u);
            let c = match csum(&pseudo) {
                0 => 0xffff,
                c => c,
            };
            u[6..8].copy_from_slice(&c.to_be_bytes());
        }
        self.ip(src, dst, 17, ext, &u)
    }
}

/// IPv6 extension headers, with the next-header byte filled in by `Frame::ip`.
pub fn hop_by_hop() -> (u8, Vec<u8>) {
    (0, vec![0, 0, 1, 4, 0, 0, 0, 0])
}
pub fn dest_opts() -> (u8, Vec<u8>) {
    (60, vec![0, 0, 1, 4, 0, 0, 0, 0])
}
/// A segment routing header (routing type 4) with one segment.
pub fn srh(segment: std::net::Ipv6Addr) -> (u8, Vec<u8>) {
    let mut h = vec![0, 2, 4, 0, 0, 0, 0, 0];
    h.extend_from_slice(&segment.octets());
    (43, h)
}
/// A segment routing header with one segment and `tag`, as the kernel's
/// `mode encap` writes it (segments left 0).
pub fn srh_tagged(segment: std::net::Ipv6Addr, tag: u16) -> (u8, Vec<u8>) {
    let (code, mut h) = srh(segment);
    h[6..8].copy_from_slice(&tag.to_be_bytes());
    (code, h)
}
/// A fragment header with `offset` (in 8-byte units) and the M flag.
pub fn fragment(offset: u16, more: bool) -> (u8, Vec<u8>) {
    let v = (offset << 3) | u16::from(more);
    let b = v.to_be_bytes();
    (44, vec![0, 0, b[0], b[1], 0, 0, 0, 1])
}

/// Sends one raw frame on `ifname` of this thread's network namespace
/// through an `AF_PACKET` socket (as a guest or an outsider can).
pub fn send_raw(ifname: &str, frame: &[u8]) {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain socket calls with checked results and sized structs.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert_ne!(ifindex, 0, "no {ifname}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(n, frame.len() as isize, "send on {ifname}: {err}");
    }
}

/// The MAC address of `ifname` in namespace `ns` (None: this thread's).
pub fn mac_of(ns: Option<&str>, ifname: &str) -> [u8; 6] {
    let out = match ns {
        Some(ns) => super::sh(&format!("ip -n {ns} -br link show {ifname}")),
        None => super::sh(&format!("ip -br link show {ifname}")),
    };
    let m = out.split_whitespace().nth(2).expect("mac in ip -br link");
    let b: Vec<u8> = m.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    b.try_into().unwrap()
}

/// A TCP header (no options) with `flags`, then `payload`.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_FIN: u8 = 0x01;

/// An ICMP or ICMPv6 message: type, code 0, checksum 0, then `rest`.
pub fn icmp(kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(rest);
    m
}

/// An echo body: identifier and sequence.
pub fn echo(id: u16, seq: u16) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    b
}

/// An Ethernet/IPv4 ARP frame.
pub fn arp(src_mac: [u8; 6], dst_mac: [u8; 6], op: u16, sender: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}
