//! Guest NIC names and their netdevs.

use std::ffi::CString;

/// Kernel limit on interface names, without the NUL.
const IFNAMSIZ_CHARS: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    /// QEMU tap, `tap<vmid>i<n>`.
    Tap,
    /// LXC host-side veth, `veth<vmid>i<n>`.
    Veth,
}

impl NicKind {
    pub const ALL: [NicKind; 2] = [NicKind::Tap, NicKind::Veth];

    fn prefix(self) -> &'static str {
        match self {
            NicKind::Tap => "tap",
            NicKind::Veth => "veth",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestNic {
    pub kind: NicKind,
    pub vmid: u32,
    pub iface: u32,
}

impl GuestNic {
    /// Parses `tap<vmid>i<n>` / `veth<vmid>i<n>`: decimal, no sign, no leading
    /// zeros, nothing else, and short enough to be a netdev name. Anything
    /// else (including non-UTF-8 bytes) is not a guest NIC.
    pub fn parse(name: &[u8]) -> Option<GuestNic> {
        if name.len() > IFNAMSIZ_CHARS {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        let (kind, rest) = NicKind::ALL.iter().find_map(|k| name.strip_prefix(k.prefix()).map(|r| (*k, r)))?;
        let (vmid, iface) = rest.split_once('i')?;
        Some(GuestNic { kind, vmid: decimal(vmid)?, iface: decimal(iface)? })
    }

    pub fn name(&self) -> String {
        format!("{}{}i{}", self.kind.prefix(), self.vmid, self.iface)
    }
}

fn decimal(s: &str) -> Option<u32> {
    let leading_zero = s.len() > 1 && s.starts_with('0');
    if s.is_empty() || leading_zero || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The ifindex of `name` in this network namespace, `None` if there is none.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every guest NIC of this network namespace, with its ifindex.
pub fn guest_nics() -> Vec<(GuestNic, u32)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name);
            if let Some(nic) = GuestNic::parse(name.to_bytes()) {
                out.push((nic, (*p).if_index));
            }
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// What an address of this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrKind {
    Local,
    Broadcast,
}

/// Every address of this network namespace's netdevs but guest NICs (bridge
/// ports, whose own link-local addresses never receive; leaving them out
/// keeps guest starts from churning the map), and the broadcast
/// addresses of their IPv4 subnets: the configured one, and the subnet's
/// all-ones address, which the kernel treats as a broadcast for every
/// prefix shorter than /31 even when none is configured.
pub fn node_addresses() -> std::io::Result<Vec<(std::net::IpAddr, AddrKind)>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed with freeifaddrs below; every
    // sockaddr is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut p = list;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if !ifa.ifa_name.is_null() && GuestNic::parse(std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes()).is_some() {
                continue;
            }
            let read = |sa: *const libc::sockaddr| -> Option<IpAddr> {
                if sa.is_null() {
                    return None;
                }
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let a = &*(sa as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let a = &*(sa as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            let addr = read(ifa.ifa_addr);
            if let Some(a) = addr {
                out.push((a, AddrKind::Local));
            }
            if let (Some(IpAddr::V4(a)), Some(IpAddr::V4(mask))) = (addr, read(ifa.ifa_netmask)) {
                if u32::from(mask).count_ones() < 31 {
                    out.push((IpAddr::V4(Ipv4Addr::from(u32::from(a) | !u32::from(mask))), AddrKind::Broadcast));
                }
            }
            if ifa.ifa_flags & libc::IFF_BROADCAST as u32 != 0 {
                if let Some(b @ IpAddr::V4(_)) = read(ifa.ifa_ifu) {
                    if !b.is_unspecified() {
                        out.push((b, AddrKind::Broadcast));
                    }
                }
            }
        }
        libc::freeifaddrs(list);
    }
    Ok(out)
}

/// The current name of netdev `ifindex` in this network namespace.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_GBP: u16 = 23;
/// Attribute types carry flags (nested, byte order) in their top bits.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The attributes in `b` as (type, payload) pairs; malformed tails end the walk.
fn attrs<'a>(mut b: &'a [u8]) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, payload))
    })
}

/// For a VXLAN netdev, whether it was created with `gbp` (so that the
/// group crosses nodes, SPEC section 5); `None` for any other netdev or
/// none at all. One `RTM_GETLINK` on a netlink socket that lives for this
/// call, with a bounded wait.
pub fn vxlan_gbp(ifindex: u32) -> std::io::Result<Option<bool>> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // SAFETY: plain socket(2); the descriptor is owned (closed on return).
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: valid option value of the size given.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: sending from a valid buffer of its length (to the kernel: no address needed).
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: receiving into a valid buffer of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(Error::last_os_error());
    }
    let msg = &buf[..n as usize];
    if msg.len() < 16 {
        return Err(Error::new(ErrorKind::InvalidData, "short netlink answer"));
    }
    if u16::from_ne_bytes([msg[4], msg[5]]) == NLMSG_ERROR {
        let errno = msg.get(16..20).map_or(0, |e| i32::from_ne_bytes(e.try_into().unwrap_or([0; 4])));
        if errno == -libc::ENODEV {
            return Ok(None);
        }
        return Err(Error::from_raw_os_error(-errno));
    }
    let len = (u32::from_ne_bytes(msg[0..4].try_into().unwrap_or([0; 4])) as usize).min(msg.len());
    let Some(body) = msg.get(32..len) else { return Ok(None) };
    let Some((_, info)) = attrs(body).find(|(t, _)| *t == IFLA_LINKINFO) else { return Ok(None) };
    let kind = attrs(info).find(|(t, _)| *t == IFLA_INFO_KIND).map(|(_, k)| k.split(|&c| c == 0).next().unwrap_or(k));
    if kind != Some(&b"vxlan"[..]) {
        return Ok(None);
    }
    let data = attrs(info).find(|(t, _)| *t == IFLA_INFO_DATA).map(|(_, d)| d).unwrap_or(&[]);
    let gbp = attrs(data).any(|(t, _)| t == IFLA_VXLAN_GBP);
    Ok(Some(gbp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_nic_names() {
        let t = GuestNic::parse(b"tap100i0").unwrap();
        assert_eq!((t.kind, t.vmid, t.iface), (NicKind::Tap, 100, 0));
        let v = GuestNic::parse(b"veth4242i7").unwrap();
        assert_eq!((v.kind, v.vmid, v.iface), (NicKind::Veth, 4242, 7));
        assert_eq!(v.name(), "veth4242i7");
        for bad in [
            &b""[..],
            b"tap",
            b"tap1i",
            b"tapi0",
            b"tap1",
            b"tap01i0",
            b"tap1i00",
            b"tap+1i0",
            b"tap1i0 ",
            b"eth0",
            b"vmbr0",
            b"fwpr100p0",
            b"../../etc/passwd",
            b"tap1\0i0",
            b"tap\xff1i0",
            b"tap99999999999i0",
            b"tap1i0i0",
        ] {
            assert_eq!(GuestNic::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(GuestNic::parse(&[b'a'; 300]), None);
    }
}
