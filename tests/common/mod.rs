//! Test scaffolding against the real kernel: a private bpffs and run directory
//! per test, a private "host" network namespace entered by the test thread,
//! and guests in namespaces of their own (veth) or behind a real tap driven
//! through its file descriptor, as QEMU drives it. Everything is torn down on
//! drop, so also when a test fails.
#![allow(dead_code)]

pub mod btf;
pub mod packet;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use microseg::kernel::maps::{MapDef, Shared};
use microseg::subsystems::microseg::maps::{NicKey, NicValue, PolicyKey, PolicyValue, POLICY, TAP_TO_GROUP};
use microseg::subsystems::microseg::OBJECT as MICROSEG_OBJECT;
use microseg::config::{Mark, MicrosegConfig};
use microseg::subsystems::microseg::resolve::{PairTable, Verdict};
pub use microseg::{Microseg, Settings};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, short enough for netns names.
pub fn unique(tag: &str) -> String {
    format!("ms{}-{}-{tag}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Runs a shell command; panics with its output on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Feeds `batch` to `ip [-n ns] -batch -`.
pub fn ip_batch(ns: Option<&str>, batch: &str) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip");
    child.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ip -batch failed:\n{batch}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The CLI with the sandbox's settings, in this thread's network namespace
/// (only test crates that declare the binary may call it).
#[macro_export]
macro_rules! cli {
    ($sandbox:expr, $args:expr) => {{
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pve-microseg"));
        cmd.args($args)
            .env("PVE_MICROSEG_RUNNING_CONFIG", &$sandbox.settings.running_config)
            .env("PVE_MICROSEG_BPF_ROOT", &$sandbox.settings.bpf_root)
            .env("PVE_MICROSEG_RUN_DIR", &$sandbox.settings.run_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }};
}

/// A private bpffs (mounted outside /sys, in this mount namespace), run
/// directory and running-config path.
pub struct Sandbox {
    pub dir: PathBuf,
    pub settings: Settings,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let dir = PathBuf::from("/tmp/microseg-tests").join(unique(tag));
        let bpf = dir.join("bpf");
        std::fs::create_dir_all(&bpf).unwrap();
        sh(&format!("mount -t bpf bpf {}", bpf.display()));
        let settings = Settings {
            running_config: dir.join("running-config"),
            bpf_root: bpf.join("proxmox-ebpf"),
            run_dir: dir.join("run"),
        };
        Sandbox { dir, settings }
    }

    pub fn microseg(&self) -> Microseg {
        Microseg::new(self.settings.clone(), &MICROSEG_OBJECT)
    }

    pub fn microseg_with(&self, object: &'static microseg::kernel::object::Embedded) -> Microseg {
        Microseg::new(self.settings.clone(), object)
    }

    pub fn write_config(&self, json: &str) {
        std::fs::write(&self.settings.running_config, json).unwrap();
    }

    /// Every file below the pin root and the run directory, relative paths.
    pub fn files(&self) -> Vec<String> {
        state_files(&self.settings)
    }
}

/// Every file below `settings`' pin root and run directory, sorted.
pub fn state_files(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for root in [&settings.bpf_root, &settings.run_dir] {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root.parent().unwrap()).unwrap().display().to_string());
        if p.is_dir() {
            walk(root, &p, out);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.microseg().clear() {
            eprintln!("sandbox clear: {e:#}");
        }
        let bpf = self.dir.join("bpf");
        let c = std::ffi::CString::new(bpf.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain umount of our own mount point.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A named network namespace.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        sh(&format!("ip netns add {name}"));
        Netns { name }
    }

    pub fn open(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn setns(fd: &impl AsRawFd) {
    // SAFETY: setns on an open namespace file; affects only this thread.
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Runs `f` with this thread inside `ns`, then returns to where it was.
pub fn in_netns<T>(ns: &Netns, f: impl FnOnce() -> T) -> T {
    let back = File::open("/proc/thread-self/ns/net").unwrap();
    setns(&ns.open());
    let r = f();
    setns(&back);
    r
}

/// The test thread's own "host" namespace: the library, `ip` and every
/// socket opened on this thread see its netdevs until it is dropped.
pub struct HostNs {
    pub ns: Netns,
    back: File,
}

impl HostNs {
    pub fn enter() -> HostNs {
        let back = File::open("/proc/thread-self/ns/net").unwrap();
        let ns = Netns::new("host");
        setns(&ns.open());
        sh("ip link set lo up");
        HostNs { ns, back }
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        setns(&self.back);
    }
}

pub const SUBNET: &str = "10.77.0";
pub const PORT: u16 = 5555;

pub fn mac(host: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, host]
}

pub fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn ip(host: u8) -> Ipv4Addr {
    format!("{SUBNET}.{host}").parse().unwrap()
}

/// One endpoint on the VNet: a guest (veth or tap) or the host on the bridge.
pub struct Endpoint {
    pub name: String,
    pub host: u8,
    pub kind: Kind,
}

pub enum Kind {
    /// The host stack on a node's bridge: unstamped.
    Bridge { sock: UdpSocket, tx: UdpSocket, node: String },
    /// A container-like guest: its own namespace behind `veth<vmid>i<n>`.
    Veth { ns: Netns, sock: UdpSocket, tx: UdpSocket },
    /// A VM-like guest: we are the guest, reading and writing the tap's fd.
    Tap { fd: File },
}

impl Endpoint {
    fn send(&mut self, to: &Endpoint, payload: &[u8]) {
        let dst = SocketAddrV4::new(ip(to.host), PORT);
        match &mut self.kind {
            // From an ephemeral port, never PORT: a datagram is then never
            // the reply of one sent the other way, and measures one
            // direction of the policy.
            Kind::Bridge { tx, .. } | Kind::Veth { tx, .. } => {
                tx.send_to(payload, dst).expect("send_to");
            }
            Kind::Tap { fd } => {
                let mut frame = udp_frame(mac(self.host), mac(to.host), ip(self.host), ip(to.host), payload);
                frame[34..36].copy_from_slice(&(40000 + u16::from(self.host)).to_be_bytes());
                fd.write_all(&frame).expect("write tap");
            }
        }
    }

    fn recv_all(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        match &mut self.kind {
            Kind::Bridge { sock, .. } | Kind::Veth { sock, .. } => {
                while let Ok((n, _)) = sock.recv_from(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
            }
            Kind::Tap { fd } => {
                while let Ok(n) = fd.read(&mut buf) {
                    if let Some(p) = parse_udp_to(&buf[..n], ip(self.host)) {
                        got.push(p);
                    }
                }
            }
        }
        got
    }
}

/// Simulated Proxmox nodes: each a bridge as the VNet with guests on it. The
/// first node is the test thread's own namespace; more can be added.
pub struct Lab {
    pub endpoints: Vec<Endpoint>,
    pub nodes: Vec<Netns>,
    pub host: HostNs,
}

fn bridge_batch(host: u8) -> String {
    format!(
        "link add vmbr0 type bridge\n\
         link set vmbr0 address {}\n\
         addr add {}/24 dev vmbr0\n\
         link set vmbr0 up\n",
        mac_str(mac(host)),
        ip(host)
    )
}

impl Lab {
    /// Creates the host namespace (entered by this thread) with bridge `vmbr0`
    /// and the host's address on it.
    pub fn new() -> Lab {
        let host = HostNs::enter();
        ip_batch(None, &bridge_batch(254));
        let (sock, tx) = (bind_udp(254), bind_tx(254));
        let node = host.ns.name.clone();
        let endpoints = vec![Endpoint { name: "host".into(), host: 254, kind: Kind::Bridge { sock, tx, node } }];
        Lab { endpoints, nodes: Vec::new(), host }
    }

    /// The first node's namespace name (the test thread's own).
    pub fn first_node(&self) -> String {
        self.host.ns.name.clone()
    }

    /// Adds another node with its own bridge; its host stack is endpoint `name`.
    pub fn add_node(&mut self, name: &str, host: u8) -> String {
        let ns = Netns::new("node");
        ip_batch(Some(&ns.name), &format!("link set lo up\n{}", bridge_batch(host)));
        let (sock, tx) = in_netns(&ns, || (bind_udp(host), bind_tx(host)));
        let node = ns.name.clone();
        self.endpoints.push(Endpoint { name: name.into(), host, kind: Kind::Bridge { sock, tx, node: node.clone() } });
        self.nodes.push(ns);
        self.static_neighbours();
        node
    }

    pub fn node(&self, name: &str) -> &Netns {
        self.nodes.iter().find(|n| n.name == name).expect("node")
    }

    /// Adds an LXC-like guest behind `veth<vmid>i<n>`; not yet enslaved when `plug` is false.
    pub fn add_veth(&mut self, name: &str, host: u8, plug: bool) {
        let node = self.first_node();
        self.add_veth_on(&node, name, host, plug);
    }

    /// Adds an LXC-like guest on node `node`.
    pub fn add_veth_on(&mut self, node: &str, name: &str, host: u8, plug: bool) {
        let ns = Netns::new(name);
        ip_batch(
            Some(node),
            &format!("link add {name} type veth peer name eth0 netns {}\nlink set {name} mtu 1500\n", ns.name),
        );
        ip_batch(
            Some(&ns.name),
            &format!(
                "link set lo up\nlink set eth0 address {}\naddr add {}/24 dev eth0\nlink set eth0 up\n",
                mac_str(mac(host)),
                ip(host)
            ),
        );
        if plug {
            ip_batch(Some(node), &format!("link set {name} master vmbr0\nlink set {name} up\n"));
        }
        let (sock, tx) = in_netns(&ns, || (bind_udp(host), bind_tx(host)));
        self.endpoints.push(Endpoint { name: name.into(), host, kind: Kind::Veth { ns, sock, tx } });
        self.static_neighbours();
    }

    /// Adds a VM-like guest: a real tap device, its fd held as QEMU holds it.
    pub fn add_tap(&mut self, name: &str, host: u8, plug: bool) {
        let fd = open_tap(name);
        if plug {
            plug_port(name);
        }
        self.endpoints.push(Endpoint { name: name.into(), host, kind: Kind::Tap { fd } });
        self.static_neighbours();
    }

    /// Permanent neighbour entries everywhere: no ARP, so one UDP datagram
    /// measures exactly one direction of the policy.
    fn static_neighbours(&self) {
        let entries: Vec<(Ipv4Addr, String)> = self.endpoints.iter().map(|e| (ip(e.host), mac_str(mac(e.host)))).collect();
        let batch = |dev: &str, me: u8| {
            entries
                .iter()
                .filter(|(a, _)| *a != ip(me))
                .map(|(a, m)| format!("neigh replace {a} lladdr {m} dev {dev} nud permanent\n"))
                .collect::<String>()
        };
        for e in &self.endpoints {
            match &e.kind {
                Kind::Bridge { node, .. } => ip_batch(Some(node), &batch("vmbr0", e.host)),
                Kind::Veth { ns, .. } => ip_batch(Some(&ns.name), &batch("eth0", e.host)),
                Kind::Tap { .. } => {}
            }
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.name.clone()).collect()
    }

    /// Sends one datagram for every ordered pair and reports which arrived.
    pub fn measure(&mut self) -> Matrix {
        for e in &mut self.endpoints {
            e.recv_all();
        }
        let n = self.endpoints.len();
        for round in 0..2 {
            for i in 0..n {
                for j in 0..n {
                    if i == j {
                        continue;
                    }
                    let payload = format!("{}>{}#{round}", self.endpoints[i].name, self.endpoints[j].name);
                    let (a, b) = pair_mut(&mut self.endpoints, i, j);
                    a.send(b, payload.as_bytes());
                }
            }
        }
        let mut m = Matrix::new();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    m.insert((self.endpoints[i].name.clone(), self.endpoints[j].name.clone()), false);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_millis(400);
        while Instant::now() < deadline {
            for e in &mut self.endpoints {
                let me = e.name.clone();
                for p in e.recv_all() {
                    let s = String::from_utf8_lossy(&p);
                    let Some((pair, _)) = s.split_once('#') else { continue };
                    let Some((src, dst)) = pair.split_once('>') else { continue };
                    if dst == me {
                        m.insert((src.to_string(), dst.to_string()), true);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }
}

fn pair_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &T) {
    assert_ne!(i, j);
    if i < j {
        let (a, b) = v.split_at_mut(j);
        (&mut a[i], &b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&mut b[0], &a[j])
    }
}

pub fn plug_port(name: &str) {
    sh(&format!("ip link set {name} master vmbr0 && ip link set {name} up"));
}

/// A socket to send from, on an ephemeral port.
fn bind_tx(host: u8) -> UdpSocket {
    UdpSocket::bind(SocketAddrV4::new(ip(host), 0)).expect("bind")
}

fn bind_udp(host: u8) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddrV4::new(ip(host), PORT)).expect("bind");
    s.set_nonblocking(true).unwrap();
    s
}

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// Opens `/dev/net/tun` and creates tap `name`, as QEMU does for a VM NIC.
pub fn open_tap(name: &str) -> File {
    let fd = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("open /dev/net/tun");
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF with a properly sized struct ifreq.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) };
    assert_eq!(r, 0, "TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    // SAFETY: F_SETFL O_NONBLOCK on our fd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    fd
}


/// Ethernet + IPv4 + UDP (checksum 0: optional over IPv4).
pub fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut iph = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph.extend_from_slice(&src.octets());
    iph.extend_from_slice(&dst.octets());
    let c = packet::csum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&iph);
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The UDP payload of `frame` if it is IPv4/UDP to `me`:PORT.
fn parse_udp_to(frame: &[u8], me: Ipv4Addr) -> Option<Vec<u8>> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 || frame[30..34] != me.octets() {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = 14 + ihl;
    if frame.get(udp + 2..udp + 4)? != PORT.to_be_bytes() {
        return None;
    }
    Some(frame.get(udp + 8..)?.to_vec())
}

/// A running config in the shape pve-network writes, with other SDN keys:
/// groups `(id, mark, parent)`, rules `(id, src, dst, allow)`, NICs `(vmid, group)`.
pub fn sdn_config(groups: &[(&str, u16, Option<&str>)], rules: &[(&str, Option<&str>, &str, bool)], nics: &[(u32, &str)]) -> String {
    let mut ids = Vec::new();
    for (id, mark, parent) in groups {
        let parent = parent.map(|p| format!(r#", "parent": "{p}""#)).unwrap_or_default();
        // Marks as strings, as Perl often writes them.
        ids.push(format!(r#""{id}": {{"type": "group", "id": "{id}", "mark": "{mark}"{parent}}}"#));
    }
    for (id, src, dst, allow) in rules {
        let src = src.map(|s| format!(r#", "src": "{s}""#)).unwrap_or_default();
        ids.push(format!(r#""{id}": {{"type": "rule", "id": "{id}", "dst": "{dst}", "allow": {}{src}}}"#, u8::from(*allow)));
    }
    for (vmid, group) in nics {
        ids.push(format!(
            r#""a{vmid}": {{"type": "assignment", "id": "a{vmid}", "vmid": {vmid}, "iface": 0, "group": "{group}"}}"#
        ));
    }
    format!(
        r#"{{"version": 3,
            "zones": {{"ids": {{"zone1": {{"type": "simple", "ipam": "pve"}}}}}},
            "vnets": {{"ids": {{"vnet1": {{"type": "vnet", "zone": "zone1"}}}}}},
            "microseg": {{"ids": {{ {} }}}}}}"#,
        ids.join(",\n")
    )
}

/// (src, dst) endpoint names -> delivered.
pub type Matrix = BTreeMap<(String, String), bool>;

/// The matrix the policy predicts: endpoint name -> group mark (0 if unstamped
/// or unassigned), and only assigned destinations are enforced.
pub fn predict(names: &[String], groups: &BTreeMap<String, Mark>, pairs: &PairTable) -> Matrix {
    let mut m = Matrix::new();
    for s in names {
        for d in names {
            if s == d {
                continue;
            }
            let src = groups.get(s).copied().unwrap_or(0);
            let ok = match groups.get(d) {
                None => true,
                Some(&dst) => pairs.get(&(src, dst)) == Some(&Verdict::Allow),
            };
            m.insert((s.clone(), d.clone()), ok);
        }
    }
    m
}

/// Endpoint -> group mark for every assigned guest NIC name in `cfg`.
pub fn nic_groups(cfg: &MicrosegConfig) -> BTreeMap<String, Mark> {
    let mut out = BTreeMap::new();
    for a in cfg.assignments.values() {
        let mark = cfg.groups[&a.group].mark;
        out.insert(format!("tap{}i{}", a.vmid, a.iface), mark);
        out.insert(format!("veth{}i{}", a.vmid, a.iface), mark);
    }
    out
}

pub fn render(m: &Matrix, names: &[String]) -> String {
    let mut s = format!("{:>12}", "src\\dst");
    for d in names {
        s.push_str(&format!("{d:>12}"));
    }
    s.push('\n');
    for src in names {
        s.push_str(&format!("{src:>12}"));
        for d in names {
            let c = if src == d { "-" } else if m[&(src.clone(), d.clone())] { "pass" } else { "drop" };
            s.push_str(&format!("{c:>12}"));
        }
        s.push('\n');
    }
    s
}

/// What the library left in the kernel and on disk, for before/after comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub files: Vec<String>,
    /// link pin -> (link id, program id, ifindex)
    pub links: BTreeMap<String, (u32, u32, u32)>,
    /// The policy map (LPM entries).
    pub rules: BTreeMap<PolicyKey, PolicyValue>,
    pub taps: BTreeMap<NicKey, NicValue>,
    /// program pin -> program id
    pub progs: BTreeMap<String, u32>,
}

pub fn snapshot(ms: &Microseg) -> Snapshot {
    use microseg::kernel::sys;
    use std::os::fd::AsFd;
    let mut links = BTreeMap::new();
    for l in ms.policy().link_pins().unwrap() {
        let fd = sys::obj_get(&l.path).unwrap();
        let i = sys::link_info(fd.as_fd()).unwrap();
        links.insert(format!("{}:{}", l.netdev, l.program), (i.id, i.prog_id, i.ifindex));
    }
    // Walked key by key, independently of the batched dump the library uses.
    fn walk<K: Shared, V: Shared>(ms: &Microseg, def: &MapDef<K, V>) -> BTreeMap<K, V> {
        let mut out = BTreeMap::new();
        if let Ok(fd) = sys::obj_get(&ms.policy().map_pin(def.name)) {
            let map = def.open_fd(fd.as_fd()).unwrap();
            for k in map.keys().unwrap() {
                if let Some(v) = map.get(&k).unwrap() {
                    out.insert(k, v);
                }
            }
        }
        out
    }
    let mut progs = BTreeMap::new();
    for p in ms.policy().spec.programs {
        if let Ok(fd) = sys::obj_get(&ms.policy().prog_pin(p.name)) {
            progs.insert(p.name.to_string(), sys::prog_id(&fd).unwrap());
        }
    }
    // The applied-config marker and record are the library's, not kernel
    // state: a failed pass drops them (the next calls read the config) and
    // changes nothing else.
    let files = state_files(&ms.settings)
        .into_iter()
        .filter(|f| f != "run/applied-config" && f != "run/applied-record")
        .collect();
    Snapshot { files, links, rules: walk(ms, &POLICY), taps: walk(ms, &TAP_TO_GROUP), progs }
}

impl Lab {
    /// A second handle on a namespace guest's (or the host's) UDP socket.
    pub fn socket(&self, name: &str) -> UdpSocket {
        let e = self.endpoints.iter().find(|e| e.name == name).expect("endpoint");
        match &e.kind {
            Kind::Bridge { sock, .. } | Kind::Veth { sock, .. } => sock.try_clone().unwrap(),
            Kind::Tap { .. } => panic!("{name} is a tap guest"),
        }
    }

    pub fn guest_ns(&self, name: &str) -> &Netns {
        match &self.endpoints.iter().find(|e| e.name == name).expect("endpoint").kind {
            Kind::Veth { ns, .. } => ns,
            _ => panic!("{name} is not a namespace guest"),
        }
    }

    pub fn endpoint_ip(&self, name: &str) -> Ipv4Addr {
        ip(self.endpoints.iter().find(|e| e.name == name).expect("endpoint").host)
    }
}

/// A one-way rule across nodes, replies included: `web` may open TCP 80
/// and UDP 53 toward `db` and gets the answers; `db` opens nothing toward
/// `web`. Real sockets in the guests' namespaces.
#[allow(dead_code)]
pub fn assert_one_way(lab: &Lab, web: &str, db: &str, carrier: &str) {
    use std::net::{TcpListener, TcpStream};
    let (ip_web, ip_db) = (lab.endpoint_ip(web), lab.endpoint_ip(db));
    let serve = |guest: &str, addr: SocketAddrV4| {
        let l = in_netns(lab.guest_ns(guest), || TcpListener::bind(addr).unwrap());
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 32];
                if let Ok(n) = s.read(&mut buf) {
                    let _ = s.write_all(&[b"re:".as_slice(), &buf[..n]].concat());
                }
            }
        })
    };
    let talk = |from: &str, to: SocketAddrV4| -> Option<String> {
        in_netns(lab.guest_ns(from), || {
            let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_millis(1500)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
            s.write_all(b"hi").ok()?;
            let mut buf = [0u8; 32];
            let n = s.read(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    };
    let _s = serve(db, SocketAddrV4::new(ip_db, 80));
    assert_eq!(talk(web, SocketAddrV4::new(ip_db, 80)).as_deref(), Some("re:hi"), "{web} -> {db} tcp/80 and back over {carrier}");
    let _s2 = serve(web, SocketAddrV4::new(ip_web, 80));
    assert_eq!(talk(db, SocketAddrV4::new(ip_web, 80)), None, "{db} opened TCP toward {web} over {carrier}");
    let bind = |guest: &str, ip: Ipv4Addr, port: u16| {
        let s = in_netns(lab.guest_ns(guest), || UdpSocket::bind(SocketAddrV4::new(ip, port)).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
        s
    };
    let db_sock = bind(db, ip_db, 53);
    let web_sock = bind(web, ip_web, 0);
    web_sock.send_to(b"query", SocketAddrV4::new(ip_db, 53)).unwrap();
    let mut buf = [0u8; 32];
    let (n, from) = db_sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"query");
    db_sock.send_to(b"answer", from).unwrap();
    let n = web_sock.recv(&mut buf).unwrap_or_else(|e| panic!("the UDP answer did not come back over {carrier}: {e}"));
    assert_eq!(&buf[..n], b"answer");
    let web53 = bind(web, ip_web, 53);
    bind(db, ip_db, 0).send_to(b"query", SocketAddrV4::new(ip_web, 53)).unwrap();
    assert!(web53.recv(&mut buf).is_err(), "{db} opened UDP toward {web} over {carrier}");
}

/// Two simulated nodes on an underlay switch with an outsider on it: node
/// A is this thread's namespace, node B another; both read node A's running
/// config (pmxcfs replicates it). Each carrier test adds its devices and
/// routes. `ul0` of node A, node B and the outsider gets `addrs(host)`
/// (an `ip -batch` of address lines) with hosts 1, 2 and 66.
#[allow(dead_code)]
pub struct TwoNodeLab {
    pub lab: Lab,
    pub node_b: String,
    pub wire: Netns,
    pub outsider: Netns,
    pub sandbox_a: Sandbox,
    pub sandbox_b: Sandbox,
}

#[allow(dead_code)]
impl TwoNodeLab {
    pub fn new(addrs: impl Fn(u8) -> String) -> TwoNodeLab {
        let mut lab = Lab::new();
        let node_a = lab.first_node();
        let node_b = lab.add_node("hostB", 253);
        let wire = Netns::new("wire");
        ip_batch(Some(&wire.name), "link set lo up\nlink add sw type bridge\nlink set sw up\n");
        let outsider = Netns::new("outsider");
        for (ns, host, port) in [(node_a.as_str(), 1u8, "pa"), (node_b.as_str(), 2, "pb"), (outsider.name.as_str(), 66, "pm")] {
            ip_batch(Some(ns), &format!("link add ul0 type veth peer name {port} netns {}\n", wire.name));
            ip_batch(Some(&wire.name), &format!("link set {port} master sw\nlink set {port} up\n"));
            ip_batch(Some(ns), &format!("{}link set ul0 up\nlink set lo up\n", addrs(host)));
        }
        TwoNodeLab { lab, node_b, wire, outsider, sandbox_a: Sandbox::new("nodeA"), sandbox_b: Sandbox::new("nodeB") }
    }

    pub fn ms_a(&self) -> Microseg {
        self.sandbox_a.microseg()
    }

    /// Node B reads the same running config.
    pub fn ms_b(&self) -> Microseg {
        let settings = Settings { running_config: self.sandbox_a.settings.running_config.clone(), ..self.sandbox_b.settings.clone() };
        Microseg::new(settings, &MICROSEG_OBJECT)
    }

    pub fn apply_both(&self, json: &str) -> (microseg::Report, microseg::Report) {
        self.sandbox_a.write_config(json);
        let a = self.ms_a().apply_full().unwrap();
        let b = in_netns(self.lab.node(&self.node_b), || self.ms_b().apply_full().unwrap());
        (a, b)
    }

    /// The policy's matrix for `json`, asserted against a measurement.
    pub fn assert_matrix(&mut self, json: &str, what: &str) -> Matrix {
        let cfg = microseg::config::parse(json.as_bytes()).unwrap();
        let pairs = microseg::subsystems::microseg::resolve::resolve(&cfg, 1 << 20).unwrap().pairs();
        let names = self.lab.names();
        let want = predict(&names, &nic_groups(&cfg), &pairs);
        let got = self.lab.measure();
        assert_eq!(got, want, "{what}\nmeasured:\n{}\nexpected:\n{}", render(&got, &names), render(&want, &names));
        got
    }

    /// A UDP socket of `guest` on `port`, reading with a short timeout.
    pub fn listen(&self, guest: &str, port: u16) -> UdpSocket {
        let ip = self.lab.endpoint_ip(guest);
        let s = in_netns(self.lab.guest_ns(guest), || UdpSocket::bind(SocketAddrV4::new(ip, port)).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s
    }

    pub fn host_of(&self, name: &str) -> u8 {
        self.lab.endpoint_ip(name).octets()[3]
    }

    /// As the PVE firewall does, sets upper mark bits on node A's `nics`
    /// after our stamp (netfilter ingress runs after tc): bit 31, and the
    /// bits VXLAN GBP carries as its D (22) and A (19) flags. The matrix of
    /// `json` must not change, and marked packets must leave node A on
    /// `carrier_dev`.
    pub fn assert_upper_mark_bits_change_nothing(&mut self, json: &str, nics: &[&str], carrier_dev: &str) {
        let before = self.assert_matrix(json, "before the firewall bits");
        let mut nft = String::from("table netdev fw {\n");
        for (i, nic) in nics.iter().enumerate() {
            nft.push_str(&format!(
                "  chain in{i} {{ type filter hook ingress device {nic} priority 0; meta mark set meta mark or 0x80480000; }}\n"
            ));
        }
        nft.push_str(&format!(
            "  chain out {{ type filter hook egress device {carrier_dev} priority 0; meta mark & 0x80480000 == 0x80480000 counter; }}\n}}\n"
        ));
        let file = self.sandbox_a.dir.join("fw.nft");
        std::fs::write(&file, nft).unwrap();
        sh(&format!("nft -f {}", file.display()));
        let after = self.assert_matrix(json, "with firewall bits set on node A");
        assert_eq!(after, before);
        let counters = sh("nft list chain netdev fw out");
        let packets: u64 = counters.split("packets ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
        assert!(packets > 0, "no marked packet left node A through {carrier_dev}: {counters}");
        sh("nft delete table netdev fw");
    }

    pub fn status_a(&self) -> microseg::report::Status {
        self.ms_a().status().unwrap()
    }

    pub fn status_b(&self) -> microseg::report::Status {
        in_netns(self.lab.node(&self.node_b), || self.ms_b().status().unwrap())
    }
}

impl Drop for TwoNodeLab {
    fn drop(&mut self) {
        let _ = in_netns(self.lab.node(&self.node_b), || self.ms_b().clear());
    }
}

/// Every datagram `s` has, as text.
#[allow(dead_code)]
pub fn received(s: &UdpSocket) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = s.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

/// Sends `payload` from `guest`'s own address to `to` with socket mark
/// `mark` set inside the guest (a guest trying to choose its group).
#[allow(dead_code)]
pub fn send_with_socket_mark(lab: &Lab, guest: &str, mark: u32, to: SocketAddrV4, payload: &[u8]) {
    in_netns(lab.guest_ns(guest), || {
        let s = UdpSocket::bind(SocketAddrV4::new(lab.endpoint_ip(guest), 0)).unwrap();
        // SAFETY: setsockopt with a valid u32 of the size given.
        let r = unsafe {
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, &mark as *const u32 as *const libc::c_void, 4)
        };
        assert_eq!(r, 0, "SO_MARK: {}", std::io::Error::last_os_error());
        s.send_to(payload, to).unwrap();
    });
}

/// Forgets what microseg's per-CPU flow cache holds, as a second passing
/// would: for tests that age flow table entries by hand (the cache trusts a
/// flow for at most REFRESH_AFTER after the table last confirmed it).
pub fn forget_flow_cache(loaded: &microseg::kernel::state::Loaded) {
    use microseg::kernel::sys;
    let (fd, info) = loaded.map_raw(microseg::subsystems::microseg::maps::FLOW_CACHE.name).unwrap();
    let zero = vec![0u8; (info.value_size as usize).next_multiple_of(8) * sys::possible_cpus().unwrap()];
    for slot in 0..info.max_entries {
        // SAFETY: the per-CPU value buffer covers every possible CPU's slot.
        unsafe { sys::map_update(fd, &slot.to_ne_bytes(), &zero) }.unwrap();
    }
}

/// Keeps the calling thread on the CPU it runs on, so that consecutive test
/// runs of a program see the same per-CPU state (the flow cache).
pub fn stay_on_this_cpu() {
    // SAFETY: plain libc calls on this thread's own affinity mask.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu: {}", std::io::Error::last_os_error());
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "sched_setaffinity");
    }
}
