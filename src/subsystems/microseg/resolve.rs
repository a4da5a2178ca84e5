//! Resolution (SPEC section 3): the group forest and the rules flattened into
//! longest-prefix-match entries keyed `(src mark, dst mark, proto, dport)`,
//! so that the data plane decides every packet with one bounded lookup, no
//! hierarchy and no loop over rules.
//!
//! For each `(src, dst)` pair the rules that cover it are the candidates;
//! for every protocol and port the most specific candidate that matches
//! decides: the smallest destination distance, then the smallest source
//! distance, then the narrower L4 match (`dport` before `proto`-only before
//! no `proto`); an exact tie with different verdicts is a deny. The
//! decisions are stored as entries at three depths: the pair (no L4 match,
//! prefix 32), the protocol (prefix 40), and aligned port blocks (prefix 48
//! + bits), each only where it differs from the shallower one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Result};

use crate::config::{Mark, MicrosegConfig, Rule};
use crate::config::policy::has_ports;

use super::maps::{PolicyKey, PolicyValue, POLICY_FLAG_ANY_ALLOW, VERDICT_ALLOW, VERDICT_DENY};

/// The unstamped group: traffic that did not come from an assigned NIC.
pub const UNSTAMPED: Mark = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Deny,
    Allow,
}

/// The decision for each pair when no L4 match applies (the pair entries),
/// ordered for deterministic output and diffing.
pub type PairTable = BTreeMap<(Mark, Mark), Verdict>;

/// LPM prefix lengths of the three depths (the key's data is src, dst,
/// proto, a zero byte, dport: 16 + 16 + 8 + 8 + 16 bits).
pub const PREFIX_PAIR: u32 = 32;
pub const PREFIX_PROTO: u32 = 40;
pub const PREFIX_PORT: u32 = 48;

/// Upper bound on resolution work (subtree walks plus pair candidates), so that
/// a hostile config (thousands of overlapping rules on deep trees) is refused
/// in bounded time and memory instead of grinding through billions of steps.
/// Sixteen times the largest rule map leaves legitimate policies far below it.
pub const WORK_PER_CAPACITY: usize = 16;

/// A rule covering a pair, at its distances.
#[derive(Clone, Copy)]
struct Candidate {
    dst_distance: u32,
    src_distance: u32,
    /// Index into `cfg.rules` in id order.
    rule: u32,
}

/// What decides a packet: the verdict and the rule (its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Option<String>,
    /// How the rule was chosen, for `simulate` and the drop events.
    pub reason: String,
}

/// The resolved policy: the kernel entries and the rule ids they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub entries: BTreeMap<PolicyKey, PolicyValue>,
    /// Rule ids; an entry's `rule` is an index into this, plus one (0: none).
    pub rules: Vec<String>,
}

pub fn policy_key(prefixlen: u32, src: Mark, dst: Mark, proto: u8, port: u16) -> PolicyKey {
    PolicyKey { prefixlen, src, dst, proto, pad: 0, dport: port.to_be() }
}

impl Policy {
    /// The pair-level decision of every pair that has one (what a frame
    /// without L4 match gets): for policies without `proto` this is the
    /// whole policy.
    pub fn pairs(&self) -> PairTable {
        self.entries
            .iter()
            .filter(|(k, _)| k.prefixlen == PREFIX_PAIR)
            .map(|(k, v)| ((k.src, k.dst), if v.verdict == VERDICT_ALLOW { Verdict::Allow } else { Verdict::Deny }))
            .collect()
    }

    /// The longest-prefix match the data plane makes for a packet from
    /// `src` to `dst` with protocol `proto` (None: not IP) and destination
    /// port `port` (None: no ports).
    pub fn lookup(&self, src: Mark, dst: Mark, proto: Option<u8>, port: Option<u16>) -> Option<&PolicyValue> {
        if let (Some(p), Some(port)) = (proto, port) {
            for bits in (0..=16u32).rev() {
                let block = if bits == 0 { 0 } else { port & !((1u32 << (16 - bits)) - 1) as u16 };
                if let Some(v) = self.entries.get(&policy_key(PREFIX_PORT + bits, src, dst, p, block)) {
                    return Some(v);
                }
            }
        }
        if let Some(p) = proto {
            if let Some(v) = self.entries.get(&policy_key(PREFIX_PROTO, src, dst, p, 0)) {
                return Some(v);
            }
        }
        self.entries.get(&policy_key(PREFIX_PAIR, src, dst, 0, 0))
    }

    /// The decision for a packet, as the data plane makes it (no entry: deny).
    pub fn decide(&self, src: Mark, dst: Mark, proto: Option<u8>, port: Option<u16>) -> Decision {
        match self.lookup(src, dst, proto, port) {
            Some(v) => {
                let rule = (v.rule > 0).then(|| self.rules[(v.rule - 1) as usize].clone());
                Decision {
                    verdict: if v.verdict == VERDICT_ALLOW { Verdict::Allow } else { Verdict::Deny },
                    reason: format!(
                        "rule '{}' is the most specific match (destination, then source, then L4)",
                        rule.as_deref().unwrap_or("?")
                    ),
                    rule,
                }
            }
            None => Decision {
                verdict: Verdict::Deny,
                rule: None,
                reason: "no rule matches: default deny".into(),
            },
        }
    }
}

/// Flattens `cfg` into at most `capacity` kernel entries.
///
/// Fails, naming the rule that crossed the line, when the policy covers more
/// pairs than `capacity` or needs more work than `WORK_PER_CAPACITY *
/// capacity` steps, and when the entries do not fit.
pub fn resolve(cfg: &MicrosegConfig, capacity: usize) -> Result<Policy> {
    let tree = Forest::new(cfg);
    let budget = capacity.saturating_mul(WORK_PER_CAPACITY).max(1 << 16);
    let mut work = 0usize;
    let rules: Vec<&Rule> = cfg.rules.values().collect();
    let mut covered: HashMap<(Mark, Mark), Vec<Candidate>> = HashMap::new();

    for (index, rule) in rules.iter().enumerate() {
        let too_much = || {
            anyhow::anyhow!(
                "microseg rule '{}': the policy is too large to resolve (more than {budget} expansion steps)",
                rule.id
            )
        };
        let srcs = match &rule.src {
            Some(src) => tree.subtree(src, &mut work, budget).ok_or_else(too_much)?,
            None => vec![(UNSTAMPED, 0u32)],
        };
        let dsts = tree.subtree(&rule.dst, &mut work, budget).ok_or_else(too_much)?;
        work = work.saturating_add(srcs.len().saturating_mul(dsts.len()));
        if work > budget {
            return Err(too_much());
        }
        for &(dst, dst_distance) in &dsts {
            for &(src, src_distance) in &srcs {
                if !covered.contains_key(&(src, dst)) && covered.len() >= capacity {
                    bail!(
                        "microseg rule '{}': the policy expands to more (src, dst) pairs \
                         than the kernel rule map holds ({capacity})",
                        rule.id
                    );
                }
                covered.entry((src, dst)).or_default().push(Candidate { dst_distance, src_distance, rule: index as u32 });
            }
        }
    }

    let mut policy = Policy { entries: BTreeMap::new(), rules: rules.iter().map(|r| r.id.clone()).collect() };
    for ((src, dst), candidates) in covered {
        pair_entries(src, dst, &candidates, &rules, &mut policy.entries);
        if policy.entries.len() > capacity {
            bail!(
                "microseg: the policy needs more kernel entries (pairs, protocols and port blocks) \
                 than the policy map holds ({capacity})"
            );
        }
    }
    Ok(policy)
}

/// The winner among `candidates` that satisfy `applies`: the most specific
/// by (destination distance, source distance, L4 specificity); an exact tie
/// with different verdicts is a deny (the first deny among them).
fn winner(candidates: &[Candidate], rules: &[&Rule], applies: impl Fn(&Rule) -> bool) -> Option<(u32, bool)> {
    let key = |c: &Candidate| (c.dst_distance, c.src_distance, rules[c.rule as usize].l4.specificity());
    let best = candidates.iter().filter(|c| applies(rules[c.rule as usize])).map(key).min()?;
    let tied: Vec<&Candidate> =
        candidates.iter().filter(|c| applies(rules[c.rule as usize]) && key(c) == best).collect();
    let deny = tied.iter().find(|c| !rules[c.rule as usize].allow);
    let chosen = deny.copied().unwrap_or(tied[0]);
    Some((chosen.rule, deny.is_none()))
}

/// The entries of one pair (see the module comment).
fn pair_entries(src: Mark, dst: Mark, candidates: &[Candidate], rules: &[&Rule], out: &mut BTreeMap<PolicyKey, PolicyValue>) {
    let value = |(rule, allow): (u32, bool)| PolicyValue {
        verdict: if allow { VERDICT_ALLOW } else { VERDICT_DENY },
        flags: 0,
        pad: 0,
        rule: rule + 1,
    };
    let mut entries: Vec<(PolicyKey, PolicyValue)> = Vec::new();
    let base = winner(candidates, rules, |r| r.l4.proto.is_none());
    let protos: BTreeSet<u8> = candidates.iter().filter_map(|c| rules[c.rule as usize].l4.proto).collect();
    for proto in protos {
        let at_proto = winner(candidates, rules, |r| r.l4.proto.is_none() || (r.l4.proto == Some(proto) && r.l4.dports.is_empty()));
        if let Some(w) = at_proto.filter(|_| at_proto != base) {
            entries.push((policy_key(PREFIX_PROTO, src, dst, proto, 0), value(w)));
        }
        if !has_ports(proto) {
            continue;
        }
        // Segment the port space at every range boundary of this protocol's
        // port rules; inside a segment the covering rules do not change.
        let port_rules: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| rules[c.rule as usize].l4.proto == Some(proto) && !rules[c.rule as usize].l4.dports.is_empty())
            .collect();
        let mut bounds: BTreeSet<u32> = BTreeSet::new();
        for c in &port_rules {
            for &(lo, hi) in &rules[c.rule as usize].l4.dports {
                bounds.insert(u32::from(lo));
                bounds.insert(u32::from(hi) + 1);
            }
        }
        let bounds: Vec<u32> = bounds.into_iter().collect();
        let mut segments: Vec<(u32, u32, (u32, bool))> = Vec::new();
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1] - 1);
            let here = winner(candidates, rules, |r| {
                r.l4.proto.is_none()
                    || (r.l4.proto == Some(proto)
                        && (r.l4.dports.is_empty() || r.l4.dports.iter().any(|&(a, b)| u32::from(a) <= lo && hi <= u32::from(b))))
            });
            let Some(here) = here else { continue };
            if Some(here) == at_proto {
                continue;
            }
            match segments.last_mut() {
                Some(last) if last.1 + 1 == lo && last.2 == here => last.1 = hi,
                _ => segments.push((lo, hi, here)),
            }
        }
        for (lo, hi, w) in segments {
            for (block, bits) in port_blocks(lo, hi) {
                entries.push((policy_key(PREFIX_PORT + bits, src, dst, proto, block), value(w)));
            }
        }
    }
    let any_allow = base.is_some_and(|b| b.1) || entries.iter().any(|(_, v)| v.verdict == VERDICT_ALLOW);
    // The pair entry: the decision without L4 match, and whether the pair
    // allows anything at all (address resolution follows that).
    let mut pair = base.map(value).unwrap_or(PolicyValue { verdict: VERDICT_DENY, flags: 0, pad: 0, rule: 0 });
    if any_allow {
        pair.flags |= POLICY_FLAG_ANY_ALLOW;
    }
    if base.is_some() || any_allow {
        entries.push((policy_key(PREFIX_PAIR, src, dst, 0, 0), pair));
    }
    out.extend(entries);
}

/// `[lo, hi]` as aligned blocks `(start, prefix bits)`.
/// (Public for the benchmarks, which write a port-range rule by hand.)
pub fn port_blocks(lo: u32, hi: u32) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let mut start = lo;
    while start <= hi {
        // The largest aligned block starting here that stays within hi.
        let mut size = if start == 0 { 1 << 16 } else { 1u32 << start.trailing_zeros().min(16) };
        while start + size - 1 > hi {
            size >>= 1;
        }
        out.push((start as u16, 16 - size.trailing_zeros()));
        start += size;
    }
    out
}

/// How SPEC section 3 decides a packet, read directly from the config: every
/// matching rule, the most specific deciding, with the reason spelled out.
/// (`simulate` cross-checks it against the kernel encoding.)
pub fn explain(cfg: &MicrosegConfig, src: Mark, dst: Mark, proto: Option<u8>, port: Option<u16>) -> Decision {
    let group_of = |m: Mark| cfg.groups.values().find(|g| g.mark == m).map(|g| g.id.as_str());
    // Steps up the parent chain from `from` to `to`; validated configs have no cycles.
    let distance = |from: Option<&str>, to: &str| -> Option<u32> {
        let mut cur = from;
        for d in 0..=cfg.groups.len() as u32 {
            let id = cur?;
            if id == to {
                return Some(d);
            }
            cur = cfg.groups.get(id).and_then(|g| g.parent.as_deref());
        }
        None
    };
    let mut matches: Vec<((u32, u32, u8), &Rule)> = Vec::new();
    for r in cfg.rules.values() {
        let Some(dd) = distance(group_of(dst), &r.dst) else { continue };
        let sd = match (&r.src, src) {
            (None, UNSTAMPED) => 0,
            (None, _) | (Some(_), UNSTAMPED) => continue,
            (Some(s), m) => match distance(group_of(m), s) {
                Some(d) => d,
                None => continue,
            },
        };
        let l4 = match r.l4.proto {
            None => true,
            Some(p) => {
                proto == Some(p)
                    && (r.l4.dports.is_empty() || port.is_some_and(|pt| r.l4.dports.iter().any(|&(a, b)| a <= pt && pt <= b)))
            }
        };
        if l4 {
            matches.push(((dd, sd, r.l4.specificity()), r));
        }
    }
    matches.sort_by_key(|(k, r)| (*k, r.allow, r.id.clone()));
    let Some(&(best, _)) = matches.first() else {
        return Decision { verdict: Verdict::Deny, rule: None, reason: "no rule matches: default deny".into() };
    };
    let tied: Vec<&Rule> = matches.iter().filter(|(k, _)| *k == best).map(|(_, r)| *r).collect();
    let l4 = ["a dport match", "a proto-only match", "no L4 match"][best.2 as usize];
    let others = matches.len() - tied.len();
    let also = if others > 0 { format!("; {others} less specific rule(s) also match") } else { String::new() };
    if tied.iter().any(|r| r.allow != tied[0].allow) {
        // Sorted with deny first: the tie is reported on a deny rule.
        let ids: Vec<String> = tied.iter().map(|r| format!("'{}'", r.id)).collect();
        return Decision {
            verdict: Verdict::Deny,
            rule: Some(tied[0].id.clone()),
            reason: format!(
                "rules {} tie at destination distance {}, source distance {}, {l4}: a tie denies{also}",
                ids.join(", "),
                best.0,
                best.1
            ),
        };
    }
    let r = tied[0];
    Decision {
        verdict: if r.allow { Verdict::Allow } else { Verdict::Deny },
        rule: Some(r.id.clone()),
        reason: format!(
            "rule '{}' is the most specific match: destination distance {}, source distance {}, {l4}{also}",
            r.id, best.0, best.1
        ),
    }
}

/// The group forest as children lists.
struct Forest<'a> {
    cfg: &'a MicrosegConfig,
    children: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Forest<'a> {
    fn new(cfg: &'a MicrosegConfig) -> Forest<'a> {
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for g in cfg.groups.values() {
            if let Some(p) = &g.parent {
                children.entry(p.as_str()).or_default().push(g.id.as_str());
            }
        }
        Forest { cfg, children }
    }

    /// `group` at distance 0 and every group below it with its distance, or
    /// `None` once `work` passes `budget`. Computed per rule and dropped after
    /// it, so memory stays linear in the number of groups.
    fn subtree(&self, group: &str, work: &mut usize, budget: usize) -> Option<Vec<(Mark, u32)>> {
        let mut list = Vec::new();
        let mut frontier = vec![group];
        let mut distance = 0u32;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for id in frontier {
                *work += 1;
                if *work > budget {
                    return None;
                }
                list.push((self.cfg.groups[id].mark, distance));
                next.extend(self.children.get(id).into_iter().flatten().copied());
            }
            frontier = next;
            distance += 1;
        }
        Some(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Group, Rule};
    use crate::subsystems::microseg::maps::{POLICY_FLAG_ANY_ALLOW, VERDICT_DENY};

    struct Builder(MicrosegConfig);

    impl Builder {
        fn new() -> Self {
            Builder(MicrosegConfig::default())
        }
        fn group(mut self, id: &str, mark: Mark, parent: Option<&str>) -> Self {
            let g = Group { id: id.into(), mark, parent: parent.map(Into::into), audit: None };
            self.0.groups.insert(id.into(), g);
            self
        }
        fn rule(self, id: &str, src: Option<&str>, dst: &str, allow: bool) -> Self {
            self.rule_l4(id, src, dst, allow, None, &[])
        }
        fn rule_l4(mut self, id: &str, src: Option<&str>, dst: &str, allow: bool, proto: Option<u8>, dports: &[(u16, u16)]) -> Self {
            let l4 = crate::config::L4 { proto, dports: dports.to_vec() };
            let r = Rule { id: id.into(), src: src.map(Into::into), dst: dst.into(), allow, l4 };
            self.0.rules.insert(id.into(), r);
            self
        }
        fn policy(self) -> Policy {
            crate::config::validate(&self.0).unwrap();
            resolve(&self.0, 1 << 20).unwrap()
        }
        fn resolve(self) -> PairTable {
            crate::config::validate(&self.0).unwrap();
            resolve(&self.0, 1 << 20).unwrap().pairs()
        }
    }

    use Verdict::{Allow, Deny};

    #[test]
    fn rule_covers_children() {
        // mon -> app allow covers mon -> web too.
        let t = Builder::new()
            .group("app", 10, None)
            .group("web", 11, Some("app"))
            .group("mon", 20, None)
            .rule("r1", Some("mon"), "app", true)
            .resolve();
        assert_eq!(t, PairTable::from([((20, 10), Allow), ((20, 11), Allow)]));
    }

    #[test]
    fn closer_destination_overrides() {
        // ext -> app allow plus ext -> web deny.
        let t = Builder::new()
            .group("app", 10, None)
            .group("web", 11, Some("app"))
            .group("ext", 30, None)
            .rule("a", Some("ext"), "app", true)
            .rule("b", Some("ext"), "web", false)
            .resolve();
        assert_eq!(t[&(30, 10)], Allow);
        assert_eq!(t[&(30, 11)], Deny);
    }

    #[test]
    fn destination_axis_decides_first() {
        // web -> db deny plus app -> dbprimary allow: web -> dbprimary allowed.
        let t = Builder::new()
            .group("app", 10, None)
            .group("web", 11, Some("app"))
            .group("db", 40, None)
            .group("dbprimary", 41, Some("db"))
            .rule("a", Some("web"), "db", false)
            .rule("b", Some("app"), "dbprimary", true)
            .resolve();
        assert_eq!(t[&(11, 41)], Allow);
        assert_eq!(t[&(11, 40)], Deny);
        assert_eq!(t[&(10, 41)], Allow);
        assert!(!t.contains_key(&(10, 40)));
    }

    #[test]
    fn closer_source_breaks_destination_tie() {
        // app -> svc deny plus web -> svc allow: web -> svc allowed.
        let t = Builder::new()
            .group("app", 10, None)
            .group("web", 11, Some("app"))
            .group("svc", 50, None)
            .rule("a", Some("app"), "svc", false)
            .rule("b", Some("web"), "svc", true)
            .resolve();
        assert_eq!(t, PairTable::from([((10, 50), Deny), ((11, 50), Allow)]));
    }

    #[test]
    fn three_levels_deep() {
        let t = Builder::new()
            .group("a", 1, None)
            .group("b", 2, Some("a"))
            .group("c", 3, Some("b"))
            .group("d", 4, Some("c"))
            .group("x", 9, None)
            .rule("top", Some("x"), "a", true)
            .rule("mid", Some("x"), "c", false)
            .rule("back", Some("d"), "x", true)
            .rule("deep", Some("b"), "x", false)
            .resolve();
        assert_eq!(t[&(9, 1)], Allow);
        assert_eq!(t[&(9, 2)], Allow);
        assert_eq!(t[&(9, 3)], Deny);
        assert_eq!(t[&(9, 4)], Deny, "inherits the nearer ancestor's deny");
        assert_eq!(t[&(4, 9)], Allow, "own rule beats grandparent's");
        assert_eq!(t[&(3, 9)], Deny);
        assert_eq!(t[&(2, 9)], Deny);
        assert!(!t.contains_key(&(1, 9)));
    }

    #[test]
    fn unstamped_source_covers_only_group_zero() {
        let t = Builder::new()
            .group("app", 10, None)
            .group("web", 11, Some("app"))
            .rule("r2", None, "web", true)
            .resolve();
        assert_eq!(t, PairTable::from([((UNSTAMPED, 11), Allow)]));
    }

    #[test]
    fn unstamped_rule_inherits_down_the_destination() {
        let t = Builder::new()
            .group("app", 10, None)
            .group("web", 11, Some("app"))
            .rule("gw", None, "app", true)
            .rule("no", None, "web", false)
            .resolve();
        assert_eq!(t, PairTable::from([((0, 10), Allow), ((0, 11), Deny)]));
    }

    #[test]
    fn exact_tie_resolves_to_deny_in_either_order() {
        for (first, second) in [(true, false), (false, true)] {
            let t = Builder::new()
                .group("a", 1, None)
                .group("b", 2, None)
                .rule("r1", Some("a"), "b", first)
                .rule("r2", Some("a"), "b", second)
                .resolve();
            assert_eq!(t[&(1, 2)], Deny);
        }
        let t = Builder::new()
            .group("a", 1, None)
            .group("b", 2, None)
            .rule("r1", Some("a"), "b", true)
            .rule("r2", Some("a"), "b", true)
            .resolve();
        assert_eq!(t[&(1, 2)], Allow, "agreeing duplicates are no tie");
    }

    #[test]
    fn overflow_names_the_rule() {
        let mut b = Builder::new();
        for i in 1..=20u16 {
            b = b.group(&format!("g{i:02}"), i, None);
        }
        let b = b.rule("fits", Some("g01"), "g02", true).rule("z-too-much", Some("g03"), "g04", true);
        crate::config::validate(&b.0).unwrap();
        assert_eq!(resolve(&b.0, 2).unwrap().entries.len(), 2);
        let e = resolve(&b.0, 1).unwrap_err().to_string();
        assert_eq!(
            e,
            "microseg rule 'z-too-much': the policy expands to more (src, dst) pairs than the kernel rule map holds (1)"
        );
    }

    #[test]
    fn overlapping_rules_hit_the_work_bound() {
        // 1000 identical rules over 300 x 300 groups: 90,000 pairs, but 90
        // million candidates. Refused quickly instead of ground through.
        let mut b = Builder::new().group("s", 1, None).group("d", 2, None);
        for i in 0..300u16 {
            b = b.group(&format!("s{i}"), 100 + i, Some("s")).group(&format!("d{i}"), 1000 + i, Some("d"));
        }
        for i in 0..1000 {
            b = b.rule(&format!("r{i:04}"), Some("s"), "d", true);
        }
        let t = std::time::Instant::now();
        let e = resolve(&b.0, 1 << 17).unwrap_err().to_string();
        assert!(e.contains("the policy is too large to resolve"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        // The same policy with one rule is fine.
        b.0.rules.retain(|id, _| id == "r0000");
        assert_eq!(resolve(&b.0, 1 << 17).unwrap().entries.len(), 301 * 301);
    }

    #[test]
    fn overflow_stops_before_materialising_everything() {
        // 300 children under each of two roots: 90,000 pairs; capacity 1000.
        let mut b = Builder::new().group("s", 1, None).group("d", 2, None);
        for i in 0..300u16 {
            b = b.group(&format!("s{i}"), 100 + i, Some("s")).group(&format!("d{i}"), 1000 + i, Some("d"));
        }
        let b = b.rule("big", Some("s"), "d", true);
        assert!(resolve(&b.0, 1000).is_err());
        assert_eq!(resolve(&b.0, 301 * 301).unwrap().entries.len(), 301 * 301);
    }

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    fn verdict(p: &Policy, src: Mark, dst: Mark, proto: Option<u8>, port: Option<u16>) -> (Verdict, Option<String>) {
        let d = p.decide(src, dst, proto, port);
        (d.verdict, d.rule)
    }

    /// web (11) under app (10), and db (40): the groups of SPEC section 3's L4 examples.
    fn app_web_db() -> Builder {
        Builder::new().group("app", 10, None).group("web", 11, Some("app")).group("db", 40, None)
    }

    #[test]
    fn l4_exception_inside_an_inherited_allow() {
        // app -> db allow plus web -> db tcp/22 deny: web -> db allowed except TCP 22.
        let p = app_web_db()
            .rule("a", Some("app"), "db", true)
            .rule_l4("b", Some("web"), "db", false, Some(TCP), &[(22, 22)])
            .policy();
        assert_eq!(verdict(&p, 11, 40, Some(TCP), Some(22)), (Deny, Some("b".into())));
        assert_eq!(verdict(&p, 11, 40, Some(TCP), Some(23)), (Allow, Some("a".into())));
        assert_eq!(verdict(&p, 11, 40, Some(UDP), Some(22)), (Allow, Some("a".into())));
        assert_eq!(verdict(&p, 11, 40, None, None), (Allow, Some("a".into())));
        assert_eq!(verdict(&p, 10, 40, Some(TCP), Some(22)), (Allow, Some("a".into())));
    }

    #[test]
    fn source_distance_decides_before_the_l4_match() {
        // web -> db deny plus app -> db tcp/5432 allow: web -> db tcp/5432 denied.
        let p = app_web_db()
            .rule("a", Some("web"), "db", false)
            .rule_l4("b", Some("app"), "db", true, Some(TCP), &[(5432, 5432)])
            .policy();
        assert_eq!(verdict(&p, 11, 40, Some(TCP), Some(5432)), (Deny, Some("a".into())));
        assert_eq!(verdict(&p, 10, 40, Some(TCP), Some(5432)), (Allow, Some("b".into())));
        assert_eq!(verdict(&p, 10, 40, Some(TCP), Some(5433)), (Deny, None), "no rule: default deny");
        // The pair allows something: address resolution may pass for app -> db.
        let pair = p.lookup(10, 40, None, None).unwrap();
        assert_eq!((pair.verdict, pair.flags), (VERDICT_DENY, POLICY_FLAG_ANY_ALLOW));
        assert_eq!(p.lookup(11, 40, None, None).unwrap().flags, 0, "web -> db allows nothing");
    }

    #[test]
    fn ports_lists_ranges_overlaps_and_proto_only() {
        let p = Builder::new()
            .group("a", 1, None)
            .group("b", 2, None)
            .rule_l4("web", Some("a"), "b", true, Some(TCP), &[(80, 80), (443, 443), (8000, 8080)])
            .rule_l4("range", Some("a"), "b", true, Some(UDP), &[(5000, 5099)])
            .rule_l4("hole", Some("a"), "b", false, Some(UDP), &[(5050, 5050)])
            .rule_l4("dns", Some("a"), "b", true, Some(UDP), &[])
            .policy();
        for (port, want) in [(79, Deny), (80, Allow), (443, Allow), (7999, Deny), (8000, Allow), (8080, Allow), (8081, Deny)] {
            assert_eq!(verdict(&p, 1, 2, Some(TCP), Some(port)).0, want, "tcp/{port}");
        }
        // An overlapping deny at the same distances and L4 specificity: a tie, deny.
        assert_eq!(verdict(&p, 1, 2, Some(UDP), Some(5050)), (Deny, Some("hole".into())));
        assert_eq!(verdict(&p, 1, 2, Some(UDP), Some(5049)), (Allow, Some("range".into())));
        assert_eq!(verdict(&p, 1, 2, Some(UDP), Some(53)), (Allow, Some("dns".into())), "proto without dport");
        assert_eq!(verdict(&p, 1, 2, Some(1), None).0, Deny, "ICMP: no rule");
        assert_eq!(verdict(&p, 1, 2, None, None).0, Deny, "non-IP follows only rules without proto");
    }

    #[test]
    fn a_more_specific_group_shadows_a_port_rule() {
        let p = Builder::new()
            .group("a", 1, None)
            .group("b", 2, None)
            .group("bchild", 3, Some("b"))
            .rule_l4("web", Some("a"), "b", true, Some(TCP), &[(80, 80)])
            .rule("closed", Some("a"), "bchild", false)
            .policy();
        assert_eq!(verdict(&p, 1, 2, Some(TCP), Some(80)).0, Allow);
        assert_eq!(verdict(&p, 1, 3, Some(TCP), Some(80)), (Deny, Some("closed".into())));
    }

    #[test]
    fn explain_says_how_the_rule_was_chosen() {
        let mut b = app_web_db()
            .rule("a", Some("app"), "db", true)
            .rule_l4("b", Some("web"), "db", false, Some(TCP), &[(22, 22)]);
        b = b.rule("c", Some("web"), "db", true).rule("d", Some("web"), "db", false);
        crate::config::validate(&b.0).unwrap();
        let cfg = b.0;
        let e = explain(&cfg, 11, 40, Some(TCP), Some(22));
        assert_eq!((e.verdict, e.rule.as_deref()), (Deny, Some("b")));
        assert_eq!(
            e.reason,
            "rule 'b' is the most specific match: destination distance 0, source distance 0, a dport match; \
             3 less specific rule(s) also match"
        );
        let t = explain(&cfg, 11, 40, Some(UDP), None);
        assert_eq!((t.verdict, t.rule.as_deref()), (Deny, Some("d")));
        assert!(t.reason.starts_with("rules 'd', 'c' tie at destination distance 0, source distance 0, no L4 match: a tie denies"), "{}", t.reason);
        let n = explain(&cfg, 40, 11, None, None);
        assert_eq!((n.verdict, n.rule, n.reason.as_str()), (Deny, None, "no rule matches: default deny"));
    }

    #[test]
    fn port_blocks_cover_exactly() {
        for (lo, hi) in [(1, 1), (1, 65535), (80, 80), (8000, 8080), (1023, 1025), (32768, 65535), (5, 6)] {
            let blocks = port_blocks(lo, hi);
            let mut covered = Vec::new();
            for &(start, bits) in &blocks {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(start) % size, 0, "aligned: {start}/{bits}");
                covered.extend(u32::from(start)..u32::from(start) + size);
            }
            assert_eq!(covered, (lo..=hi).collect::<Vec<_>>(), "[{lo}, {hi}]: {blocks:?}");
            assert!(blocks.len() <= 32);
        }
    }

    /// The LPM encoding decides exactly as SPEC section 3 says (`explain`
    /// reads it literally: every matching rule, the most specific wins, ties
    /// deny, no match denies), on many generated policies.
    #[test]
    fn encoding_agrees_with_a_direct_evaluation() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ports = [1u16, 21, 22, 23, 79, 80, 81, 443, 1000, 1500, 2000, 2001, 65535];
        for round in 0..300 {
            let mut b = Builder::new();
            let n_groups = 2 + rnd(5) as u16;
            for g in 0..n_groups {
                let parent = (g > 0 && rnd(2) == 0).then(|| format!("g{}", rnd(u64::from(g))));
                b = b.group(&format!("g{g}"), g + 1, parent.as_deref());
            }
            for r in 0..1 + rnd(6) {
                let src = (rnd(4) != 0).then(|| format!("g{}", rnd(u64::from(n_groups))));
                let dst = format!("g{}", rnd(u64::from(n_groups)));
                let proto = match rnd(4) {
                    0 => None,
                    1 => Some(UDP),
                    _ => Some(TCP),
                };
                let mut dports = Vec::new();
                if proto.is_some() && rnd(2) == 0 {
                    let lo = ports[rnd(ports.len() as u64) as usize];
                    let hi = ports[rnd(ports.len() as u64) as usize].max(lo);
                    dports.push((lo, hi));
                }
                b = b.rule_l4(&format!("r{r}"), src.as_deref(), &dst, rnd(2) == 0, proto, &dports);
            }
            let cfg = b.0.clone();
            let p = b.policy();
            let marks: Vec<Mark> = std::iter::once(0).chain(1..=n_groups).collect();
            for &src in &marks {
                for dst in 1..=n_groups {
                    for (proto, port) in [(None, None), (Some(TCP), None)]
                        .into_iter()
                        .chain(ports.iter().map(|&p| (Some(TCP), Some(p))))
                        .chain(ports.iter().map(|&p| (Some(UDP), Some(p))))
                    {
                        // SPEC section 3 read literally (`explain`) against the LPM encoding.
                        let want = explain(&cfg, src, dst, proto, port);
                        let got = p.decide(src, dst, proto, port);
                        assert_eq!(
                            (got.verdict, got.rule),
                            (want.verdict, want.rule),
                            "round {round}: {src} -> {dst} {proto:?}/{port:?}: {}\n{cfg:#?}",
                            want.reason
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn l4_entries_count_against_the_map() {
        let b = Builder::new()
            .group("a", 1, None)
            .group("b", 2, None)
            .rule_l4("r", Some("a"), "b", true, Some(TCP), &[(1, 65535)]);
        crate::config::validate(&b.0).unwrap();
        // 16 port blocks plus the pair entry.
        assert_eq!(resolve(&b.0, 17).unwrap().entries.len(), 17);
        let e = resolve(&b.0, 16).unwrap_err().to_string();
        assert!(e.contains("needs more kernel entries"), "{e}");
    }
}
