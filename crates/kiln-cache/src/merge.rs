//! Merge on export: what a cache ref holds after one more build wrote to it.
//!
//! Pure and deterministic: the registry side (`registry.rs`) reads the current records, calls
//! [`merge`], pushes the result, and starts over if someone else wrote in between.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use kiln_oci::Digest;

use crate::format::{descendants_of, Entry};

/// Limits applied on every export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneRules {
    /// Records whose last use is older than this are dropped. `None`: never.
    pub ttl: Option<Duration>,
    /// Total bytes of distinct layers kept. `None`: no limit.
    pub max_size: Option<u64>,
}

/// The merged record set and what pruning removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Sorted by key.
    pub entries: Vec<Entry>,
    /// Dropped for age (including records built on top of an aged-out record).
    pub pruned_ttl: usize,
    /// Dropped to fit `max_size`.
    pub pruned_size: usize,
    /// Bytes of distinct layers the kept records reference.
    pub layer_bytes: u64,
}

/// Merges `incoming` (this build's records) into `existing` (what the ref held), then prunes.
///
/// * Same key: the entry used last wins (on a tie, `incoming`), so a re-export refreshes a record's
///   age. Records of other keys, which is to say other branches, stages and platforms, are kept.
/// * TTL: records last used more than `ttl` before `now` go, and so does every record built on top of
///   one that went (its image would miss a layer).
/// * Size: records are admitted newest first, each together with its ancestors, while the distinct
///   layer bytes fit `max_size`; a record whose chain does not fit is dropped. The result is
///   therefore closed under `parent`: no kept record has a dropped ancestor.
pub fn merge(existing: Vec<Entry>, incoming: Vec<Entry>, rules: &PruneRules, now: u64) -> Merged {
    let mut by_key: BTreeMap<Digest, Entry> = BTreeMap::new();
    for e in existing {
        insert_newer(&mut by_key, e);
    }
    for e in incoming {
        insert_newer(&mut by_key, e);
    }
    let mut entries: Vec<Entry> = by_key.into_values().collect();

    let mut pruned_ttl = 0;
    if let Some(ttl) = rules.ttl {
        let cutoff = now.saturating_sub(ttl.as_secs());
        let aged: BTreeSet<Digest> = entries.iter().filter(|e| e.last_used < cutoff).map(|e| e.key().clone()).collect();
        if !aged.is_empty() {
            let orphans = descendants_of(&entries, &aged);
            let before = entries.len();
            entries.retain(|e| !aged.contains(e.key()) && !orphans.contains(e.key()));
            pruned_ttl = before - entries.len();
        }
    }

    let mut pruned_size = 0;
    if let Some(budget) = rules.max_size {
        let (kept, dropped) = fit_budget(entries, budget);
        entries = kept;
        pruned_size = dropped;
    }

    let layer_bytes = distinct_layer_bytes(&entries);
    Merged { entries, pruned_ttl, pruned_size, layer_bytes }
}

fn insert_newer(map: &mut BTreeMap<Digest, Entry>, e: Entry) {
    match map.get(e.key()) {
        Some(old) if old.last_used > e.last_used => {}
        _ => {
            map.insert(e.key().clone(), e);
        }
    }
}

fn distinct_layer_bytes(entries: &[Entry]) -> u64 {
    let mut seen: HashSet<&Digest> = HashSet::new();
    entries.iter().filter_map(|e| e.record.layer.as_ref()).filter(|l| seen.insert(&l.descriptor.digest)).map(|l| l.descriptor.size).sum()
}

/// Greedy newest-first admission of whole chains. Returns the kept entries (sorted by key) and the
/// number dropped.
fn fit_budget(entries: Vec<Entry>, budget: u64) -> (Vec<Entry>, usize) {
    let total = entries.len();
    let idx: HashMap<Digest, usize> = entries.iter().enumerate().map(|(i, e)| (e.key().clone(), i)).collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    // Newest first; ties broken by key so the outcome never depends on input order.
    order.sort_by(|&a, &b| entries[b].last_used.cmp(&entries[a].last_used).then_with(|| entries[a].key().cmp(entries[b].key())));
    let mut kept: Vec<bool> = vec![false; entries.len()];
    let mut refused: Vec<bool> = vec![false; entries.len()];
    let mut layers: HashSet<Digest> = HashSet::new();
    let mut used: u64 = 0;
    for &i in &order {
        if kept[i] || refused[i] {
            continue;
        }
        // The chain from i down to its first already-kept ancestor (or the bottom).
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = Some(i);
        let mut blocked = false;
        while let Some(c) = cur {
            if kept[c] || !seen.insert(c) {
                break;
            }
            if refused[c] {
                blocked = true;
                break;
            }
            chain.push(c);
            cur = entries[c].record.parent.as_ref().and_then(|p| idx.get(p).copied());
        }
        let mut new_layers: HashSet<&Digest> = HashSet::new();
        let mut extra: u64 = 0;
        for &c in &chain {
            if let Some(l) = &entries[c].record.layer {
                if !layers.contains(&l.descriptor.digest) && new_layers.insert(&l.descriptor.digest) {
                    extra = extra.saturating_add(l.descriptor.size);
                }
            }
        }
        if blocked || used.saturating_add(extra) > budget {
            // Only the record itself is refused: an ancestor may still fit on its own or under
            // another, smaller descendant.
            refused[i] = true;
            continue;
        }
        used += extra;
        for &c in &chain {
            kept[c] = true;
            if let Some(l) = &entries[c].record.layer {
                layers.insert(l.descriptor.digest.clone());
            }
        }
    }
    let out: Vec<Entry> = entries.into_iter().zip(kept).filter(|(_, k)| *k).map(|(e, _)| e).collect();
    let dropped = total - out.len();
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{key, rec};

    fn entry(name: &str, parent: Option<&str>, size: u64, used: u64) -> Entry {
        Entry::exported(rec(name, parent, size, used), used)
    }

    fn names(m: &Merged) -> Vec<String> {
        let mut v: Vec<String> = m.entries.iter().map(|e| e.record.instruction.trim_start_matches("RUN ").to_string()).collect();
        v.sort();
        v
    }

    const DAY: u64 = 86400;
    const NOW: u64 = 1_000 * DAY;

    #[test]
    fn union_of_branches_and_platforms_newer_wins() {
        let existing = vec![entry("main-a", None, 10, NOW - DAY), entry("shared", None, 5, NOW - 2 * DAY)];
        let mut arm = entry("arm-a", None, 7, NOW);
        arm.platform = Some("linux/arm64".into());
        let incoming = vec![entry("feat-a", None, 10, NOW), entry("shared", None, 5, NOW), arm];
        let m = merge(existing, incoming, &PruneRules::default(), NOW);
        assert_eq!(names(&m), ["arm-a", "feat-a", "main-a", "shared"]);
        let shared = m.entries.iter().find(|e| e.key() == &key("shared")).unwrap();
        assert_eq!(shared.last_used, NOW, "the re-export refreshed the record");
        assert_eq!(m.layer_bytes, 32);
        assert_eq!((m.pruned_ttl, m.pruned_size), (0, 0));
    }

    #[test]
    fn an_older_incoming_copy_does_not_replace_a_newer_one() {
        let existing = vec![entry("a", None, 10, NOW)];
        let mut old = entry("a", None, 10, NOW - DAY);
        old.record.instruction = "RUN stale".into();
        let m = merge(existing, vec![old], &PruneRules::default(), NOW);
        assert_eq!(m.entries[0].record.instruction, "RUN a");
    }

    #[test]
    fn ttl_drops_old_records_and_what_is_built_on_them() {
        let existing = vec![
            entry("old-base", None, 10, NOW - 20 * DAY),
            // Used recently, but its base aged out: useless without the base layer.
            entry("child", Some("old-base"), 10, NOW - DAY),
            entry("grandchild", Some("child"), 0, NOW - DAY),
            entry("fresh", None, 10, NOW - 13 * DAY),
        ];
        let rules = PruneRules { ttl: Some(Duration::from_secs(14 * DAY)), max_size: None };
        let m = merge(existing, vec![entry("new", Some("fresh"), 1, NOW)], &rules, NOW);
        assert_eq!(names(&m), ["fresh", "new"]);
        assert_eq!(m.pruned_ttl, 3);
        let keep_all = merge(vec![entry("x", None, 1, 0)], vec![], &PruneRules::default(), NOW);
        assert_eq!(keep_all.entries.len(), 1, "no ttl: nothing ages out");
    }

    #[test]
    fn max_size_keeps_newest_chains_whole() {
        let existing = vec![
            entry("old1", None, 40, NOW - 10 * DAY),
            entry("old2", Some("old1"), 40, NOW - 9 * DAY),
            entry("base", None, 30, NOW - 5 * DAY),
        ];
        let incoming = vec![entry("top", Some("base"), 30, NOW), entry("cfg", Some("top"), 0, NOW)];
        let rules = PruneRules { ttl: None, max_size: Some(100) };
        let m = merge(existing, incoming, &rules, NOW);
        // top+cfg pull in base (60 bytes); old2 would need old1 (80 more): refused; old1 alone (40) fits.
        assert_eq!(names(&m), ["base", "cfg", "old1", "top"]);
        assert_eq!(m.pruned_size, 1);
        assert_eq!(m.layer_bytes, 100);
        for e in &m.entries {
            if let Some(p) = &e.record.parent {
                assert!(m.entries.iter().any(|x| x.key() == p), "kept {:?} without its parent", e.record.instruction);
            }
        }
    }

    #[test]
    fn max_size_counts_shared_layers_once_and_is_order_independent() {
        let a = entry("a", None, 50, NOW);
        let mut b = entry("b", None, 50, NOW - 1);
        // Same layer blob under two keys (e.g. the same RUN on two branches with different args).
        b.record.layer = a.record.layer.clone();
        let c = entry("c", None, 60, NOW - 2);
        let rules = PruneRules { ttl: None, max_size: Some(100) };
        let m1 = merge(vec![a.clone(), b.clone(), c.clone()], vec![], &rules, NOW);
        let m2 = merge(vec![c, b], vec![a], &rules, NOW);
        assert_eq!(names(&m1), ["a", "b"]);
        assert_eq!(m1, m2);
        assert_eq!(m1.layer_bytes, 50);
        let tiny = merge(m1.entries.clone(), vec![], &PruneRules { ttl: None, max_size: Some(10) }, NOW);
        assert!(tiny.entries.is_empty());
        assert_eq!(tiny.pruned_size, 2);
    }
}
