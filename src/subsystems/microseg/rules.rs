//! The policy map with stable rule slots, so that a rule's hit counter
//! survives changes of other rules.
//!
//! Every rule that decides some policy entry has a slot: its id is kept in
//! `rule_names` under the slot, its hits in the per-CPU `rule_hits`, and the
//! policy entries it decides carry the slot (+ 1). A full pass keeps the
//! slots of rules that stay, gives new rules slots no entry refers to yet
//! (their counters created zeroed before any entry points at them), and
//! frees the slots of vanished rules only after their entries are gone.
//!
//! Pairs whose decision does not depend on L4 (the trie holds only their /32
//! entry) are copied into the hash `pair_verdicts`, which the data plane asks
//! first. Its entries that the new policy no longer has are deleted before
//! the trie changes (the old trie then answers as they did), its new ones
//! written after: the hash never answers other than the trie beside it.
//!
//! The data plane caches verdicts per flow (`flow_cache`) under the policy
//! generation it read before asking the maps. Every write here ends by
//! raising the generation, whether or not it changed an entry: a pass killed
//! after writing the maps but before raising it leaves maps that the next
//! pass finds already equal, and that pass must still retire the verdicts
//! cached before. Deletions raise it when they delete something.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use crate::kernel::maps::{Entries, MapContent, Ownership};
use crate::kernel::state::Loaded;

use super::maps::{PairKey, PolicyKey, PolicyValue, RuleName, PAIR_VERDICTS, POLICY, POLICY_GEN, RULE_HITS, RULE_NAMES};
use super::resolve;

pub struct RulePolicy {
    /// Entries whose `rule` is an index into `rules`, plus one.
    entries: BTreeMap<PolicyKey, PolicyValue>,
    /// The names of the rules that decide some entry.
    wanted: BTreeSet<RuleName>,
    rules: Vec<RuleName>,
}

impl RulePolicy {
    pub fn boxed(policy: resolve::Policy) -> Box<dyn MapContent> {
        let rules: Vec<RuleName> = policy.rules.iter().map(|id| RuleName::of(id)).collect();
        let wanted = policy.entries.values().filter(|v| v.rule > 0).map(|v| rules[(v.rule - 1) as usize]).collect();
        Box::new(RulePolicy { entries: policy.entries, wanted, rules })
    }
}

/// The pairs of `entries` decided without L4 (only their /32 entry), at
/// most as many as `pair_verdicts` holds (the others stay with the trie).
fn pure_pairs(entries: &BTreeMap<PolicyKey, PolicyValue>, loaded: &Loaded) -> Result<BTreeMap<PairKey, PolicyValue>> {
    let (_, info) = loaded.map_raw(PAIR_VERDICTS.name)?;
    let mut with_l4 = BTreeSet::new();
    for k in entries.keys().filter(|k| k.prefixlen > resolve::PREFIX_PAIR) {
        with_l4.insert((k.src, k.dst));
    }
    Ok(entries
        .iter()
        .filter(|(k, _)| k.prefixlen == resolve::PREFIX_PAIR && !with_l4.contains(&(k.src, k.dst)))
        .map(|(k, v)| (PairKey { src: k.src, dst: k.dst }, *v))
        .take(info.max_entries as usize)
        .collect())
}

/// Raises the policy generation after the policy maps changed: verdicts the
/// data plane cached before are not used any more (0 is skipped: it means
/// "nothing cached").
pub fn policy_changed(loaded: &Loaded) -> Result<()> {
    let gen = loaded.map(&POLICY_GEN)?;
    let next = match gen.get(&0)?.unwrap_or(0).wrapping_add(1) {
        0 => 1,
        n => n,
    };
    gen.set(&0, &next)
}

/// The slot of every named rule in the kernel.
pub fn slots(loaded: &Loaded) -> Result<BTreeMap<u32, RuleName>> {
    loaded.map(&RULE_NAMES)?.entries()
}

impl MapContent for RulePolicy {
    fn name(&self) -> &'static str {
        POLICY.name
    }
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn write(&self, loaded: &Loaded) -> Result<usize> {
        let names = loaded.map(&RULE_NAMES)?;
        let hits = loaded.map(&RULE_HITS)?;
        let (_, info) = loaded.map_raw(RULE_NAMES.name)?;
        if self.wanted.len() > info.max_entries as usize {
            bail!("{} rules decide the policy, the kernel's rule slots hold {}", self.wanted.len(), info.max_entries);
        }
        let mut current = names.entries()?;
        let mut slot_of: BTreeMap<RuleName, u32> = current.iter().map(|(slot, name)| (*name, *slot)).collect();
        let mut next = 0u32;
        let mut written = 0;
        for name in &self.wanted {
            if slot_of.contains_key(name) {
                continue;
            }
            while current.contains_key(&next) {
                next += 1;
            }
            if next >= info.max_entries {
                // Old and new rules together do not fit: free the slots of the
                // old ones now (until their entries are replaced, their packets
                // may count for the rules that take the slots), then go on.
                for (slot, old) in current.iter().filter(|(_, n)| !self.wanted.contains(n)) {
                    hits.remove(slot)?;
                    names.remove(slot)?;
                    slot_of.remove(old);
                }
                current = names.entries()?;
                next = 0;
                while current.contains_key(&next) {
                    next += 1;
                }
            }
            // A leftover counter of a crashed pass would start the new rule above zero.
            hits.remove(&next)?;
            hits.create_zeroed_per_cpu(&next)?;
            names.set(&next, name)?;
            slot_of.insert(*name, next);
            next += 1;
            written += 1;
        }
        let translated: BTreeMap<PolicyKey, PolicyValue> = self
            .entries
            .iter()
            .map(|(k, v)| {
                let rule = if v.rule > 0 { slot_of[&self.rules[(v.rule - 1) as usize]] + 1 } else { 0 };
                (*k, PolicyValue { rule, ..*v })
            })
            .collect();
        let pairs = pure_pairs(&translated, loaded)?;
        let pair_map = loaded.map(&PAIR_VERDICTS)?;
        // A pair whose entry the new policy drops or changes leaves the hash
        // now: until the trie below is written, the old trie answers for it.
        let stale: Vec<PairKey> =
            pair_map.entries()?.into_iter().filter(|(k, v)| pairs.get(k) != Some(v)).map(|(k, _)| k).collect();
        pair_map.remove_all(&stale)?;
        let (fd, info) = loaded.map_raw(POLICY.name)?;
        let policy = Entries { def: &POLICY, entries: translated, ownership: Ownership::Whole, vanished: None };
        written += policy.write_to(fd, info)?;
        let (fd, info) = loaded.map_raw(PAIR_VERDICTS.name)?;
        let pairs = Entries { def: &PAIR_VERDICTS, entries: pairs, ownership: Ownership::Whole, vanished: None };
        let changed = written + stale.len() + pairs.write_to(fd, info)?;
        crate::kernel::testhook::crash_point("policy-before-generation");
        policy_changed(loaded)?;
        Ok(changed)
    }

    /// Stale entries first, then the slots no entry refers to any more.
    /// (Stale pair entries went before the trie changed.)
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize> {
        let deleted = loaded.map(&POLICY)?.delete_unless(|k| self.entries.contains_key(k))?;
        let names = loaded.map(&RULE_NAMES)?;
        let hits = loaded.map(&RULE_HITS)?;
        let mut freed = 0;
        for (slot, name) in names.entries()? {
            if !self.wanted.contains(&name) {
                hits.remove(&slot)?;
                names.remove(&slot)?;
                freed += 1;
            }
        }
        if deleted + freed > 0 {
            policy_changed(loaded)?;
        }
        Ok(deleted + freed)
    }
}
