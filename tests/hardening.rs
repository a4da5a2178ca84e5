//! Hardening against local users and a faulty host (SPEC sections 2 and 6):
//! private files whatever the umask, no symlink followed, no FIFO or device
//! read, bounded lock waits, renamed NICs, full maps, overlapping passes,
//! version skew and replaced program pins.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use microseg::kernel::lock::{Mode, LOCK_TIMEOUT};
use microseg::kernel::object::Hook;
use microseg::kernel::{netdev, sys};
use microseg::subsystems::microseg::maps::{NicKey, TAP_TO_GROUP};
use microseg::testobjects::{MICROSEG_CODE, MICROSEG_LAYOUT};

use common::*;

fn add_nics(vmids: impl IntoIterator<Item = u32>) {
    let batch: String =
        vmids.into_iter().map(|v| format!("link add veth{v}i0 type veth peer name p{v}\nlink set veth{v}i0 up\n")).collect();
    ip_batch(None, &batch);
}

const GROUPS: &[(&str, u16, Option<&str>)] = &[("a", 1, None), ("b", 2, None)];
const RULES: &[(&str, Option<&str>, &str, bool)] = &[("gw", None, "a", true), ("ab", Some("a"), "b", true)];

/// Every path below the sandbox's pin root and run directory, with its mode.
fn modes(sandbox: &Sandbox) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for root in [&sandbox.settings.bpf_root, &sandbox.settings.run_dir] {
        let mut stack = vec![root.clone()];
        while let Some(p) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            out.push((p.display().to_string(), meta.mode() & 0o7777));
            if meta.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
    }
    out
}

#[test]
fn everything_created_is_private_whatever_the_umask() {
    let _host = HostNs::enter();
    add_nics([101, 102]);
    let sandbox = Sandbox::new("umask");
    let guard = r#""u": {"type": "vtep-guard", "ifaces": "p101"}"#;
    let cfg = sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b")]).replace(r#""microseg": {"ids": { "#, &format!(r#""microseg": {{"ids": {{ {guard},"#));
    sandbox.write_config(&cfg);
    // SAFETY: umask in the child between fork and exec only.
    let out = unsafe { cli!(&sandbox, &["apply-full"]).pre_exec(|| { libc::umask(0); Ok(()) }) }.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = modes(&sandbox);
    assert!(all.len() > 15, "{all:?}");
    let open: Vec<_> = all.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "group or world accessible with umask 000: {open:?}");
    for (path, mode) in &all {
        if path.ends_with("/lock") || path.ends_with("state.json") {
            assert_eq!(*mode, 0o600, "{path}");
        }
    }
    assert!(all.iter().any(|(p, m)| p.ends_with("/run/microseg") && *m == 0o700), "{all:?}");
}

#[test]
fn planted_symlinks_are_not_followed() {
    let _host = HostNs::enter();
    add_nics([101]);
    let sandbox = Sandbox::new("symlink");
    let victim = sandbox.dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a")]));
    let ms = sandbox.microseg();
    ms.apply_full().unwrap();

    // The run state is replaced, never written through a symlink: a code
    // change rewrites it.
    let state = sandbox.settings.run_dir.join("microseg/state.json");
    std::fs::remove_file(&state).unwrap();
    std::os::unix::fs::symlink(&victim, &state).unwrap();
    let other = sandbox.microseg_with(&MICROSEG_CODE);
    assert!(other.apply_full().unwrap().loaded);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&state).unwrap().file_type().is_file());

    // A symlink as the lock file or as a subsystem's run directory is refused.
    let lock = sandbox.settings.run_dir.join("microseg/lock");
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let e = format!("{:#}", other.apply_full().unwrap_err());
    assert!(e.contains("open lock file") && e.contains("a symlink is not followed"), "{e}");
    std::fs::remove_file(&lock).unwrap();
    let victim_dir = sandbox.dir.join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::os::unix::fs::symlink(&victim_dir, sandbox.settings.run_dir.join("vtepguard")).unwrap();
    let e = format!("{:#}", other.apply_full().unwrap_err());
    assert!(e.contains("vtepguard is not a directory (a symlink or a file is not followed)"), "{e}");
    assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 0, "something was written through the symlink");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_fifo_a_device_or_a_huge_file_fails_within_a_bound() {
    let _host = HostNs::enter();
    add_nics([101]);
    let sandbox = Sandbox::new("fifo");
    let ms = sandbox.microseg();
    let path = sandbox.settings.running_config.clone();
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    let timed = |what: &str| {
        let t = Instant::now();
        let e = format!("{:#}", ms.apply_full().unwrap_err());
        assert!(t.elapsed() < Duration::from_secs(2), "{what}: took {:?}", t.elapsed());
        e
    };
    assert!(timed("fifo").ends_with("is not a regular file"));
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    assert!(timed("device").ends_with("is not a regular file"));
    std::fs::remove_file(&path).unwrap();
    let huge = std::fs::File::create(&path).unwrap();
    huge.set_len(200 << 20).unwrap();
    assert!(timed("huge").contains("more than the 104857600 the library reads"));

    // A FIFO in place of the run state is not read: the state is reinstalled.
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a")]));
    ms.apply_full().unwrap();
    let state = sandbox.settings.run_dir.join("microseg/state.json");
    std::fs::remove_file(&state).unwrap();
    let cstate = std::ffi::CString::new(state.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(cstate.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    assert!(ms.apply_full().unwrap().loaded);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(std::fs::symlink_metadata(&state).unwrap().file_type().is_file());
}

#[test]
fn a_lock_held_elsewhere_fails_every_call_within_the_bound() {
    let _host = HostNs::enter();
    add_nics([101]);
    let sandbox = Sandbox::new("lock");
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a")]));
    let ms = sandbox.microseg();
    ms.apply_full().unwrap();
    let lock = sandbox.settings.run_dir.join("microseg/lock");

    // An unprivileged user cannot even open the lock to hold it.
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "flock", "-s", "-n"])
        .arg(&lock)
        .arg("true")
        .output()
        .unwrap();
    assert!(!nobody.status.success(), "an unprivileged user took the lock");
    let who = String::from_utf8_lossy(&nobody.stderr);
    assert!(who.contains("Permission denied"), "{who}");

    // Held by another process (shared, then exclusive): each call gives up
    // after the bound, naming the lock, and changes nothing.
    let before = snapshot(&ms);
    for (flag, calls) in [("-s", vec!["apply-full"]), ("-x", vec!["apply-full", "apply-iface", "clear"])] {
        // Its own process group: flock's child (sleep) inherits the lock and dies with it.
        let mut holder =
            Command::new("flock").arg(flag).arg(&lock).args(["sleep", "60"]).process_group(0).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        for call in calls {
            let args: Vec<&str> = if call == "apply-iface" { vec![call, "veth101i0"] } else { vec![call] };
            let t = Instant::now();
            let out = cli!(&sandbox, &args).output().unwrap();
            let took = t.elapsed();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{call} succeeded while {flag} was held: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(err.contains(&format!("lock {}: still held by another process after 10 s", lock.display())), "{err}");
            assert!(took >= LOCK_TIMEOUT && took < LOCK_TIMEOUT + Duration::from_secs(3), "{call}: {took:?}");
        }
        // SAFETY: kill of the holder's own process group.
        unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
        holder.wait().unwrap();
    }
    assert_eq!(snapshot(&ms), before);
}

#[test]
fn a_renamed_nic_is_enforced_under_its_new_name() {
    let sandbox = Sandbox::new("rename");
    let ms = sandbox.microseg();
    let mut lab = Lab::new();
    lab.add_veth("veth101i0", 1, true);
    lab.add_veth("veth102i0", 2, true);
    // a is open to the host; b is not.
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b")]));
    ms.apply_full().unwrap();
    let host = lab.socket("host");
    let guest = lab.socket("veth101i0");
    let reaches = |what: &str| {
        while guest.recv_from(&mut [0u8; 64]).is_ok() {}
        host.send_to(what.as_bytes(), SocketAddrV4::new(ip(1), PORT)).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        guest.recv_from(&mut [0u8; 64]).is_ok()
    };
    assert!(reaches("before"), "a's guest is open to the host");

    // veth102i0 goes away; veth101i0 is renamed to veth102i0 (group b).
    sh("ip link del veth102i0 && ip link set veth101i0 down && ip link set veth101i0 name veth102i0 \
        && ip link set veth102i0 up");
    let ifindex = netdev::ifindex("veth102i0").unwrap();
    let programs = |ms: &Microseg| {
        let ids = ms.policy().pinned_program_ids();
        let egress = sys::prog_query_tcx(ifindex, Hook::Egress.attach_type()).unwrap();
        let ingress = sys::prog_query_tcx(ifindex, Hook::Ingress.attach_type()).unwrap();
        assert_eq!(egress, vec![ids["microseg_enforce"]], "egress chain");
        assert_eq!(ingress, vec![ids["microseg_stamp"]], "ingress chain");
        let map = sys::obj_get(&ms.policy().map_pin(TAP_TO_GROUP.name)).unwrap();
        TAP_TO_GROUP.open_fd(map.as_fd()).unwrap().get(&NicKey { ifindex }).unwrap().map(|v| v.mark)
    };
    assert!(matches!(ms.apply_iface(b"veth102i0").unwrap(), microseg::IfaceOutcome::Enforced { mark: 2, .. }));
    assert_eq!(programs(&ms), Some(2));
    assert!(!reaches("after apply_iface"), "the renamed NIC is not enforced as b");

    ms.apply_full().unwrap();
    assert_eq!(programs(&ms), Some(2));
    assert!(!reaches("after apply_full"));
    let pins: Vec<String> = ms.policy().link_pins().unwrap().iter().map(|l| format!("{}:{}", l.netdev, l.program)).collect();
    assert_eq!(pins, ["veth102i0:microseg_enforce", "veth102i0:microseg_stamp"]);

    // A new veth101i0 gets its own links; the renamed NIC keeps its own.
    add_nics([101]);
    assert!(matches!(ms.apply_iface(b"veth101i0").unwrap(), microseg::IfaceOutcome::Enforced { mark: 1, .. }));
    assert_eq!(programs(&ms), Some(2));
    ms.apply_full().unwrap();
    assert_eq!(programs(&ms), Some(2));
    assert_eq!(ms.policy().link_pins().unwrap().len(), 4);
}

#[test]
fn plug_cycles_reuse_the_space_of_vanished_nics() {
    let _host = HostNs::enter();
    let sandbox = Sandbox::new("cycles");
    // The test layout's group map holds 4 NICs.
    let ms = sandbox.microseg_with(&MICROSEG_LAYOUT);
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b"), (103, "a")]));
    add_nics([101]);
    ms.apply_full().unwrap();
    let group_map_len = || {
        let map = sys::obj_get(&ms.policy().map_pin(TAP_TO_GROUP.name)).unwrap();
        TAP_TO_GROUP.open_fd(map.as_fd()).unwrap().entries().unwrap().len()
    };
    for cycle in 0..6 {
        // Guests 102 and 103 start (a new ifindex each time) and stop again.
        add_nics([102, 103]);
        for nic in ["veth102i0", "veth103i0"] {
            let out = ms.apply_iface(nic.as_bytes()).unwrap_or_else(|e| panic!("cycle {cycle}: {nic}: {e:#}"));
            assert!(matches!(out, microseg::IfaceOutcome::Enforced { .. }), "cycle {cycle}: {out:?}");
        }
        assert!(group_map_len() <= 4, "cycle {cycle}");
        sh("ip link del veth102i0 && ip link del veth103i0");
    }
    // Full of entries of vanished NICs: a new NIC is still enforced.
    add_nics([102]);
    assert!(matches!(ms.apply_iface(b"veth102i0").unwrap(), microseg::IfaceOutcome::Enforced { .. }));
    ms.apply_full().unwrap();
    assert_eq!(group_map_len(), 2, "the full pass leaves exactly the live assigned NICs");
}

#[test]
fn a_near_capacity_policy_is_replaced_by_a_disjoint_one() {
    let _host = HostNs::enter();
    add_nics([101]);
    let sandbox = Sandbox::new("replace");
    // The test layout's rule map holds 4096 pairs: each policy is 64 x 64.
    let ms = sandbox.microseg_with(&MICROSEG_LAYOUT);
    let policy = |base: u16| {
        let mut groups: Vec<(String, u16, Option<&str>)> = vec![("s".into(), base, None), ("d".into(), base + 1, None)];
        for i in 0..63u16 {
            groups.push((format!("s{i}"), base + 100 + i, Some("s")));
            groups.push((format!("d{i}"), base + 200 + i, Some("d")));
        }
        let g: Vec<(&str, u16, Option<&str>)> = groups.iter().map(|(n, m, p)| (n.as_str(), *m, *p)).collect();
        sdn_config(&g, &[("all", Some("s"), "d", true)], &[(101, "d")])
    };
    for (round, base) in [1000u16, 5000, 1000, 9000].into_iter().enumerate() {
        sandbox.write_config(&policy(base));
        ms.apply_full().unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        let rules = snapshot(&ms).rules;
        assert_eq!(rules.len(), 4096, "round {round}");
        assert!(rules.keys().all(|k| k.src >= base && k.src < base + 300), "round {round}: a mix of policies");
    }
}

#[test]
fn overlapping_full_passes_end_with_the_config_on_disk_last() {
    let _host = HostNs::enter();
    add_nics([101, 102]);
    let sandbox = Sandbox::new("overlap");
    let ms = sandbox.microseg();
    let first = sdn_config(GROUPS, RULES, &[(101, "a"), (102, "a")]);
    let last = sdn_config(GROUPS, RULES, &[(101, "b")]);
    sandbox.write_config(&first);
    ms.apply_full().unwrap();
    for _ in 0..3 {
        sandbox.write_config(&first);
        // A pass starts while another holds the lock, then the config changes.
        let held = ms.policy().lock(Mode::Exclusive).unwrap();
        let child = cli!(&sandbox, &["apply-full"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        sandbox.write_config(&last);
        drop(held);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let taps: BTreeMap<u32, u32> = snapshot(&ms).taps.iter().map(|(k, v)| (k.ifindex, u32::from(v.mark))).collect();
        assert_eq!(taps, BTreeMap::from([(netdev::ifindex("veth101i0").unwrap(), 2)]), "the older config stayed");
        sandbox.write_config(&first);
        ms.apply_full().unwrap();
    }
}

#[test]
fn a_newer_librarys_programs_are_not_replaced() {
    let _host = HostNs::enter();
    add_nics([101, 102]);
    let sandbox = Sandbox::new("skew");
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a")]));
    let mut newer = sandbox.microseg_with(&MICROSEG_CODE);
    for u in &mut newer.units {
        u.state.library_version = "99.0.0".into();
    }
    newer.apply_full().unwrap();
    let theirs = newer.policy().pinned_program_ids();

    // The older library (this build) works with them: nothing reloaded.
    let older = sandbox.microseg();
    let r = older.apply_full().unwrap();
    assert!(!r.loaded, "the older library reloaded its programs");
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a"), (102, "b")]));
    assert!(matches!(older.apply_iface(b"veth102i0").unwrap(), microseg::IfaceOutcome::Enforced { .. }));
    assert!(!older.apply_full().unwrap().loaded);
    assert_eq!(older.policy().pinned_program_ids(), theirs);
    let ifindex = netdev::ifindex("veth102i0").unwrap();
    assert_eq!(sys::prog_query_tcx(ifindex, Hook::Ingress.attach_type()).unwrap(), vec![theirs["microseg_stamp"]]);

    // A newer layout it does not know: it fails clearly and changes nothing.
    let mut newer_layout = sandbox.microseg_with(&MICROSEG_LAYOUT);
    for u in &mut newer_layout.units {
        u.state.library_version = "99.1.0".into();
    }
    newer_layout.apply_full().unwrap();
    let before = snapshot(&older);
    let e = format!("{:#}", older.apply_full().unwrap_err());
    assert!(
        e.contains("programs of a newer library version (99.1.0) are loaded")
            && e.contains("restart it to use the new library"),
        "{e}"
    );
    assert_eq!(snapshot(&older), before);
}

#[test]
fn a_replaced_program_pin_is_detected_and_repaired() {
    let _host = HostNs::enter();
    add_nics([101]);
    let sandbox = Sandbox::new("progpin");
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a")]));
    let ms = sandbox.microseg();
    ms.apply_full().unwrap();
    // Someone pins another program under the stamp's name.
    let stamp = ms.policy().prog_pin("microseg_stamp");
    let enforce = sys::obj_get(&ms.policy().prog_pin("microseg_enforce")).unwrap();
    std::fs::remove_file(&stamp).unwrap();
    sys::obj_pin(enforce.as_fd(), &stamp).unwrap();
    drop(enforce);
    let r = ms.apply_full().unwrap();
    assert!(r.loaded, "a replaced program pin was taken as current");
    let ids = ms.policy().pinned_program_ids();
    assert_ne!(ids["microseg_stamp"], ids["microseg_enforce"]);
    let ifindex = netdev::ifindex("veth101i0").unwrap();
    assert_eq!(sys::prog_query_tcx(ifindex, Hook::Ingress.attach_type()).unwrap(), vec![ids["microseg_stamp"]]);
    assert!(!ms.apply_full().unwrap().loaded);
}

#[test]
fn private_dirs_are_tightened_when_they_exist_loose() {
    let _host = HostNs::enter();
    add_nics([101]);
    let sandbox = Sandbox::new("loose");
    sandbox.write_config(&sdn_config(GROUPS, RULES, &[(101, "a")]));
    std::fs::create_dir_all(sandbox.settings.run_dir.join("microseg")).unwrap();
    std::fs::set_permissions(&sandbox.settings.run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    sandbox.microseg().apply_full().unwrap();
    let mode = std::fs::metadata(&sandbox.settings.run_dir).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
