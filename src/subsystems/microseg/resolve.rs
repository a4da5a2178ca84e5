//! Resolution (SPEC section 3): the group forest and the rules flattened into
//! one exact `(src_mark, dst_mark) -> verdict` table, so that the data plane
//! needs a single hash lookup and no hierarchy.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};

use crate::config::{Mark, MicrosegConfig};

/// The unstamped group: traffic that did not come from an assigned NIC.
pub const UNSTAMPED: Mark = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Deny,
    Allow,
}

/// The flattened policy, ordered for deterministic output and diffing.
pub type PairTable = BTreeMap<(Mark, Mark), Verdict>;

/// A candidate for one pair: who decides, and how specifically.
#[derive(Clone, Copy)]
struct Candidate {
    dst_distance: u32,
    src_distance: u32,
    verdict: Verdict,
}

/// Upper bound on resolution work (subtree walks plus pair candidates), so that
/// a hostile config (thousands of overlapping rules on deep trees) is refused
/// in bounded time and memory instead of grinding through billions of steps.
/// Sixteen times the largest rule map leaves legitimate policies far below it.
pub const WORK_PER_CAPACITY: usize = 16;

/// Flattens `cfg` into a pair table of at most `capacity` entries.
///
/// For every pair covered by several rules the most specific wins: smallest
/// destination distance, then smallest source distance; an exact tie with
/// different verdicts is a deny. Fails, naming the rule that crossed the
/// line, when the policy needs more pairs than `capacity` or more work than
/// `WORK_PER_CAPACITY * capacity` steps.
pub fn resolve(cfg: &MicrosegConfig, capacity: usize) -> Result<PairTable> {
    let tree = Forest::new(cfg);
    let budget = capacity.saturating_mul(WORK_PER_CAPACITY).max(1 << 16);
    let mut work = 0usize;
    let mut best: HashMap<(Mark, Mark), Candidate> = HashMap::new();

    for rule in cfg.rules.values() {
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
        let verdict = if rule.allow { Verdict::Allow } else { Verdict::Deny };
        for &(dst, dst_distance) in &dsts {
            for &(src, src_distance) in &srcs {
                let new = Candidate { dst_distance, src_distance, verdict };
                match best.get_mut(&(src, dst)) {
                    None => {
                        if best.len() == capacity {
                            bail!(
                                "microseg rule '{}': the policy expands to more (src, dst) pairs \
                                 than the kernel rule map holds ({capacity})",
                                rule.id
                            );
                        }
                        best.insert((src, dst), new);
                    }
                    Some(old) => *old = more_specific(*old, new),
                }
            }
        }
    }
    Ok(best.into_iter().map(|(k, c)| (k, c.verdict)).collect())
}

fn more_specific(a: Candidate, b: Candidate) -> Candidate {
    let ka = (a.dst_distance, a.src_distance);
    let kb = (b.dst_distance, b.src_distance);
    match ka.cmp(&kb) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal if a.verdict == b.verdict => a,
        // Only a malformed config has two rules for the same pair at the same
        // specificity with different verdicts: deny is the safe reading.
        std::cmp::Ordering::Equal => Candidate { verdict: Verdict::Deny, ..a },
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

    struct Builder(MicrosegConfig);

    impl Builder {
        fn new() -> Self {
            Builder(MicrosegConfig::default())
        }
        fn group(mut self, id: &str, mark: Mark, parent: Option<&str>) -> Self {
            let g = Group { id: id.into(), mark, parent: parent.map(Into::into) };
            self.0.groups.insert(id.into(), g);
            self
        }
        fn rule(mut self, id: &str, src: Option<&str>, dst: &str, allow: bool) -> Self {
            let r = Rule { id: id.into(), src: src.map(Into::into), dst: dst.into(), allow };
            self.0.rules.insert(id.into(), r);
            self
        }
        fn resolve(self) -> PairTable {
            crate::config::validate(&self.0).unwrap();
            resolve(&self.0, 1 << 20).unwrap()
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
        assert_eq!(resolve(&b.0, 2).unwrap().len(), 2);
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
        assert_eq!(resolve(&b.0, 1 << 17).unwrap().len(), 301 * 301);
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
        assert_eq!(resolve(&b.0, 301 * 301).unwrap().len(), 301 * 301);
    }
}
