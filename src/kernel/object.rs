//! What the lifecycle code knows of a BPF object: its maps (typed, see
//! `maps`), its programs with their hooks and order, a fingerprint, and the
//! map layouts the object defines (for checking reused pins against).

use anyhow::{anyhow, Context, Result};

use crate::kernel::maps::MapDesc;
use crate::kernel::sys;

/// Which TCX hook of a netdev a program sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Traffic the netdev receives (for a guest NIC: what the guest sends).
    Ingress,
    /// Traffic the netdev transmits (for a guest NIC: toward the guest).
    Egress,
}

impl Hook {
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
}

/// Ranks of the programs of every subsystem. On one hook, a lower rank runs
/// first: the underlay guards vet what arrives before anything trusts its
/// mark, and the microseg programs decide last, so that whatever runs
/// before them (counting, carriers restoring the mark) is seen by them.
pub mod rank {
    pub const UNDERLAY_GUARD: u8 = 10;
    /// After the guard: what the carrier trusts has been vetted.
    pub const CARRIER: u8 = 20;
    pub const POLICY: u8 = 50;
}

/// A program of an object, by its function name (also its pin name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub hook: Hook,
    /// Place among all programs of all subsystems on the same hook.
    pub rank: u8,
}

/// A BPF object embedded at build time, with the SHA-256 of its bytes
/// (computed by `build.rs`, so that no call hashes the object).
#[derive(Debug)]
pub struct Embedded {
    pub bytes: &'static [u8],
    pub fingerprint: &'static str,
}

/// The [`Embedded`] object `$file` of the build's `OUT_DIR`.
#[macro_export]
macro_rules! embedded_object {
    ($file:literal) => {
        $crate::kernel::object::Embedded {
            bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $file)),
            fingerprint: include_str!(concat!(env!("OUT_DIR"), "/", $file, ".sha256")),
        }
    };
}

/// One BPF object and its pinned state's identity.
#[derive(Clone)]
pub struct ObjectSpec {
    /// Directory name under the pin root and the run directory.
    pub name: &'static str,
    /// Bumped when a map's meaning changes without its shape changing; a
    /// mismatch rebuilds all state as a layout change does.
    pub schema_version: u32,
    pub object: &'static Embedded,
    /// Maps user space reads or writes, all pinned.
    pub maps: &'static [&'static dyn MapDesc],
    /// Programs in the order they are attached to a new netdev.
    pub programs: &'static [ProgramSpec],
    /// Map capacities set from the configuration at load time instead of
    /// the object's (the flow table's `ct-max`); a change is a layout change.
    pub capacities: Vec<(&'static str, u32)>,
}

impl std::fmt::Debug for ObjectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSpec").field("name", &self.name).field("schema_version", &self.schema_version).finish()
    }
}

impl ObjectSpec {
    /// Identifies the object's code and maps: any change means a reload.
    pub fn fingerprint(&self) -> String {
        self.object.fingerprint.to_string()
    }

    pub fn program(&self, name: &str) -> Option<&ProgramSpec> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The maps as the object defines them, for checking reused pins against.
    pub fn map_layouts(&self) -> Result<Vec<MapLayout>> {
        let obj = aya_obj::Object::parse(self.object.bytes).context("parse embedded BPF object")?;
        self.maps
            .iter()
            .map(|desc| {
                let name = desc.name();
                let m = obj.maps.get(name).ok_or_else(|| anyhow!("embedded BPF object has no map '{name}'"))?;
                let set = self.capacities.iter().find(|(n, _)| *n == name).map(|&(_, c)| c);
                Ok(MapLayout {
                    name,
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: set.unwrap_or(m.max_entries()),
                    map_flags: m.map_flags(),
                })
            })
            .collect()
    }

    /// The capacities of maps `names`, in order (0 for a map the object does
    /// not have), from one parse of the object.
    pub fn capacities_of<const N: usize>(&self, names: [&str; N]) -> Result<[usize; N]> {
        let layouts = self.map_layouts()?;
        Ok(names.map(|name| layouts.iter().find(|l| l.name == name).map_or(0, |l| l.max_entries as usize)))
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
