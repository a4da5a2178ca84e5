//! The embedded BPF objects and what the lifecycle code needs to know of them.
//!
//! A [`Subsystem`] is one BPF object with its maps and tc programs, pinned
//! under its own directory. The lifecycle code (`state.rs`) works on any
//! subsystem, so a later one (the cross-host carrier, stateful or L4 policy)
//! is a new `Subsystem` value, not new lifecycle code.

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

use crate::sys;

/// The production data plane, built by `build.rs` from `bpf/microseg.bpf.c`.
pub static MICROSEG_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/microseg.bpf.o"));

/// Same maps, different code: for the atomic program swap test.
pub static MICROSEG_TEST_CODE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/microseg-test-code.bpf.o"));

/// Other map capacities (4 NICs, 4096 pairs): for the layout change and
/// capacity tests.
pub static MICROSEG_TEST_LAYOUT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/microseg-test-layout.bpf.o"));

/// Another layout and code the verifier rejects: the old state must survive.
pub static MICROSEG_TEST_BROKEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/microseg-test-broken.bpf.o"));

/// The VTEP guard (the VXLAN trust mitigation), from `bpf/vtepguard.bpf.c`.
pub static VTEPGUARD_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vtepguard.bpf.o"));

/// Which TCX hook of a NIC a program sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Traffic the guest sends (the NIC receives it).
    Ingress,
    /// Traffic toward the guest.
    Egress,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Egress, Hook::Ingress];

    pub fn attach_type(self) -> u32 {
        match self {
            Hook::Ingress => sys::BPF_TCX_INGRESS,
            Hook::Egress => sys::BPF_TCX_EGRESS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Hook> {
        match s {
            "ingress" => Some(Hook::Ingress),
            "egress" => Some(Hook::Egress),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    /// The function name in the object, also its pin name.
    pub name: &'static str,
    pub hook: Hook,
}

#[derive(Debug, Clone)]
pub struct Subsystem {
    /// Directory name under the pin root and the run directory.
    pub name: &'static str,
    /// Bumped when a map's meaning changes without its shape changing; a
    /// mismatch rebuilds all state as a layout change does.
    pub schema_version: u32,
    pub object: &'static [u8],
    pub maps: &'static [&'static str],
    pub programs: &'static [ProgramSpec],
}

pub const TAP_TO_GROUP: &str = "tap_to_group";
pub const RULES: &str = "rules";
pub const VTEP_PEERS: &str = "vtep_peers";
pub const GUARD_CONFIG: &str = "guard_config";

impl Subsystem {
    pub fn microseg(object: &'static [u8]) -> Subsystem {
        Subsystem {
            name: "microseg",
            schema_version: 1,
            object,
            maps: &[TAP_TO_GROUP, RULES],
            programs: &[
                ProgramSpec { name: "microseg_stamp", hook: Hook::Ingress },
                ProgramSpec { name: "microseg_enforce", hook: Hook::Egress },
            ],
        }
    }

    /// The VTEP guard: one program on the ingress of underlay interfaces.
    pub fn vtep_guard() -> Subsystem {
        Subsystem {
            name: "vtepguard",
            schema_version: 1,
            object: VTEPGUARD_OBJECT,
            maps: &[VTEP_PEERS, GUARD_CONFIG],
            programs: &[ProgramSpec { name: "vtep_guard", hook: Hook::Ingress }],
        }
    }

    /// Identifies the object's code and maps: any change means a reload.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.object);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The maps as the object defines them, for checking reused pins against.
    pub fn map_layouts(&self) -> Result<Vec<MapLayout>> {
        let obj = aya_obj::Object::parse(self.object).context("parse embedded BPF object")?;
        self.maps
            .iter()
            .map(|&name| {
                let m = obj.maps.get(name).ok_or_else(|| anyhow!("embedded BPF object has no map '{name}'"))?;
                Ok(MapLayout {
                    name,
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                    map_flags: m.map_flags(),
                })
            })
            .collect()
    }
}

/// The shape of a map: what must match for a pinned map to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

impl MapLayout {
    /// `None` if `info` matches, else what differs.
    pub fn mismatch(&self, info: &sys::MapInfo) -> Option<String> {
        let pairs = [
            ("type", self.map_type, info.map_type),
            ("key size", self.key_size, info.key_size),
            ("value size", self.value_size, info.value_size),
            ("capacity", self.max_entries, info.max_entries),
            ("flags", self.map_flags, info.map_flags),
        ];
        let diffs: Vec<String> = pairs
            .iter()
            .filter(|(_, want, have)| want != have)
            .map(|(what, want, have)| format!("{what} {have} (object wants {want})"))
            .collect();
        (!diffs.is_empty()).then(|| format!("pinned map '{}' has {}", self.name, diffs.join(", ")))
    }
}
