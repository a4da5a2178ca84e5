//! The subsystem architecture: the Rust mirrors of every shared struct
//! against the compiled objects' BTF, typed maps refusing the wrong types,
//! and a subsystem added through the registry alone, ordered on a hook.

mod common;

use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::time::Duration;

use microseg::kernel::maps::{MapDef, TypeLayout};
use microseg::kernel::object::Hook;
use microseg::kernel::sys;
use microseg::subsystems::microseg::maps::{Event, NicKey, NicValue, PeerKey, PeerSeen};
use microseg::subsystems::orderprobe::{self, PROBE_COUNTS};

use common::btf::Btf;
use common::*;

/// Compares one Rust key or value type with the type the object's BTF gives the map.
fn check_layout(btf: &Btf, map: &str, what: &str, type_id: u32, rust: &TypeLayout) -> usize {
    let c_name = btf.name(type_id);
    assert_eq!(c_name, rust.c_name, "map {map}: {what} type");
    assert_eq!(btf.size(type_id), rust.size, "map {map}: {what} {c_name}: size");
    if rust.fields.is_empty() {
        return 0;
    }
    let s = btf.named_struct(&c_name).unwrap_or_else(|| panic!("no struct {c_name} in BTF"));
    let c_fields: Vec<(String, usize, usize)> =
        s.members.iter().map(|m| (m.name.clone(), m.offset, btf.size(m.type_id))).collect();
    let r_fields: Vec<(String, usize, usize)> = rust.fields.iter().map(|f| (f.name.to_string(), f.offset, f.size)).collect();
    assert_eq!(r_fields, c_fields, "map {map}: struct {c_name}: fields (name, offset, size)");
    1
}

#[test]
fn every_shared_struct_matches_the_objects_btf() {
    let ms = Microseg::new(Settings::from_env(), &microseg::subsystems::microseg::OBJECT);
    let mut structs = 0;
    for unit in &ms.units {
        let spec = unit.subsystem.spec();
        let btf = Btf::from_object(spec.object.bytes);
        let maps = btf.map_types();
        for desc in spec.maps.iter().filter(|d| d.typed()) {
            let (k, v) = *maps.get(desc.name()).unwrap_or_else(|| panic!("{}: no map {} in BTF", spec.name, desc.name()));
            structs += check_layout(&btf, desc.name(), "key", k, &desc.key());
            structs += check_layout(&btf, desc.name(), "value", v, &desc.value());
        }
    }
    // The ring buffer's record, from the object that names it as a value.
    let btf = Btf::from_object(microseg::testobjects::RECORD_TYPES.bytes);
    let (_, v) = btf.map_types()["event_record"];
    structs += check_layout(&btf, "event_record", "value", v, &TypeLayout::of::<Event>());
    // microseg: nic_key (x2), nic_value, policy_key, policy_value, flow_key,
    // flow_value, peer_key, peer_seen, addr_key, addr_value, tunnel_settings,
    // nic_counters, rule_name, event_settings, event_state, event,
    // assignment_key, nic_value (of assignments), pair_key, policy_value (of pair_verdicts),
    // flow_cache_entry, flow_admission, nic_key (of flow_budget);
    // vtepguard: peer4_key, peer_value (x2), peer6_key, guard_settings;
    // srv6: peer6_key, peer_value, srv6_counters;
    // orderprobe: probe_counts.
    assert_eq!(structs, 33, "every shared struct was compared");
}

#[test]
fn a_mismatched_rust_type_is_refused_where_the_map_is_opened() {
    // A map whose value is 16 bytes and key 20 bytes, opened with the 8-byte PeerSeen.
    let fd = sys::map_create(sys::BPF_MAP_TYPE_HASH, 20, 16, 16, 0).unwrap();
    let wrong_value: MapDef<PeerKey, PeerSeen> = MapDef::new("peers");
    let e = format!("{:#}", wrong_value.open_fd(fd.as_fd()).err().expect("8-byte values opened as 1-byte"));
    assert!(e.starts_with("map 'peers': value size 16 in the kernel, 8 in the Rust type"), "{e}");
    assert!(e.contains("PeerSeen (struct peer_seen)"), "{e}");
    // A 2-byte key opened as the 4-byte NicKey.
    let fd2 = sys::map_create(sys::BPF_MAP_TYPE_HASH, 2, 4, 16, 0).unwrap();
    let wrong_key: MapDef<NicKey, NicValue> = MapDef::new("tap_to_group");
    let e = format!("{:#}", wrong_key.open_fd(fd2.as_fd()).err().expect("2-byte keys opened as 4-byte"));
    assert_eq!(
        e,
        "map 'tap_to_group': key size 2 in the kernel, 4 in the Rust type \
         microseg::subsystems::microseg::maps::NicKey (struct nic_key)"
    );
    // Every safe map function needs a handle, and no handle exists for a
    // mismatch: try to reach each one with the wrong types and the kernel
    // is never asked to write past a Rust value.
    let fits: MapDef<PeerKey, microseg::subsystems::microseg::maps::FlowValue> = MapDef::new("fits");
    let m = fits.open_fd(fd.as_fd()).unwrap();
    let (k, v) = (PeerKey { ifindex: 7, addr: [9; 16] }, microseg::subsystems::microseg::maps::FlowValue { last_seen: u64::MAX, flags: 3, pad: 0 });
    m.set(&k, &v).unwrap();
    assert_eq!(m.get(&k).unwrap(), Some(v));
    for attempt in ["get", "set", "remove", "keys", "entries", "set_all", "remove_all", "write_changed", "delete_unless"] {
        let map = wrong_value.open_fd(fd.as_fd());
        assert!(map.is_err(), "{attempt}: a handle with the wrong value size");
    }
    // The value the kernel holds is still intact, all 16 bytes of it.
    assert_eq!(m.get(&k).unwrap(), Some(v));
}

#[test]
fn a_registered_subsystem_runs_in_its_declared_order_and_clear_removes_it() {
    let sandbox = Sandbox::new("order");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    lab.add_veth("veth101i0", 1, true);
    let ifindex = microseg::kernel::netdev::ifindex("veth101i0").unwrap();
    let probe = r#""probe": {"type": "order-probe", "ifaces": "veth101i0"}"#;
    let policy = r#""g": {"type": "group", "mark": 7}, "r": {"type": "rule", "dst": "g", "allow": 1},
                   "a": {"type": "assignment", "vmid": 101, "iface": 0, "group": "g"}"#;
    let cfg = |sections: &[&str]| format!(r#"{{"microseg": {{"ids": {{ {} }}}}}}"#, sections.join(","));
    let chain = || sys::prog_query_tcx(ifindex, Hook::Ingress.attach_type()).unwrap();
    let ids = |name: &str| ms.kernel(name).pinned_program_ids();

    // Policy first, then the probe: the probe is inserted before the stamp.
    // Then the other way round: the stamp is appended after the probe.
    for (first, second) in [(policy, probe), (probe, policy)] {
        sandbox.write_config(&cfg(&[first]));
        ms.apply_full().unwrap();
        sandbox.write_config(&cfg(&[first, second]));
        let report = ms.apply_full().unwrap();
        assert_eq!(report.nics, 1);
        let want = vec![ids(orderprobe::NAME)["order_probe"], ids("microseg")["microseg_stamp"]];
        assert_eq!(chain(), want, "ingress chain of veth101i0: probe, then stamp");

        // Real packets: the probe sees them before the stamp marks them.
        let sock = lab.socket("veth101i0");
        for _ in 0..5 {
            sock.send_to(b"probe", SocketAddrV4::new(ip(254), PORT)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        let pin = sys::obj_get(&ms.kernel(orderprobe::NAME).map_pin(PROBE_COUNTS.name)).unwrap();
        let counts = PROBE_COUNTS.open_fd(pin.as_fd()).unwrap().get(&0).unwrap().unwrap();
        assert!(counts.seen >= 5, "{counts:?}");
        assert_eq!(counts.stamped, 0, "the probe ran after the stamp: {counts:?}");

        ms.clear().unwrap();
        assert!(chain().is_empty(), "clear left programs on the hook");
        assert!(sandbox.files().is_empty(), "clear left {:?}", sandbox.files());
    }
}

#[test]
fn a_batched_dump_of_a_large_lpm_trie_returns_every_entry() {
    // The kernel walks an LPM trie generically: the batch position is a
    // whole key (12 bytes here), not a bucket index. 10,000 entries take
    // three batches of 4,096.
    use microseg::subsystems::microseg::maps::{PolicyKey, PolicyValue};
    const LPM_TRIE: u32 = 11;
    const NO_PREALLOC: u32 = 1;
    let fd = sys::map_create(LPM_TRIE, 12, 8, 10_000, NO_PREALLOC).unwrap();
    let def: MapDef<PolicyKey, PolicyValue> = MapDef::new("policy");
    let map = def.open_fd(fd.as_fd()).unwrap();
    let entries: Vec<(PolicyKey, PolicyValue)> = (0..10_000u32)
        .map(|i| {
            let key = PolicyKey { prefixlen: 32, src: (i / 100) as u16 + 1, dst: (i % 100) as u16 + 1, proto: 0, pad: 0, dport: 0 };
            (key, PolicyValue { verdict: (i % 2) as u8, flags: 0, pad: 0, rule: i })
        })
        .collect();
    for chunk in entries.chunks(1000) {
        for (k, v) in chunk {
            map.set(k, v).unwrap();
        }
    }
    let dumped = map.entries().unwrap();
    assert_eq!(dumped.len(), 10_000);
    assert_eq!(dumped, entries.into_iter().collect());
    assert_eq!(map.keys().unwrap().len(), 10_000, "the one-by-one walk agrees");
}
