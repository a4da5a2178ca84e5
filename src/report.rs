//! What a call returns: one definition, from which the binding builds the
//! Perl hash (by serialising it) and the CLI its output.

use std::collections::BTreeMap;

use serde::Serialize;

/// What a pass changed in the kernel; counted where the change is made.
/// Every field becomes a key of the hash `apply_full()` returns to Perl.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// A BPF object was loaded (the verifier ran).
    pub loaded: bool,
    pub map_writes: usize,
    pub map_deletes: usize,
    pub links_created: usize,
    pub links_updated: usize,
    pub links_detached: usize,
    /// Local assigned guest NICs enforced after the pass.
    pub nics: usize,
    /// Underlay interfaces with the VTEP guard after the pass.
    pub guarded: usize,
    /// Underlay interfaces carrying the group in SRv6 after the pass.
    pub srv6: usize,
}

impl Report {
    /// The field names, in order, as Perl sees them: derived from the
    /// serialised struct, so there is no second list to keep in step.
    pub fn fields() -> Vec<String> {
        match serde_json::to_value(Report::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => unreachable!("Report serialises to an object"),
        }
    }
}

impl std::fmt::Display for Report {
    /// One line for logs and the CLI: `loaded=no map_writes=3 ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else { return Err(std::fmt::Error) };
        let parts: Vec<String> = map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Bool(b) => format!("{k}={}", if *b { "yes" } else { "no" }),
                other => format!("{k}={other}"),
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// What `simulate()` returns: which rule decides a flow and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Simulation {
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// The deciding rule's id; `None` when no rule matches (default deny)
    /// or the destination is not enforced.
    pub rule: Option<String>,
    /// How the rule was chosen (or that none matched).
    pub reason: String,
    /// Whether the destination's group is in audit mode: a deny would only
    /// be reported, the packet delivered.
    pub audit: u8,
}

/// What `status()` returns (SPEC section 7): what is enforced on this node,
/// read from the kernel. Flags are 0/1, counters in packets.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Status {
    /// Every guest NIC on the node.
    pub nics: Vec<NicStatus>,
    /// Hits per rule: the rules the kernel holds, and the configured ones.
    pub rules: BTreeMap<String, RuleStatus>,
    pub flows: FlowStatus,
    pub subsystems: BTreeMap<String, SubsystemStatus>,
    pub underlay: UnderlayStatus,
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct NicStatus {
    pub name: String,
    pub ifindex: u32,
    /// The group the kernel enforces on the NIC (`None`: unassigned).
    pub group: Option<String>,
    /// Its mark (0: unassigned).
    pub mark: u16,
    pub audit: u8,
    /// Assigned in the kernel, and both programs attached to this netdev.
    pub enforced: u8,
    /// Both programs attached to this netdev (also as pass-through).
    pub attached: u8,
    pub counters: NicCounts,
}

/// Packets toward the guest delivered by a rule, as answers to its own
/// flows, dropped, passed in audit mode; packets from it refused; new flows
/// past the NIC's admission rate, not recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NicCounts {
    pub allowed: u64,
    pub replied: u64,
    pub dropped: u64,
    pub audited: u64,
    pub blocked: u64,
    pub unrecorded: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RuleStatus {
    /// Packets the rule decided.
    pub hits: u64,
    /// Whether the kernel holds the rule (it decides some policy entry).
    pub loaded: u8,
    /// Whether the running config has it.
    pub configured: u8,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct FlowStatus {
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SubsystemStatus {
    /// Programs pinned and run state recorded.
    pub loaded: u8,
    /// The library version that loaded the programs.
    pub version: Option<String>,
    pub schema_version: Option<u32>,
    pub fingerprint: Option<String>,
    /// This library's own version and whether the loaded object is its own.
    pub library_version: String,
    pub current: u8,
    /// Link pins (one per netdev and program).
    pub links: usize,
    /// Subsystem counters (microseg: events emitted, suppressed, lost).
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct UnderlayStatus {
    /// Interfaces that carry the VTEP guard.
    pub guarded: Vec<String>,
    /// Configured underlay interfaces, by subsystem.
    pub interfaces: BTreeMap<String, Vec<String>>,
    /// The peers the guard admits.
    pub peers: Vec<String>,
    /// The SRv6 carrier.
    pub srv6: Srv6Status,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Srv6Status {
    /// Interfaces that carry both of the carrier's programs.
    pub carrying: Vec<String>,
    /// The peers whose SRv6 is accepted and whose tag is restored.
    pub peers: Vec<String>,
    /// Packets: `tagged` (sent with the group in the tag), `restored`
    /// (received from a peer, the group set from the tag), `transit` (a
    /// peer's, for another node), `dropped` (from a non-peer), `invalid`
    /// (a header that does not add up, or hidden behind too many tags).
    pub counters: BTreeMap<String, u64>,
}
