//! The cluster index, without sockets or I/O: for every path the current
//! version (tombstones included), for every live peer what it holds, and the
//! queries and changes requests make of it. Every change that subscribers
//! must hear of appends a [`Notification`] with the next sequence number.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};
use zync_proto::{
    ClusterFile, Event, FileEntry, Hash, Notification, PeerInfo, RelPath, PAGE_BYTES,
};

use crate::LOGGED_PER_BATCH;

pub(crate) struct Peer {
    /// Its name, shared by every entry of `Index::held` that names it.
    pub(crate) id: Arc<str>,
    /// Its folder's device id; `None` for a peer a backup tracker copied
    /// from its primary, which does not publish it (so any device may
    /// register under the name).
    pub(crate) device: Option<u64>,
    pub(crate) endpoint: String,
    pub(crate) last_seen: Instant,
    /// What the peer holds at each path it reported: the content's hash, or
    /// `None` for a deletion. The full entries (versions, block lists) live
    /// once, in `Index::current`; a copy per peer would multiply the
    /// tracker's memory by the number of peers.
    pub(crate) files: HashMap<RelPath, Option<Hash>>,
}

/// The tracker's state, without sockets: what `handle` decides is testable alone.
pub(crate) struct Index {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) peers: BTreeMap<String, Peer>,
    /// Each path's current version, and who holds what there.
    pub(crate) current: BTreeMap<RelPath, Slot>,
    /// Paths whose current entry has this content (not tombstones), for
    /// `Find`. Kept in step with `current`, its only writer being `absorb`.
    pub(crate) by_content: HashMap<Hash, Paths>,
    /// Current tombstones, soonest to collect first: when each may be
    /// forgotten, and which making of its slot it is (`Slot::made`; a path
    /// deleted again since has a later entry).
    tombstones: BinaryHeap<Reverse<(Instant, u64, RelPath)>>,
    /// Counts `set_current` calls, to tell one making of a slot from the next.
    made: u64,
    /// How long a tombstone is kept at least (`Config::forget_deleted_after`).
    pub(crate) forget_after: Duration,
    /// Most bytes of entries in one `List` page (`Config::page_bytes`).
    pub(crate) page_bytes: usize,
}

/// A path's current version (tombstones included), and who holds what
/// there.
pub(crate) struct Slot {
    pub(crate) entry: FileEntry,
    /// When `entry` became current, as `Index::made` counts.
    made: u64,
    /// Every live peer's `files` turned around for this path, so a holder
    /// list costs what the path has, not a walk over every peer. Written
    /// only by `hold` and `forget_peer`, which keep both sides in step. A
    /// short list sorted by name, with the name shared and no spare room:
    /// most paths have a few holders (a map per path cost some 750 bytes
    /// for one, a second map keyed by path 320; this, 100).
    held: Vec<Holding>,
}

/// The paths whose current version has one content. Almost always one:
/// a set (a B-tree node of some 300 bytes) only for content several paths
/// share.
pub(crate) enum Paths {
    One(RelPath),
    Many(BTreeSet<RelPath>),
}

impl Paths {
    fn insert(&mut self, path: RelPath) {
        match self {
            Paths::One(p) if *p == path => {}
            Paths::One(p) => {
                let set = BTreeSet::from([p.clone(), path]);
                *self = Paths::Many(set);
            }
            Paths::Many(set) => {
                set.insert(path);
            }
        }
    }

    /// Removes `path`; returns whether none is left.
    fn remove(&mut self, path: &RelPath) -> bool {
        match self {
            Paths::One(p) => p == path,
            Paths::Many(set) => {
                set.remove(path);
                if set.len() == 1 {
                    if let Some(last) = set.pop_first() {
                        *self = Paths::One(last);
                    }
                }
                matches!(self, Paths::Many(set) if set.is_empty())
            }
        }
    }

    /// In path order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RelPath> {
        let (one, many) = match self {
            Paths::One(p) => (Some(p), None),
            Paths::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// A peer holding a path, and what (`None`: a deletion).
type Holding = (Arc<str>, Option<Hash>);

impl Index {
    /// An empty index for tracker epoch `epoch`.
    pub(crate) fn new(epoch: u64) -> Index {
        Index {
            epoch,
            seq: 0,
            peers: BTreeMap::new(),
            current: BTreeMap::new(),
            by_content: HashMap::new(),
            tombstones: BinaryHeap::new(),
            made: 0,
            forget_after: crate::DEFAULT_FORGET_DELETED_AFTER,
            page_bytes: PAGE_BYTES,
        }
    }

    /// The same index, listed in pages of at most `bytes` of entries (at
    /// most [`PAGE_BYTES`], at least one entry).
    pub(crate) fn paged_by(mut self, bytes: usize) -> Index {
        self.page_bytes = bytes.min(PAGE_BYTES);
        self
    }

    /// The same index, forgetting a deletion after `age` (not the default).
    pub(crate) fn forgetting_after(mut self, age: Duration) -> Index {
        self.forget_after = age;
        self
    }

    /// Records that peer `name` (registered) holds `what` at `path`, which
    /// has a current version.
    pub(crate) fn hold(&mut self, name: &str, path: &RelPath, what: Option<Hash>) {
        let (Some(p), Some(slot)) = (self.peers.get_mut(name), self.current.get_mut(path)) else {
            return;
        };
        p.files.insert(path.clone(), what);
        let id = p.id.clone();
        let by = &mut slot.held;
        match by.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) => by[i].1 = what,
            Err(i) => {
                // Most paths have one or two holders: no room for four.
                by.reserve_exact(1);
                by.insert(i, (id, what));
            }
        }
    }

    /// Adds a peer that holds nothing yet, replacing one of the same name
    /// (and what it held).
    pub(crate) fn add_peer(&mut self, name: &str, peer: Peer) {
        self.forget_peer(name);
        self.peers.insert(name.to_owned(), peer);
    }

    /// Removes peer `name` and everything it held; returns it.
    pub(crate) fn forget_peer(&mut self, name: &str) -> Option<Peer> {
        let p = self.peers.remove(name)?;
        for path in p.files.keys() {
            if let Some(slot) = self.current.get_mut(path) {
                slot.held.retain(|(n, _)| **n != *name);
            }
        }
        Some(p)
    }

    /// Whether `held` is exactly every live peer's `files` turned around.
    #[cfg(test)]
    pub(crate) fn held_in_step(&self) -> bool {
        let mut turned: HashMap<&RelPath, Vec<Holding>> = HashMap::new();
        for (name, p) in &self.peers {
            for (path, what) in &p.files {
                turned
                    .entry(path)
                    .or_default()
                    .push((name.as_str().into(), *what));
            }
        }
        // `peers` is walked in name order, so each list is sorted already.
        self.current
            .iter()
            .all(|(path, slot)| turned.remove(path).unwrap_or_default() == slot.held)
            && turned.is_empty()
    }

    /// Live peers holding `path` with content `sha256`, by name.
    fn holding(&self, path: &RelPath, sha256: Hash) -> impl Iterator<Item = &str> {
        self.current
            .get(path)
            .into_iter()
            .flat_map(move |slot| holding(slot, sha256))
    }

    pub(crate) fn holders(&self, entry: &FileEntry) -> Vec<String> {
        if entry.deleted {
            return Vec::new();
        }
        self.holding(&entry.path, entry.sha256)
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn peer_info(name: &str, p: &Peer, now: Instant) -> PeerInfo {
        PeerInfo {
            name: name.to_owned(),
            endpoint: p.endpoint.clone(),
            last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
        }
    }

    pub(crate) fn next(&mut self, event: Event) -> Notification {
        self.seq += 1;
        Notification {
            epoch: self.epoch,
            seq: self.seq,
            event,
        }
    }

    /// Records entries a peer now holds; returns the notifications to publish.
    pub(crate) fn absorb(
        &mut self,
        name: &str,
        files: Vec<FileEntry>,
        now: Instant,
        out: &mut Vec<Notification>,
    ) {
        let mut announced = 0;
        for e in files {
            let what = (!e.deleted).then_some(e.sha256);
            let announce = match self.current.get(&e.path).map(|s| &s.entry) {
                None => true,
                Some(cur) if e.supersedes(cur) => true,
                Some(cur) if cur.version == e.version => false,
                // The peer holds a version that loses to the current one:
                // re-announce the current one so the peer resolves.
                Some(_) => {
                    self.hold(name, &e.path, what);
                    let file = self.cluster_file(&e.path);
                    if let Some(file) = file {
                        let n = self.next(Event::FileChanged { file });
                        out.push(n);
                    }
                    continue;
                }
            };
            if announce {
                announced += 1;
                if announced <= LOGGED_PER_BATCH {
                    info!(event = %"index_changed", path = %e.path, peer = %name, version = %e.version,
                          deleted = e.deleted, "new current version");
                } else {
                    debug!(event = %"index_changed", path = %e.path, peer = %name, version = %e.version,
                           deleted = e.deleted, "new current version");
                }
                self.set_current(e.clone(), now);
                self.hold(name, &e.path, what);
                let holders = self.holders(&e);
                let n = self.next(Event::FileChanged {
                    file: ClusterFile { entry: e, holders },
                });
                out.push(n);
            } else {
                self.hold(name, &e.path, what);
            }
        }
        if announced > LOGGED_PER_BATCH {
            info!(peer = %name, more = announced - LOGGED_PER_BATCH,
                  "further new versions in this batch logged at debug level");
        }
    }

    /// Makes `e` its path's current version (at `now`), keeping
    /// `by_content` and the tombstones to collect in step.
    pub(crate) fn set_current(&mut self, e: FileEntry, now: Instant) {
        let path = e.path.clone();
        let new = (!e.deleted).then_some(e.sha256);
        self.made += 1;
        let made = self.made;
        if e.deleted {
            let due = now.checked_add(self.forget_after).unwrap_or(now);
            self.tombstones.push(Reverse((due, made, path.clone())));
        }
        let old = match self.current.get_mut(&path) {
            Some(slot) => {
                slot.made = made;
                Some(std::mem::replace(&mut slot.entry, e))
            }
            None => {
                let slot = Slot {
                    entry: e,
                    made,
                    held: Vec::new(),
                };
                self.current.insert(path.clone(), slot);
                None
            }
        };
        if let Some(old) = old {
            self.unindex_content(&old.sha256, &old.path);
        }
        if let Some(sha256) = new {
            match self.by_content.entry(sha256) {
                Entry::Occupied(mut o) => o.get_mut().insert(path),
                Entry::Vacant(v) => {
                    v.insert(Paths::One(path));
                }
            }
        }
    }

    pub(crate) fn cluster_file(&self, path: &RelPath) -> Option<ClusterFile> {
        self.current.get(path).map(cluster_file)
    }

    /// Refreshes a registered peer's liveness; false if it is not registered.
    pub(crate) fn touch(&mut self, name: &str, device: u64, now: Instant) -> bool {
        match self.peers.get_mut(name) {
            Some(p) if p.device == Some(device) => {
                p.last_seen = now;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn remove_peer(&mut self, name: &str, why: &str, out: &mut Vec<Notification>) {
        if self.forget_peer(name).is_some() {
            info!(event = %"peer_left", peer = %name, reason = %why, "peer left");
            let n = self.next(Event::PeerLeft {
                name: name.to_owned(),
            });
            out.push(n);
        }
    }

    /// The current entries after `after`, in path order, up to
    /// `page_bytes` (at least one), and the last path if more follow.
    pub(crate) fn page(&self, after: Option<&RelPath>) -> (Vec<ClusterFile>, Option<RelPath>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, Excluded);
        let mut files: Vec<ClusterFile> = Vec::new();
        let mut bytes = 0;
        for slot in self.current.range((start, Unbounded)).map(|(_, s)| s) {
            let size = slot.entry.size_hint();
            if let Some(last) = files.last().filter(|_| bytes + size > self.page_bytes) {
                let next = last.entry.path.clone();
                return (files, Some(next));
            }
            bytes += size;
            files.push(cluster_file(slot));
        }
        (files, None)
    }

    /// Live peers holding `path` with content `sha256`.
    pub(crate) fn locate(&self, path: &RelPath, sha256: Hash, now: Instant) -> Vec<PeerInfo> {
        self.holding(path, sha256)
            .filter_map(|n| Some(Self::peer_info(n, self.peers.get(n)?, now)))
            .collect()
    }

    pub(crate) fn peer_list(&self, now: Instant) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(n, p)| Self::peer_info(n, p, now))
            .collect()
    }

    /// Forgets the tombstones due at `now` that every live peer reporting
    /// their path has applied; one a peer still holds content for waits
    /// another heartbeat (`retry`) and is asked again.
    pub(crate) fn collect(&mut self, now: Instant, retry: Duration, out: &mut Vec<Notification>) {
        let mut later = Vec::new();
        while let Some(Reverse((due, made, _))) = self.tombstones.peek() {
            if *due > now {
                break;
            }
            let made = *made;
            let Some(Reverse((_, _, path))) = self.tombstones.pop() else {
                break;
            };
            let Some(slot) = self.current.get(&path) else {
                continue;
            };
            if slot.made != made || !slot.entry.deleted {
                continue; // changed since: that change has its own entry
            }
            if slot.held.iter().any(|(_, what)| what.is_some()) {
                later.push(Reverse((now + retry, made, path)));
                continue;
            }
            if let Some(entry) = self.forget_path(&path) {
                info!(event = %"forgotten", path = %path, version = %entry.version,
                      "deletion seen by every live holder: tombstone forgotten");
                let n = self.next(Event::Forgotten { entry });
                out.push(n);
            }
        }
        self.tombstones.extend(later);
    }

    /// `path` no longer has content `sha256`.
    fn unindex_content(&mut self, sha256: &Hash, path: &RelPath) {
        if let Entry::Occupied(mut o) = self.by_content.entry(*sha256) {
            if o.get_mut().remove(path) {
                o.remove();
            }
        }
    }

    /// Removes `path`'s slot and every peer's record of it; returns its entry.
    pub(crate) fn forget_path(&mut self, path: &RelPath) -> Option<FileEntry> {
        let slot = self.current.remove(path)?;
        for (name, _) in &slot.held {
            if let Some(p) = self.peers.get_mut(&**name) {
                p.files.remove(path);
            }
        }
        self.unindex_content(&slot.entry.sha256, path);
        Some(slot.entry)
    }

    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration, out: &mut Vec<Notification>) {
        let dead: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for name in dead {
            self.remove_peer(&name, "heartbeat timeout", out);
        }
    }
}

/// The peers holding content `sha256` in `slot`, by name.
fn holding(slot: &Slot, sha256: Hash) -> impl Iterator<Item = &str> {
    slot.held
        .iter()
        .filter(move |(_, what)| *what == Some(sha256))
        .map(|(name, _)| &**name)
}

/// `slot`'s current version and its holders.
fn cluster_file(slot: &Slot) -> ClusterFile {
    let holders = match slot.entry.deleted {
        true => Vec::new(),
        false => holding(slot, slot.entry.sha256)
            .map(str::to_owned)
            .collect(),
    };
    ClusterFile {
        entry: slot.entry.clone(),
        holders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_one_content_grow_into_a_set_and_shrink_back() {
        let p = |s: &str| RelPath::new(s).unwrap();
        let mut paths = Paths::One(p("b"));
        paths.insert(p("b"));
        assert!(matches!(paths, Paths::One(_)), "the same path once");
        paths.insert(p("a"));
        paths.insert(p("c"));
        assert_eq!(
            paths.iter().map(RelPath::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(!paths.remove(&p("a")));
        assert!(!paths.remove(&p("c")));
        assert!(matches!(&paths, Paths::One(last) if last.as_str() == "b"));
        assert!(!paths.remove(&p("x")), "another path leaves it as it is");
        assert!(paths.remove(&p("b")), "none left");
    }
}
