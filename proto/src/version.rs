use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A version vector: one counter per peer that ever changed the file.
///
/// A local change bumps the local peer's counter on top of everything it had
/// seen, so the new version dominates all of them whatever the wall clocks say.
///
/// Peers bump with [`VersionVector::bump_at`] and the current Unix time, as
/// Syncthing does: the counter becomes `max(old + 1, now)`. Dominance still
/// rests on the `+ 1` alone, but a replica whose own counters went back in
/// time (its index restored from a backup) still makes versions newer than
/// the ones the cluster saw from it since, instead of older ones that would
/// lose to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<String, u64>);

/// How two versions relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Same version.
    Equal,
    /// `self` has seen everything `other` has, and more.
    Dominates,
    /// `other` has seen everything `self` has, and more.
    DominatedBy,
    /// Each has seen something the other has not: a conflict.
    Concurrent,
}

impl VersionVector {
    /// The empty version (no change seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// This peer's counter.
    pub fn get(&self, peer: &str) -> u64 {
        self.0.get(peer).copied().unwrap_or(0)
    }

    /// Records a new change by `peer` on top of this version.
    pub fn bump(&mut self, peer: &str) {
        self.bump_at(peer, 0);
    }

    /// Records a new change by `peer` at `clock` (Unix seconds): its counter
    /// becomes `max(old + 1, clock)`.
    pub fn bump_at(&mut self, peer: &str, clock: u64) {
        let c = self.0.entry(peer.to_owned()).or_insert(0);
        *c = c.saturating_add(1).max(clock);
    }

    /// The least version that dominates or equals both.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.0.clone();
        for (k, v) in &other.0 {
            let e = out.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        VersionVector(out)
    }

    /// Compares two versions causally.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut ord = Ordering::Equal;
        let keys = self.0.keys().chain(other.0.keys());
        for k in keys {
            match (self.get(k).cmp(&other.get(k)), ord) {
                (Ordering::Equal, _) => {}
                (o, Ordering::Equal) => ord = o,
                (o, cur) if o != cur => return Causality::Concurrent,
                _ => {}
            }
        }
        match ord {
            Ordering::Equal => Causality::Equal,
            Ordering::Greater => Causality::Dominates,
            Ordering::Less => Causality::DominatedBy,
        }
    }

    /// The counters, by peer name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl std::fmt::Display for VersionVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}:{v}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        VersionVector(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn compare_cases() {
        use Causality::*;
        assert_eq!(vv(&[]).compare(&vv(&[])), Equal);
        assert_eq!(vv(&[("a", 1)]).compare(&vv(&[])), Dominates);
        assert_eq!(vv(&[]).compare(&vv(&[("a", 1)])), DominatedBy);
        assert_eq!(
            vv(&[("a", 2), ("b", 1)]).compare(&vv(&[("a", 1), ("b", 1)])),
            Dominates
        );
        assert_eq!(vv(&[("a", 1)]).compare(&vv(&[("b", 1)])), Concurrent);
        assert_eq!(
            vv(&[("a", 2), ("b", 1)]).compare(&vv(&[("a", 1), ("b", 2)])),
            Concurrent
        );
        assert_eq!(vv(&[("a", 1), ("b", 0)]).compare(&vv(&[("a", 1)])), Equal);
    }

    #[test]
    fn bump_dominates_and_merge_dominates_both() {
        let a = vv(&[("a", 1)]);
        let b = vv(&[("b", 3)]);
        let mut a2 = a.clone();
        a2.bump("a");
        assert_eq!(a2.compare(&a), Causality::Dominates);
        let m = a.merged(&b);
        assert_eq!(m.compare(&a), Causality::Dominates);
        assert_eq!(m.compare(&b), Causality::Dominates);
        assert_eq!(m.to_string(), "{a:1,b:3}");
    }

    #[test]
    fn a_stale_counter_bumped_by_the_clock_overtakes_newer_ones() {
        // The cluster saw a:1000 from this replica; its restored index says a:3.
        let seen = vv(&[("a", 1000)]);
        let mut restored = vv(&[("a", 3)]);
        restored.bump_at("a", 2000);
        assert_eq!(restored.compare(&seen), Causality::Dominates);
        // A clock behind the counter never stops it from growing.
        let mut v = vv(&[("a", 5000)]);
        v.bump_at("a", 2000);
        assert_eq!(v.get("a"), 5001);
        v.bump_at("a", u64::MAX);
        v.bump_at("a", u64::MAX);
        assert_eq!(v.get("a"), u64::MAX, "saturates");
    }
}
