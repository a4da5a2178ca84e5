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
