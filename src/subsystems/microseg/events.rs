//! Drop and audit events (SPEC section 7): read from the `events` ring
//! buffer and decoded into what an administrator reads, with NIC, group and
//! rule names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::config::{policy, MicrosegConfig};
use crate::kernel::maps::TypedMap;
use crate::kernel::ringbuf::RingReader;
use crate::kernel::state::KernelState;
use crate::kernel::{netdev, sys};

use super::maps::{
    Event, RuleName, EVENTS, EVENT_AUDIT, EVENT_L3_ARP, EVENT_L3_IPV4, EVENT_L3_IPV6, REASON_NO_RULE, REASON_RESOLUTION,
    REASON_RULE, REASON_TUNNEL, RULE_NAMES,
};

/// One event as the CLI prints it and JSON carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Seconds since the epoch.
    pub time: f64,
    /// `drop` or `audit` (delivered, but the policy would drop it).
    pub kind: &'static str,
    /// `no-rule`, `rule`, `resolution` (ARP/ND) or `tunnel` (from the guest).
    pub reason: &'static str,
    pub nic: String,
    pub ifindex: u32,
    /// `to-guest`, or `from-guest` for a tunnel packet the guest sent.
    pub direction: &'static str,
    pub src_group: Option<String>,
    pub src_mark: u16,
    pub dst_group: Option<String>,
    pub dst_mark: u16,
    /// `ipv4`, `ipv6`, `arp` or `other`.
    pub family: &'static str,
    pub proto: Option<String>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 type; for ARP the operation.
    pub icmp_type: Option<u8>,
    pub rule: Option<String>,
}

fn addr(b: [u8; 16]) -> String {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4).to_string(),
        None => v6.to_string(),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        policy::PROTO_TCP => "tcp".into(),
        policy::PROTO_UDP => "udp".into(),
        policy::PROTO_SCTP => "sctp".into(),
        policy::PROTO_ICMP => "icmp".into(),
        policy::PROTO_ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// Names for marks, rules and NICs, cached for a monitor's lifetime.
struct Names {
    groups: BTreeMap<u16, String>,
    nics: BTreeMap<u32, String>,
}

impl Names {
    fn new(cfg: Option<&MicrosegConfig>) -> Names {
        let groups = cfg.map(|c| c.groups.values().map(|g| (g.mark, g.id.clone())).collect()).unwrap_or_default();
        Names { groups, nics: BTreeMap::new() }
    }

    fn nic(&mut self, ifindex: u32) -> String {
        self.nics
            .entry(ifindex)
            .or_insert_with(|| netdev::name_of(ifindex).unwrap_or_else(|| format!("if{ifindex}")))
            .clone()
    }
}

fn decode(ev: &Event, names: &mut Names, rule: Option<String>, clock_offset: f64) -> EventRecord {
    let ip = ev.l3 == EVENT_L3_IPV4 || ev.l3 == EVENT_L3_IPV6;
    let ports = ip && (policy::has_ports(ev.proto) || ev.proto == policy::PROTO_ICMP || ev.proto == policy::PROTO_ICMPV6);
    let icmp = ip && (ev.proto == policy::PROTO_ICMP || ev.proto == policy::PROTO_ICMPV6);
    let group = |m: u16| (m != 0).then(|| names.groups.get(&m).cloned().unwrap_or_else(|| format!("mark {m}")));
    let (src_group, dst_group) = (group(ev.src), group(ev.dst));
    EventRecord {
        time: ev.time_ns as f64 / 1e9 + clock_offset,
        kind: if ev.kind == EVENT_AUDIT { "audit" } else { "drop" },
        reason: match ev.reason {
            REASON_NO_RULE => "no-rule",
            REASON_RULE => "rule",
            REASON_RESOLUTION => "resolution",
            REASON_TUNNEL => "tunnel",
            _ => "unknown",
        },
        nic: names.nic(ev.ifindex),
        ifindex: ev.ifindex,
        direction: if ev.reason == REASON_TUNNEL { "from-guest" } else { "to-guest" },
        src_group,
        src_mark: ev.src,
        dst_group,
        dst_mark: ev.dst,
        family: match ev.l3 {
            EVENT_L3_IPV4 => "ipv4",
            EVENT_L3_IPV6 => "ipv6",
            EVENT_L3_ARP => "arp",
            _ => "other",
        },
        proto: ip.then(|| proto_name(ev.proto)),
        src: (ip || ev.l3 == EVENT_L3_ARP).then(|| addr(ev.saddr)),
        dst: (ip || ev.l3 == EVENT_L3_ARP).then(|| addr(ev.daddr)),
        // ICMP echo carries its identifier as sport.
        sport: ports.then_some(ev.sport),
        dport: (ports && !icmp).then_some(ev.dport),
        icmp_type: (icmp || ev.l3 == EVENT_L3_ARP).then_some(ev.icmp_type),
        rule,
    }
}

impl std::fmt::Display for EventRecord {
    /// One line: `<time> drop tap101i0 mon -> web tcp 10.0.0.1:40000 -> 10.0.0.2:22 rule=r5 (rule)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = |g: &Option<String>| g.clone().unwrap_or_else(|| "unstamped".into());
        write!(f, "{} {} {} {} -> {}", local_time(self.time), self.kind, self.nic, group(&self.src_group), group(&self.dst_group))?;
        write!(f, " {}", self.proto.as_deref().unwrap_or(self.family))?;
        let endpoint = |a: &Option<String>, p: Option<u16>| match (a, p) {
            (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.clone(),
            (None, _) => "-".into(),
        };
        let icmp = self.proto.as_deref().is_some_and(|p| p.starts_with("icmp"));
        let (sport, dport) = if icmp { (None, None) } else { (self.sport, self.dport) };
        write!(f, " {} -> {}", endpoint(&self.src, sport), endpoint(&self.dst, dport))?;
        if let Some(t) = self.icmp_type {
            write!(f, " type={t}")?;
        }
        match &self.rule {
            Some(r) => write!(f, " rule={r} ({})", self.reason),
            None => write!(f, " ({})", self.reason),
        }
    }
}

/// `time` (seconds since the epoch) as local `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn local_time(time: f64) -> String {
    let secs = time.floor() as libc::time_t;
    let millis = ((time - time.floor()) * 1000.0) as u32;
    // SAFETY: localtime_r writes into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("{time:.3}");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in seconds: events carry monotonic time.
fn clock_offset() -> f64 {
    let now = |clock| {
        // SAFETY: clock_gettime writes into the timespec we own.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// When `monitor` stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Until {
    /// After this many events.
    pub count: Option<usize>,
    /// After this long.
    pub duration: Option<Duration>,
}

/// Streams events to `sink` until `until` or until `sink` returns false.
/// Survives a reinstall of the programs (a new ring buffer is opened when
/// the pinned one is replaced). Returns how many events it passed on.
pub fn monitor(
    state: &KernelState,
    cfg: Option<&MicrosegConfig>,
    until: Until,
    sink: &mut dyn FnMut(&EventRecord) -> bool,
) -> Result<usize> {
    let start = Instant::now();
    let mut names = Names::new(cfg);
    let mut seen = 0usize;
    let deadline_passed = || until.duration.is_some_and(|d| start.elapsed() >= d);
    'reopen: loop {
        let path = state.map_pin(EVENTS.name);
        let fd = sys::obj_get(&path)
            .with_context(|| format!("open {} (is microseg configured on this node?)", path.display()))?;
        let info = sys::map_info(std::os::fd::AsFd::as_fd(&fd)).context("ring buffer info")?;
        let reader = RingReader::new(fd, info.max_entries as usize).context("map the ring buffer")?;
        if seen == 0 {
            // Live: what was emitted before the monitor started is not news.
            // (After a reinstall the new ring holds only new events.)
            reader.skip_backlog();
        }
        // Opened (and its sizes checked) once per ring, not per event.
        let names_fd = sys::obj_get(&state.map_pin(RULE_NAMES.name)).ok();
        let rule_names = names_fd.as_ref().and_then(|fd| RULE_NAMES.open_fd(std::os::fd::AsFd::as_fd(fd)).ok());
        loop {
            let offset = clock_offset();
            let mut stop = false;
            let mut failed = None;
            reader.consume(|bytes| {
                if stop {
                    return;
                }
                let Some(ev) = parse_event(bytes) else {
                    failed = Some(anyhow!("event record of {} bytes", bytes.len()));
                    return;
                };
                let rule = (ev.rule > 0).then(|| rule_name(rule_names.as_ref(), ev.rule - 1));
                let record = decode(&ev, &mut names, rule, offset);
                seen += 1;
                if !sink(&record) || until.count.is_some_and(|c| seen >= c) {
                    stop = true;
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if stop || deadline_passed() {
                return Ok(seen);
            }
            let wait = until.duration.map_or(500, |d| d.saturating_sub(start.elapsed()).as_millis().min(500) as i32);
            reader.wait(wait.max(1)).context("wait for events")?;
            // A reinstall pins a new ring buffer: follow it.
            let current = sys::obj_get(&path).ok().and_then(|fd| sys::map_info(std::os::fd::AsFd::as_fd(&fd)).ok());
            if current.is_none_or(|c| c.id != info.id) {
                if current.is_none() {
                    std::thread::sleep(Duration::from_millis(200));
                }
                continue 'reopen;
            }
        }
    }
}

fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is Pod (every bit pattern valid), read unaligned from enough bytes.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

fn rule_name(map: Option<&TypedMap<'_, u32, RuleName>>, slot: u32) -> String {
    let name = map.and_then(|m| m.get(&slot).ok().flatten());
    name.map_or_else(|| format!("slot {slot}"), |n| n.as_string())
}
