//! Hostile configs against the parser and the resolver (no kernel): a
//! property-based fuzzer over generated configs and mutated seed documents
//! (`tests/fuzz-corpus/`), and the pathological shapes: 10 MB documents,
//! 50,000 groups, a 10,000-deep parent chain, cycles. Nothing may panic, and
//! every refusal names what is wrong. Work is bounded by the resolver's
//! budget (deterministic), not by wall-clock assertions; times are printed.

use std::fmt::Write;
use std::time::Instant;

use microseg::config;
use microseg::subsystems::microseg::resolve;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CAPACITY: usize = 1 << 20;

/// Parses and resolves; returns the error text if refused. Panics propagate.
fn run(doc: &[u8]) -> Result<usize, String> {
    let cfg = config::parse(doc).map_err(|e| format!("{e:#}"))?;
    resolve::resolve(&cfg, CAPACITY).map(|t| t.entries.len()).map_err(|e| format!("{e:#}"))
}

fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..70_000).prop_map(|n| n.to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "[a-z]{0,3}".prop_map(|s| format!("\"{s}\"")),
        Just("18446744073709551616".to_string()),
    ]
}

/// Mostly valid (a number or a stringly number in range), sometimes junk.
fn number(max: u64) -> impl Strategy<Value = String> {
    prop_oneof![
        60 => (0..=max).prop_map(|n| n.to_string()),
        30 => (0..=max).prop_map(|n| format!("\"{n}\"")),
        1 => junk(),
    ]
}

fn flag() -> impl Strategy<Value = String> {
    prop_oneof![60 => prop_oneof![Just("0"), Just("1"), Just("true"), Just("false"), Just("\"1\"")].prop_map(String::from), 1 => junk()]
}

/// A reference to one of `n` groups, or (rarely) anything at all.
fn name(n: usize) -> impl Strategy<Value = String> {
    prop_oneof![150 => (0..n).prop_map(|i| format!("\"g{i}\"")), 1 => junk()]
}

/// A `microseg` section with groups (a forest, sometimes with a stray parent
/// that may close a cycle), rules, assignments and unknown sections; every
/// field mostly valid, sometimes not.
fn document() -> impl Strategy<Value = String> {
    (1usize..40).prop_flat_map(|n| {
        let groups = prop::collection::vec((number(65_600), 0usize..1000, 0u8..60, name(n)), n);
        let rules = prop::collection::vec((prop::option::of(name(n)), name(n), flag()), 0..30);
        let assigns = prop::collection::vec((number(2_000_000), number(40), name(n)), 0..10);
        let junk_types = prop::collection::vec("[a-z]{1,6}", 0..3);
        (groups, rules, assigns, junk_types).prop_map(move |(groups, rules, assigns, junk_types)| {
            let mut ids = Vec::new();
            for (i, (mark, parent, kind, stray)) in groups.iter().enumerate() {
                let p = match kind {
                    0 => format!(r#", "parent": {stray}"#),
                    1..=30 if i > 0 => format!(r#", "parent": "g{}""#, parent % i),
                    _ => String::new(),
                };
                ids.push(format!(r#""g{i}": {{"type": "group", "mark": {mark}{p}}}"#));
            }
            for (i, (src, dst, allow)) in rules.iter().enumerate() {
                let s = src.as_ref().map(|s| format!(r#", "src": {s}"#)).unwrap_or_default();
                ids.push(format!(r#""r{i}": {{"type": "rule", "dst": {dst}, "allow": {allow}{s}}}"#));
            }
            for (i, (vmid, iface, group)) in assigns.iter().enumerate() {
                ids.push(format!(r#""a{i}": {{"type": "assignment", "vmid": {vmid}, "iface": {iface}, "group": {group}}}"#));
            }
            for (i, t) in junk_types.iter().enumerate() {
                ids.push(format!(r#""j{i}": {{"type": "{t}", "x": 1}}"#));
            }
            format!(r#"{{"version": 1, "zones": {{"ids": {{}}}}, "microseg": {{"ids": {{ {} }}}}}}"#, ids.join(","))
        })
    })
}

#[test]
fn fuzz_generated_configs() {
    let cases = 20_000;
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let (ok, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&document(), |doc| {
            match run(doc.as_bytes()) {
                Ok(_) => ok.set(ok.get() + 1),
                Err(e) => {
                    prop_assert!(e.starts_with("microseg ") || e.starts_with("invalid JSON"), "unclear error: {}", e);
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    let (ok, refused) = (ok.get(), refused.get());
    println!("fuzz_generated_configs: {cases} executions, {ok} accepted, {refused} refused with a message");
    assert!(ok > 0 && refused > 0, "the generator covers both outcomes");
}

#[test]
fn fuzz_mutated_corpus() {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-corpus")).unwrap() {
        seeds.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    seeds.sort();
    let mutation = (0..seeds.len(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8));
    let cases = 30_000;
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&mutation, |(seed, edits)| {
            let mut doc = seeds[seed].clone();
            for (at, byte, op) in edits {
                let i = at.index(doc.len().max(1));
                match op {
                    0 if !doc.is_empty() => doc[i] = byte,
                    1 => doc.insert(i.min(doc.len()), byte),
                    2 if !doc.is_empty() => {
                        doc.remove(i);
                    }
                    _ => {
                        // Splice a structural token where parsers break most.
                        let tok: &[u8] = [&b"{"[..], b"}", b"\"", b",", b"null", b"[", b"\"mark\": 0"][byte as usize % 7];
                        let i = i.min(doc.len());
                        doc.splice(i..i, tok.iter().copied());
                    }
                }
            }
            let _ = run(&doc);
            Ok(())
        })
        .unwrap();
    println!("fuzz_mutated_corpus: {cases} executions over {} seeds", seeds.len());
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    println!("{what}: {:?}", t.elapsed());
    r
}

#[test]
fn ten_megabyte_config() {
    let mut ids = String::new();
    let pad = "x".repeat(150);
    for i in 0..50_000u32 {
        let _ = write!(ids, r#""g{i}": {{"type": "group", "mark": {}, "comment": "{pad}"}},"#, (i % 65_000) + 1);
    }
    ids.push_str(r#""r": {"type": "rule", "src": "g1", "dst": "g2", "allow": 1}"#);
    let doc = format!(r#"{{"microseg": {{"ids": {{ {ids} }}}}}}"#);
    assert!(doc.len() > 10_000_000, "{} bytes", doc.len());
    assert_eq!(timed("10 MB config, 50,000 groups", || run(doc.as_bytes())), Ok(1));
    let dup = doc.replace(r#""g49999": {"type": "group", "mark": 50000"#, r#""g49999": {"type": "group", "mark": 7"#);
    let e = timed("10 MB config, a duplicate mark", || run(dup.as_bytes())).unwrap_err();
    assert!(e.contains("microseg group 'g6': mark 7 is already used by group 'g49999'") || e.contains("mark 7 is already used"), "{e}");
}

#[test]
fn fifty_thousand_groups() {
    let mut ids = String::from(r#""root": {"type": "group", "mark": 1},"#);
    for i in 0..50_000u32 {
        let _ = write!(ids, r#""g{i}": {{"type": "group", "mark": {}, "parent": "root"}},"#, i + 2);
    }
    ids.push_str(r#""in": {"type": "rule", "dst": "root", "allow": 1}, "all": {"type": "rule", "src": "root", "dst": "root", "allow": 1}"#);
    let doc = format!(r#"{{"microseg": {{"ids": {{ {ids} }}}}}}"#);
    let e = timed("50,000 groups, root -> root", || run(doc.as_bytes())).unwrap_err();
    assert!(e.contains("microseg rule 'all': the policy is too large to resolve"), "{e}");
    let doc = doc.replace(r#", "all": {"type": "rule", "src": "root", "dst": "root", "allow": 1}"#, "");
    assert_eq!(timed("50,000 groups, unstamped -> root", || run(doc.as_bytes())).unwrap(), 50_001);
}

#[test]
fn ten_thousand_deep_chain_and_cycle() {
    let mut ids = String::from(r#""g0": {"type": "group", "mark": 1},"#);
    for i in 1..10_000u32 {
        let _ = write!(ids, r#""g{i}": {{"type": "group", "mark": {}, "parent": "g{}"}},"#, i + 1, i - 1);
    }
    let chain = format!(r#"{{"microseg": {{"ids": {{ {ids} "r": {{"type": "rule", "dst": "g0", "allow": 1}} }}}}}}"#);
    assert_eq!(timed("10,000-deep chain, unstamped -> root", || run(chain.as_bytes())).unwrap(), 10_000);
    let all = chain.replace(r#""r": {"type": "rule", "dst": "g0""#, r#""r": {"type": "rule", "src": "g0", "dst": "g0""#);
    let e = timed("10,000-deep chain, root -> root", || run(all.as_bytes())).unwrap_err();
    assert!(e.contains("microseg rule 'r': the policy is too large to resolve"), "{e}");
    let cycle = chain.replace(r#""g0": {"type": "group", "mark": 1}"#, r#""g0": {"type": "group", "mark": 1, "parent": "g9999"}"#);
    let e = timed("10,000-deep cycle", || run(cycle.as_bytes())).unwrap_err();
    assert!(e.contains("parent chain forms a cycle"), "{}", &e[..200.min(e.len())]);
}
