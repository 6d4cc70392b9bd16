//! The cluster index, without sockets or I/O: for every path the current
//! version (tombstones included), for every live peer what it holds, and the
//! queries and changes requests make of it. Every change that subscribers
//! must hear of appends a [`Notification`] with the next sequence number.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use tracing::{debug, error, info};
use zync_proto::{
    ClusterFile, Event, Failure, FileEntry, Hash, Notification, PackedEntry, PeerInfo, RelPath,
    Transfer, MAX_TRANSFERS, PAGE_BYTES,
};

use crate::LOGGED_PER_BATCH;

pub(crate) struct Peer {
    /// Its number, by which holder lists name it (`Index::names` maps it
    /// back); given by `Index::add_peer`, and free again once it is gone.
    num: u32,
    /// Its folder's device id; `None` for a peer a backup tracker copied
    /// from its primary, which does not publish it (so any device may
    /// register under the name).
    pub(crate) device: Option<u64>,
    pub(crate) endpoint: String,
    pub(crate) last_seen: Instant,
    /// Its downloads under way, as its last heartbeat said (at most
    /// `MAX_TRANSFERS`): only passed on, in `Peers` and `List` replies.
    pub(crate) transfers: Vec<Transfer>,
    /// Its downloads waiting after a failure, and the latest failures, as
    /// its last heartbeat said: passed on likewise.
    pub(crate) failing: u64,
    pub(crate) errors: Vec<Failure>,
}

impl Peer {
    /// A peer that holds nothing yet; `Index::add_peer` numbers it.
    pub(crate) fn new(device: Option<u64>, endpoint: String, last_seen: Instant) -> Peer {
        Peer {
            num: 0,
            device,
            endpoint,
            last_seen,
            transfers: Vec::new(),
            failing: 0,
            errors: vec![],
        }
    }
}

/// The tracker's state, without sockets: what `handle` decides is testable alone.
pub(crate) struct Index {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) peers: BTreeMap<String, Peer>,
    /// Each live peer's name by its number (`Peer::num`); `None` for a
    /// number free for the next peer.
    names: Vec<Option<Box<str>>>,
    /// What a holder holds where it is neither the current content nor a
    /// deletion (`Held::Other`: an older version, or one that lost), by
    /// holder number and path. Rare, and transient: until the holder
    /// catches up.
    others: HashMap<(u32, RelPath), Hash>,
    /// Each path's current version, and who holds what there: the only
    /// record of what a peer holds (a peer's own list by path would cost
    /// some 80 bytes a path more; forgetting a peer walks the slots).
    pub(crate) current: BTreeMap<RelPath, Slot>,
    /// Paths whose current entry has this content (not tombstones), for
    /// `Find`, by the content hash's first 8 bytes (`content_key`: a
    /// shared key only costs a look at the slot). Kept in step with
    /// `current` by `set_current` and `forget_path`.
    by_content: HashMap<u64, Paths>,
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
/// there. 40 bytes (about 100 in the B-tree, whose nodes are half full
/// when keys arrive in order), the packed entry (~96 with its allocation)
/// and 8 bytes a holder: ARCHITECTURE.md sums up what a path costs.
pub(crate) struct Slot {
    /// The current version without its path; a decoded entry costs three
    /// times as much. Queries decode it.
    packed: PackedEntry,
    /// When the entry became current, as `Index::made` counts.
    made: u64,
    /// Who holds what at this path: a short list sorted by holder number,
    /// eight bytes a holder and no spare room (most paths have a few).
    /// Written only by `hold`, `set_current`, `forget_peer` and
    /// `forget_path`, which keep `Index::others` in step.
    held: Box<[Holding]>,
}

impl Slot {
    /// The current content; `None` for a tombstone.
    fn current(&self) -> Option<Hash> {
        (!self.packed.deleted()).then(|| self.packed.sha256())
    }

    /// The current version, which lives at `path`. `None` (logged) only if
    /// the packed bytes did not read back, which no entry packed here does.
    fn entry(&self, path: &RelPath) -> Option<FileEntry> {
        match self.packed.unpack(path.clone()) {
            Ok(e) => Some(e),
            Err(e) => {
                error!(path = %path, error = %e, "tracker index: a packed entry does not read back");
                None
            }
        }
    }
}

/// What a peer holds at a path, against the path's current version: that,
/// a deletion, or other content (an older version, or one that lost),
/// which `Index::others` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Current,
    Deleted,
    Other,
}

impl Held {
    /// `what` (content, `None` for a deletion) where the current content is
    /// `current`.
    fn of(what: Option<Hash>, current: Option<Hash>) -> Held {
        match what {
            None => Held::Deleted,
            Some(h) if Some(h) == current => Held::Current,
            Some(_) => Held::Other,
        }
    }
}

/// Records in `others` what holder `num` holds at `path` (where the current
/// content is `current`, and the holder list said `was`); returns how the
/// holder list says it now.
fn note_held(
    others: &mut HashMap<(u32, RelPath), Hash>,
    num: u32,
    path: &RelPath,
    was: Option<Held>,
    what: Option<Hash>,
    current: Option<Hash>,
) -> Held {
    let held = Held::of(what, current);
    match (held, what) {
        (Held::Other, Some(h)) => {
            others.insert((num, path.clone()), h);
        }
        _ if was == Some(Held::Other) => {
            others.remove(&(num, path.clone()));
        }
        _ => {}
    }
    held
}

/// The content holder `num` holds at `path`, as `held` says, where the
/// current content is `current`.
fn what_held(
    others: &HashMap<(u32, RelPath), Hash>,
    num: u32,
    path: &RelPath,
    held: Held,
    current: Option<Hash>,
) -> Option<Hash> {
    match held {
        Held::Current => current,
        Held::Deleted => None,
        Held::Other => others.get(&(num, path.clone())).copied(),
    }
}

/// `by_content`'s key for `sha256`.
fn content_key(sha256: &Hash) -> u64 {
    let b = sha256.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
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

/// A peer holding a path, by number, and what.
type Holding = (u32, Held);

impl Index {
    /// An empty index for tracker epoch `epoch`.
    pub(crate) fn new(epoch: u64) -> Index {
        Index {
            epoch,
            seq: 0,
            peers: BTreeMap::new(),
            names: Vec::new(),
            others: HashMap::new(),
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
        let (Some(p), Some(slot)) = (self.peers.get(name), self.current.get_mut(path)) else {
            return;
        };
        let at = slot.held.binary_search_by_key(&p.num, |(n, _)| *n);
        let was = at.ok().map(|i| slot.held[i].1);
        let held = note_held(&mut self.others, p.num, path, was, what, slot.current());
        match at {
            Ok(i) => slot.held[i].1 = held,
            Err(i) => {
                // Most paths have one or two holders: no room for four.
                let mut by = std::mem::take(&mut slot.held).into_vec();
                by.reserve_exact(1);
                by.insert(i, (p.num, held));
                slot.held = by.into_boxed_slice();
            }
        }
    }

    /// Adds a peer that holds nothing yet, replacing one of the same name
    /// (and what it held), under the lowest free number.
    pub(crate) fn add_peer(&mut self, name: &str, mut peer: Peer) {
        self.forget_peer(name);
        let free = self.names.iter().position(Option::is_none);
        let num = free.unwrap_or(self.names.len());
        if num == self.names.len() {
            self.names.push(None);
        }
        self.names[num] = Some(name.into());
        // More peers than u32 numbers would not fit in memory anyway.
        peer.num = num as u32;
        self.peers.insert(name.to_owned(), peer);
    }

    /// The name of the peer numbered `num`.
    fn name(&self, num: u32) -> Option<&str> {
        self.names.get(num as usize)?.as_deref()
    }

    /// Removes peer `name` and everything it held; returns it. Walks every
    /// slot: peers leave seldom, and a list of each peer's paths would cost
    /// more memory than the walk costs time (some 20 ms a million paths).
    pub(crate) fn forget_peer(&mut self, name: &str) -> Option<Peer> {
        let p = self.peers.remove(name)?;
        let num = p.num;
        for slot in self.current.values_mut() {
            if slot.held.iter().any(|(n, _)| *n == num) {
                let rest = slot.held.iter().filter(|(n, _)| *n != num).copied();
                slot.held = rest.collect();
            }
        }
        self.others.retain(|(n, _), _| *n != num);
        if let Some(n) = self.names.get_mut(num as usize) {
            *n = None;
        }
        Some(p)
    }

    /// Whether every holder list names live peers only, each once, in
    /// number order; a tombstone's holders hold no "current" content; and
    /// `others` has exactly the holdings marked other.
    #[cfg(test)]
    pub(crate) fn holders_sound(&self) -> bool {
        let live = |n: u32| {
            self.name(n)
                .and_then(|name| self.peers.get(name))
                .is_some_and(|p| p.num == n)
        };
        let mut marked = 0;
        let slots = self.current.iter().all(|(path, slot)| {
            slot.held.windows(2).all(|w| w[0].0 < w[1].0)
                && slot.held.iter().all(|&(n, h)| {
                    marked += usize::from(h == Held::Other);
                    live(n)
                        && !(slot.packed.deleted() && h == Held::Current)
                        && (h == Held::Other) == self.others.contains_key(&(n, path.clone()))
                })
        });
        slots && marked == self.others.len()
    }

    /// What peer `name` holds at `path`: `Some(None)` for a deletion.
    #[cfg(test)]
    pub(crate) fn held_by(&self, name: &str, path: &RelPath) -> Option<Option<Hash>> {
        let num = self.peers.get(name)?.num;
        let slot = self.current.get(path)?;
        let &(_, h) = slot.held.iter().find(|(n, _)| *n == num)?;
        Some(what_held(&self.others, num, path, h, slot.current()))
    }

    /// Live peers holding `path` with content `sha256`, by name, in name
    /// order.
    fn holding(&self, path: &RelPath, sha256: Hash) -> Vec<&str> {
        match self.current.get(path) {
            Some(slot) => self.holding_in(path, slot, sha256),
            None => Vec::new(),
        }
    }

    /// The peers holding content `sha256` in `slot` (at `path`), by name, in
    /// name order.
    fn holding_in(&self, path: &RelPath, slot: &Slot, sha256: Hash) -> Vec<&str> {
        let current = slot.current();
        let mut names: Vec<&str> = slot
            .held
            .iter()
            .filter(|&&(n, h)| what_held(&self.others, n, path, h, current) == Some(sha256))
            .filter_map(|&(n, _)| self.name(n))
            .collect();
        names.sort_unstable();
        names
    }

    /// `slot`'s current version (it lives at `path`) and its holders.
    fn cluster_file_of(&self, path: &RelPath, slot: &Slot) -> Option<ClusterFile> {
        let holders = match slot.current() {
            None => Vec::new(),
            Some(sha256) => self
                .holding_in(path, slot, sha256)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        Some(ClusterFile {
            entry: slot.entry(path)?,
            holders,
        })
    }

    /// `path`'s current version.
    pub(crate) fn entry(&self, path: &RelPath) -> Option<FileEntry> {
        self.current.get(path)?.entry(path)
    }

    /// The current entry of some path whose content is `sha256`, and the
    /// live peers holding it there: the first path with a live holder, in
    /// path order, or else the first path.
    pub(crate) fn find(&self, sha256: Hash, now: Instant) -> (Option<FileEntry>, Vec<PeerInfo>) {
        let paths = self.by_content.get(&content_key(&sha256));
        let mut first = None;
        for path in paths.into_iter().flat_map(|p| p.iter()) {
            if self.current.get(path).and_then(Slot::current) != Some(sha256) {
                continue; // another content whose key is the same
            }
            let holders = self.locate(path, sha256, now);
            if !holders.is_empty() {
                return (self.entry(path), holders);
            }
            first.get_or_insert(path);
        }
        (first.and_then(|p| self.entry(p)), Vec::new())
    }

    pub(crate) fn holders(&self, entry: &FileEntry) -> Vec<String> {
        if entry.deleted {
            return Vec::new();
        }
        self.holding(&entry.path, entry.sha256)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn peer_info(name: &str, p: &Peer, now: Instant) -> PeerInfo {
        PeerInfo {
            name: name.to_owned(),
            endpoint: p.endpoint.clone(),
            last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
            transfers: p.transfers.clone(),
            failing: p.failing,
            errors: p.errors.clone(),
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
            let current = self.entry(&e.path);
            let announce = match &current {
                None => true,
                Some(cur) if e.supersedes(cur) => true,
                Some(cur) if cur.version == e.version && cur.same_content(&e) => false,
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
        let packed = PackedEntry::new(&e);
        let old = match self.current.get_mut(&path) {
            Some(slot) => {
                let old = slot.current();
                for (num, held) in slot.held.iter_mut() {
                    let what = what_held(&self.others, *num, &path, *held, old);
                    *held = note_held(&mut self.others, *num, &path, Some(*held), what, new);
                }
                slot.packed = packed;
                slot.made = made;
                old
            }
            None => {
                let slot = Slot {
                    packed,
                    made,
                    held: Box::default(),
                };
                self.current.insert(path.clone(), slot);
                None
            }
        };
        if let Some(old) = old {
            self.unindex_content(&old, &path);
        }
        if let Some(sha256) = new {
            match self.by_content.entry(content_key(&sha256)) {
                Entry::Occupied(mut o) => o.get_mut().insert(path),
                Entry::Vacant(v) => {
                    v.insert(Paths::One(path));
                }
            }
        }
    }

    pub(crate) fn cluster_file(&self, path: &RelPath) -> Option<ClusterFile> {
        self.cluster_file_of(path, self.current.get(path)?)
    }

    /// Refreshes a registered peer's liveness; false if it is not registered.
    /// Keeps what `name` said it has under way and failing (what makes
    /// sense of it: at most `MAX_TRANSFERS` of each, no transfer past its
    /// size, messages cut to `MAX_ERROR_LEN`).
    pub(crate) fn set_transfers(
        &mut self,
        name: &str,
        mut transfers: Vec<Transfer>,
        failing: u64,
        mut errors: Vec<Failure>,
    ) {
        if let Some(p) = self.peers.get_mut(name) {
            transfers.truncate(MAX_TRANSFERS);
            transfers.retain(Transfer::is_consistent);
            errors.truncate(MAX_TRANSFERS);
            for e in &mut errors {
                *e = Failure::new(e.path.clone(), &e.error);
            }
            p.transfers = transfers;
            p.failing = failing;
            p.errors = errors;
        }
    }

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
        for (path, slot) in self.current.range((start, Unbounded)) {
            let Some(file) = self.cluster_file_of(path, slot) else {
                continue;
            };
            let size = file.entry.size_hint();
            if let Some(last) = files.last().filter(|_| bytes + size > self.page_bytes) {
                let next = last.entry.path.clone();
                return (files, Some(next));
            }
            bytes += size;
            files.push(file);
        }
        (files, None)
    }

    /// Live peers holding `path` with content `sha256`.
    pub(crate) fn locate(&self, path: &RelPath, sha256: Hash, now: Instant) -> Vec<PeerInfo> {
        self.holding(path, sha256)
            .into_iter()
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
            if slot.made != made || !slot.packed.deleted() {
                continue; // changed since: that change has its own entry
            }
            if slot.held.iter().any(|(_, held)| *held != Held::Deleted) {
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
        if let Entry::Occupied(mut o) = self.by_content.entry(content_key(sha256)) {
            if o.get_mut().remove(path) {
                o.remove();
            }
        }
    }

    /// Removes `path`'s slot and every peer's record of it; returns its entry.
    pub(crate) fn forget_path(&mut self, path: &RelPath) -> Option<FileEntry> {
        let slot = self.current.remove(path)?;
        for &(num, held) in slot.held.iter() {
            if held == Held::Other {
                self.others.remove(&(num, path.clone()));
            }
        }
        if let Some(sha256) = slot.current() {
            self.unindex_content(&sha256, path);
        }
        slot.entry(path)
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

#[cfg(test)]
mod tests {
    use super::*;
    use zync_proto::VersionVector;

    fn path(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn entry(at: &str, sha256: Hash, bumps: usize, deleted: bool) -> FileEntry {
        let mut version = VersionVector::new();
        (0..bumps).for_each(|_| version.bump("a"));
        FileEntry {
            path: path(at),
            size: if deleted { 0 } else { 5 },
            mtime_ns: 1,
            sha256,
            blocks: if deleted { vec![] } else { vec![sha256] },
            version,
            deleted,
            modified_by: "a".into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn with_peers(names: &[&str]) -> Index {
        let mut ix = Index::new(1);
        for n in names {
            let peer = Peer::new(Some(1), format!("tcp://{n}:1"), Instant::now());
            ix.add_peer(n, peer);
        }
        ix
    }

    fn names(file: Option<ClusterFile>) -> Vec<String> {
        file.map(|f| f.holders).unwrap_or_default()
    }

    #[test]
    fn what_each_peer_holds_follows_the_current_version() {
        let (one, two) = (Hash::of(b"one"), Hash::of(b"two"));
        let now = Instant::now();
        let f = path("f");
        let mut ix = with_peers(&["a", "b"]);
        ix.set_current(entry("f", one, 1, false), now);
        ix.hold("a", &f, Some(one));
        ix.hold("b", &f, Some(one));
        assert_eq!(names(ix.cluster_file(&f)), ["a", "b"]);

        // A new version: both still hold the old content, which stays
        // locatable, and neither holds the new one yet.
        ix.set_current(entry("f", two, 2, false), now);
        assert_eq!(ix.held_by("a", &f), Some(Some(one)));
        assert!(names(ix.cluster_file(&f)).is_empty());
        assert_eq!(ix.locate(&f, one, now).len(), 2);
        ix.hold("b", &f, Some(two));
        assert_eq!(names(ix.cluster_file(&f)), ["b"]);

        // Deleted: nobody holds "the current content" of a tombstone, and
        // what each held is kept until it says otherwise.
        ix.set_current(entry("f", Hash::EMPTY, 3, true), now);
        assert!(names(ix.cluster_file(&f)).is_empty());
        assert_eq!(ix.held_by("b", &f), Some(Some(two)));
        ix.hold("a", &f, None);
        assert_eq!(ix.held_by("a", &f), Some(None));
        assert!(ix.holders_sound());

        // Content that comes back is current again for its holder.
        ix.set_current(entry("f", two, 4, false), now);
        assert_eq!(names(ix.cluster_file(&f)), ["b"]);

        ix.forget_peer("b");
        assert_eq!(ix.held_by("b", &f), None);
        assert_eq!(ix.held_by("a", &f), Some(None));
        assert!(ix.holders_sound());
        // A newcomer takes b's number, not what b held.
        ix.add_peer("c", Peer::new(Some(1), "tcp://c:1".into(), now));
        assert_eq!(ix.peers["c"].num, 1);
        assert_eq!(ix.held_by("c", &f), None);
        assert!(names(ix.cluster_file(&f)).is_empty());
        ix.hold("c", &f, Some(one));
        assert_eq!(ix.held_by("c", &f), Some(Some(one)));
        assert!(ix.holders_sound());
        assert_eq!(ix.entry(&f), Some(entry("f", two, 4, false)));
        assert_eq!(ix.forget_path(&f), Some(entry("f", two, 4, false)));
        assert!(
            ix.others.is_empty(),
            "a forgotten path leaves no other content behind"
        );
        assert_eq!(ix.entry(&f), None);
    }

    #[test]
    fn find_tells_apart_contents_whose_keys_are_the_same() {
        let now = Instant::now();
        let mut x = [7u8; 32];
        let mut y = [7u8; 32];
        x[31] = 1;
        y[31] = 2;
        let (x, y) = (Hash::from_bytes(x), Hash::from_bytes(y));
        assert_eq!(content_key(&x), content_key(&y));
        let mut ix = with_peers(&["a"]);
        ix.set_current(entry("a-y", y, 1, false), now);
        ix.set_current(entry("b-x", x, 1, false), now);
        ix.hold("a", &path("b-x"), Some(x));
        let (found, holders) = ix.find(x, now);
        assert_eq!(found.map(|e| e.path), Some(path("b-x")));
        assert_eq!(holders.len(), 1);
        let (found, holders) = ix.find(y, now);
        assert_eq!(found.map(|e| e.path), Some(path("a-y")));
        assert!(holders.is_empty(), "nobody holds y");
        ix.set_current(entry("a-y", y, 2, true), now);
        assert_eq!(ix.find(y, now).0, None, "a tombstone has no content");
        assert!(ix.find(x, now).0.is_some());
    }

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
