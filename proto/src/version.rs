use std::cmp::Ordering;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
///
/// On the wire it is a map, replica → counter. In memory it is a vector
/// sorted by replica: every file has one, most have one or two counters, and
/// a map node would cost a few hundred bytes per file where this costs a few
/// dozen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector(Vec<(String, u64)>);

/// How far past the present (Unix seconds) a counter may be. Peers count
/// with the clock ([`VersionVector::bump_at`]), so an honest counter is
/// about now, plus one per edit made faster than one a second, plus a
/// clock set wrong; 2^31 s (68 years) leaves room for all of that. A
/// counter beyond it is refused wherever a version arrives from the
/// network: a member that set another peer's counter near `u64::MAX`
/// would leave it unable to make a newer version.
pub const MAX_COUNTER_AHEAD: u64 = 1 << 31;

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
        self.find(peer).map_or(0, |i| self.0[i].1)
    }

    fn find(&self, peer: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(peer))
    }

    /// Records a new change by `peer` on top of this version.
    pub fn bump(&mut self, peer: &str) {
        self.bump_at(peer, 0);
    }

    /// Records a new change by `peer` at `clock` (Unix seconds): its counter
    /// becomes `max(old + 1, clock)`. A counter at `u64::MAX` stays there
    /// (the version is then not newer): [`VersionVector::beyond`] keeps
    /// counters from the network far below that.
    pub fn bump_at(&mut self, peer: &str, clock: u64) {
        let i = self.find(peer).unwrap_or_else(|i| {
            self.0.insert(i, (peer.to_owned(), 0));
            i
        });
        let c = &mut self.0[i].1;
        *c = c.saturating_add(1).max(clock);
    }

    /// The least version that dominates or equals both.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()));
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                    Ordering::Less => a.next().cloned(),
                    Ordering::Greater => b.next().cloned(),
                    Ordering::Equal => {
                        let v = x.1.max(y.1);
                        b.next();
                        a.next().map(|(k, _)| (k.clone(), v))
                    }
                },
                (Some(_), None) => a.next().cloned(),
                (None, Some(_)) => b.next().cloned(),
                (None, None) => break,
            };
            out.extend(next);
        }
        VersionVector(out)
    }

    /// Compares two versions causally.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut ord = Ordering::Equal;
        let keys = self.0.iter().chain(&other.0).map(|(k, _)| k.as_str());
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

    /// The first counter above `limit`, if any: a version no honest peer
    /// can have made (see [`MAX_COUNTER_AHEAD`]).
    pub fn beyond(&self, limit: u64) -> Option<(&str, u64)> {
        self.iter().find(|&(_, n)| n > limit)
    }

    /// The counters, by peer name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counters;
        impl<'de> Visitor<'de> for Counters {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of replica to counter")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<VersionVector, A::Error> {
                // The size hint comes from the sender: cap what it may reserve.
                let mut v: Vec<(String, u64)> =
                    Vec::with_capacity(m.size_hint().unwrap_or(0).min(16));
                while let Some(pair) = m.next_entry()? {
                    v.push(pair);
                }
                v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(serde::de::Error::custom(format_args!(
                        "replica {:?} counted twice in a version vector",
                        w[0].0
                    )));
                }
                Ok(VersionVector(v))
            }
        }
        d.deserialize_map(Counters)
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
        let mut v: Vec<(String, u64)> = pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        v.sort();
        VersionVector(v)
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
    fn merge_walks_both_in_replica_order() {
        let a = vv(&[("a", 5), ("c", 1), ("e", 2)]);
        let b = vv(&[("b", 1), ("c", 3), ("d", 4)]);
        let m = a.merged(&b);
        assert_eq!(m.to_string(), "{a:5,b:1,c:3,d:4,e:2}");
        assert_eq!(m, b.merged(&a));
        assert_eq!(m.compare(&a), Causality::Dominates);
        assert_eq!(a.compare(&b), Causality::Concurrent);
    }

    #[test]
    fn wire_form_is_a_map_and_decoding_sorts_and_rejects_duplicates() {
        let v = vv(&[("b", 2), ("a", 1)]);
        let bytes = rmp_serde::to_vec(&v).unwrap();
        assert_eq!(bytes, b"\x82\xa1a\x01\xa1b\x02", "a map, in replica order");
        let unsorted: VersionVector = rmp_serde::from_slice(b"\x82\xa1b\x02\xa1a\x01").unwrap();
        assert_eq!(unsorted, v);
        assert_eq!(unsorted.get("a"), 1);
        let twice = rmp_serde::from_slice::<VersionVector>(b"\x82\xa1a\x01\xa1a\x02");
        assert!(twice.unwrap_err().to_string().contains("counted twice"));
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
