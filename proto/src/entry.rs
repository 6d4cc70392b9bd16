use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::{Causality, DecodeError, Hash, RelPath, VersionVector, BLOCK_SIZE, MAX_BLOCK_SIZE};

/// One version of one file, as the cluster knows it: metadata only.
///
/// A deleted file is still an entry (a tombstone), so the deletion is a
/// version that supersedes the content it deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where the file lives in the folder.
    pub path: RelPath,
    /// Size in bytes (0 for a tombstone).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// SHA-256 of the whole content.
    pub sha256: Hash,
    /// SHA-256 of each block, in order; empty for an empty file. A block
    /// is a content-defined chunk whose length `lengths` gives, or, when
    /// `lengths` is empty, [`BLOCK_SIZE`] bytes (the last may be shorter).
    pub blocks: Vec<Hash>,
    /// The version this entry is.
    pub version: VersionVector,
    /// True for a tombstone.
    pub deleted: bool,
    /// Name of the peer that made this version.
    pub modified_by: String,
    /// Length of each block, when the blocks are not all [`BLOCK_SIZE`]
    /// long: one per hash in `blocks`, each 1 to [`MAX_BLOCK_SIZE`], adding
    /// up to `size`. Empty for fixed blocks (every entry of protocol 1, and
    /// any file whose chunks fall on the fixed boundaries, such as a small
    /// one); see [`FileEntry::canonical_lengths`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lengths: Vec<u32>,
    /// The file's permission bits at the origin (`0o777` at most: no
    /// set-id or sticky bit travels), which a receiver gives its copy
    /// masked by its umask. `None` when not known (a tombstone, or a
    /// version made before modes were kept): a receiver then gives a new
    /// file the mode of any file it creates, and leaves an existing
    /// file's mode alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// The permission bits a [`FileEntry::mode`] carries.
pub const MODE_BITS: u32 = 0o777;

/// A [`FileEntry`] without its path, in few bytes, for a store keyed by
/// path (the tracker keeps its index this way: a decoded entry and its
/// heap cost three times as much). The content hash and the tombstone flag
/// come first, so a query can filter on them without decoding; the rest is
/// MessagePack without field names, and a file of one block has no block
/// list (its block is the whole file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedEntry(Box<[u8]>);

/// Bytes of [`PackedEntry`] before the MessagePack part: the hash, a flag.
const PACKED_HEAD: usize = 33;

impl PackedEntry {
    /// Packs `e`, leaving out its path.
    pub fn new(e: &FileEntry) -> PackedEntry {
        let whole = e.blocks.len() == 1 && e.blocks[0] == e.sha256;
        let blocks: &[Hash] = if whole { &[] } else { &e.blocks };
        let rest = (
            e.size,
            e.mtime_ns,
            whole,
            blocks,
            &e.version,
            &e.modified_by,
            &e.lengths,
            e.mode,
        );
        let mut bytes = Vec::with_capacity(PACKED_HEAD + 64);
        bytes.extend_from_slice(e.sha256.as_bytes());
        bytes.push(u8::from(e.deleted));
        // Writing plain data into a Vec cannot fail; were it to, `unpack`
        // would report the entry as malformed rather than misread it.
        let _ = rmp_serde::encode::write(&mut bytes, &rest);
        PackedEntry(bytes.into_boxed_slice())
    }

    /// The entry's content hash.
    pub fn sha256(&self) -> Hash {
        let mut h = [0; 32];
        h.copy_from_slice(&self.0[..32]);
        Hash::from_bytes(h)
    }

    /// Whether the entry is a tombstone.
    pub fn deleted(&self) -> bool {
        self.0[32] != 0
    }

    /// The entry, which lives at `path`.
    pub fn unpack(&self, path: RelPath) -> Result<FileEntry, DecodeError> {
        /// An entry packed before modes were kept has no `mode`.
        #[derive(Deserialize)]
        struct Rest(
            u64,
            i64,
            bool,
            Vec<Hash>,
            VersionVector,
            String,
            Vec<u32>,
            #[serde(default)] Option<u32>,
        );
        let Rest(size, mtime_ns, whole, mut blocks, version, modified_by, lengths, mode) =
            rmp_serde::from_slice(&self.0[PACKED_HEAD..])
                .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let sha256 = self.sha256();
        if whole {
            blocks = vec![sha256];
        }
        Ok(FileEntry {
            path,
            size,
            mtime_ns,
            sha256,
            blocks,
            version,
            deleted: self.deleted(),
            modified_by,
            lengths,
            mode,
        })
    }

    /// How many bytes it takes (on the heap, besides the box).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a packed entry holds at least its hash and flag.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a peer should do with a remote version of a file it also knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Nothing: same version, or the local one is newer.
    Keep,
    /// The remote version supersedes the local one.
    TakeRemote,
    /// Concurrent versions, and the remote one wins: keep the local content
    /// as a conflict copy, then take the remote one.
    ConflictRemoteWins,
    /// Concurrent versions, and the local one wins.
    ConflictLocalWins,
}

/// Why an entry that arrived from the network is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not [`FileEntry::is_consistent`].
    #[error("{0}: inconsistent entry (blocks, lengths, mode or tombstone)")]
    Inconsistent(RelPath),
    /// A counter past [`crate::MAX_COUNTER_AHEAD`].
    #[error("{path}: counter {counter} of replica {replica:?} is beyond any peer's clock")]
    CounterAhead {
        /// The file.
        path: RelPath,
        /// Whose counter.
        replica: String,
        /// Its value.
        counter: u64,
    },
}

impl FileEntry {
    /// Whether this entry, from the network, may be taken in at `unix_now`
    /// (seconds): consistent, and no counter of its version past
    /// [`crate::MAX_COUNTER_AHEAD`] from now.
    pub fn acceptable(&self, unix_now: u64) -> Result<(), EntryError> {
        if !self.is_consistent() {
            return Err(EntryError::Inconsistent(self.path.clone()));
        }
        let limit = unix_now.saturating_add(crate::MAX_COUNTER_AHEAD);
        match self.version.beyond(limit) {
            Some((replica, counter)) => Err(EntryError::CounterAhead {
                path: self.path.clone(),
                replica: replica.to_owned(),
                counter,
            }),
            None => Ok(()),
        }
    }

    /// Number of blocks a file of `size` bytes has.
    pub fn block_count_for(size: u64) -> u64 {
        size.div_ceil(BLOCK_SIZE)
    }

    /// True when the metadata is self-consistent: a mode has permission
    /// bits only ([`MODE_BITS`]), a tombstone has no content, and the block
    /// list has exactly one hash per block of `size` (fixed blocks), or one
    /// hash and one length per chunk, the lengths within bounds and adding
    /// up to `size`.
    pub fn is_consistent(&self) -> bool {
        if self.mode.is_some_and(|m| m & !MODE_BITS != 0) {
            return false;
        }
        if self.deleted {
            return self.size == 0 && self.blocks.is_empty() && self.lengths.is_empty();
        }
        if self.lengths.is_empty() {
            return Self::block_count_for(self.size) == self.blocks.len() as u64;
        }
        self.lengths.len() == self.blocks.len()
            && self
                .lengths
                .iter()
                .all(|&n| n > 0 && u64::from(n) <= MAX_BLOCK_SIZE)
            && self.lengths.iter().map(|&n| u64::from(n)).sum::<u64>() == self.size
    }

    /// Each block's `(offset, length)` in the file, in order (for a
    /// consistent entry).
    pub fn spans(&self) -> Spans<'_> {
        Spans {
            size: self.size,
            lengths: &self.lengths,
            count: self.blocks.len(),
            index: 0,
            at: 0,
        }
    }

    /// The chunk lengths to store for a file of `size` bytes cut into
    /// `lengths`: none when they fall on the fixed [`BLOCK_SIZE`]
    /// boundaries, so such entries (every small file) stay as compact as
    /// protocol 1's and equal to them.
    pub fn canonical_lengths(size: u64, lengths: Vec<u32>) -> Vec<u32> {
        let count = Self::block_count_for(size);
        let fixed = lengths.len() as u64 == count
            && lengths
                .iter()
                .enumerate()
                .all(|(i, &n)| u64::from(n) == block_len(size, i as u64));
        if fixed {
            Vec::new()
        } else {
            lengths
        }
    }

    /// True when both entries describe the same content (or both are tombstones).
    pub fn same_content(&self, other: &FileEntry) -> bool {
        self.deleted == other.deleted && (self.deleted || self.sha256 == other.sha256)
    }

    /// The deterministic order of two concurrent versions, the same on every
    /// node: an edit beats a deletion, then the newer modification time, then
    /// the greater content hash, then the greater peer name.
    pub fn conflict_order(&self, other: &FileEntry) -> Ordering {
        (!self.deleted)
            .cmp(&!other.deleted)
            .then(self.mtime_ns.cmp(&other.mtime_ns))
            .then(self.sha256.cmp(&other.sha256))
            .then(self.modified_by.cmp(&other.modified_by))
    }

    /// True if `self` should be preferred over `other` as the cluster's
    /// current version of the file: it dominates, or it is concurrent and
    /// wins [`conflict_order`](Self::conflict_order).
    ///
    /// Two equal versions with different content are concurrent too: an
    /// honest peer never makes them, and taking them for one version would
    /// leave peers holding different files "in sync".
    pub fn supersedes(&self, other: &FileEntry) -> bool {
        match self.version.compare(&other.version) {
            Causality::Dominates => true,
            Causality::DominatedBy => false,
            Causality::Equal if self.same_content(other) => false,
            Causality::Equal | Causality::Concurrent => {
                self.conflict_order(other) == Ordering::Greater
            }
        }
    }

    /// About how many bytes this entry takes on the wire (an upper-side
    /// estimate), for cutting lists into messages of [`crate::PAGE_BYTES`].
    pub fn size_hint(&self) -> usize {
        128 + self.path.as_str().len()
            + self.modified_by.len()
            + 34 * self.blocks.len()
            + 5 * self.lengths.len()
            + self
                .version
                .iter()
                .map(|(k, _)| k.len() + 10)
                .sum::<usize>()
    }

    /// What the holder of `self` should do on hearing of `remote`.
    /// Equal versions with different content are a conflict, as in
    /// [`FileEntry::supersedes`].
    pub fn resolve(&self, remote: &FileEntry) -> Resolution {
        match remote.version.compare(&self.version) {
            Causality::Dominates => Resolution::TakeRemote,
            Causality::DominatedBy => Resolution::Keep,
            Causality::Equal if remote.same_content(self) => Resolution::Keep,
            Causality::Concurrent if remote.same_content(self) => Resolution::TakeRemote,
            Causality::Equal | Causality::Concurrent => match remote.conflict_order(self) {
                Ordering::Greater => Resolution::ConflictRemoteWins,
                _ => Resolution::ConflictLocalWins,
            },
        }
    }
}

/// Length of fixed block `index` of a file of `size` bytes (0 past the end).
fn block_len(size: u64, index: u64) -> u64 {
    let start = index.saturating_mul(BLOCK_SIZE);
    size.saturating_sub(start).min(BLOCK_SIZE)
}

/// The `(offset, length)` of each block of an entry: see [`FileEntry::spans`].
#[derive(Clone, Debug)]
pub struct Spans<'a> {
    size: u64,
    lengths: &'a [u32],
    count: usize,
    index: usize,
    at: u64,
}

impl Iterator for Spans<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.index >= self.count {
            return None;
        }
        let len = match self.lengths.get(self.index) {
            Some(&n) => u64::from(n),
            None => block_len(self.size, self.index as u64),
        };
        let span = (self.at, len);
        self.index += 1;
        self.at += len;
        Some(span)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.index;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Spans<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIN_BLOCK_SIZE;

    fn entry(
        path: &str,
        by: &str,
        counters: &[(&str, u64)],
        mtime: i64,
        content: &[u8],
    ) -> FileEntry {
        let mut version = VersionVector::new();
        for (p, n) in counters {
            version.bump_at(p, *n);
        }
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size: content.len() as u64,
            mtime_ns: mtime,
            sha256: Hash::of(content),
            blocks: if content.is_empty() {
                vec![]
            } else {
                vec![Hash::of(content)]
            },
            version,
            deleted: false,
            modified_by: by.into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    #[test]
    fn equal_versions_with_other_content_are_a_conflict() {
        let a = entry("f", "p1", &[("p1", 5)], 7, b"mine");
        let b = entry("f", "p2", &[("p1", 5)], 8, b"theirs");
        assert!(
            b.supersedes(&a) != a.supersedes(&b),
            "one wins, the same everywhere"
        );
        assert!(!a.supersedes(&a.clone()), "the same version is not newer");
        assert_eq!(a.resolve(&b), Resolution::ConflictRemoteWins);
        assert_eq!(b.resolve(&a), Resolution::ConflictLocalWins);
        assert_eq!(a.resolve(&a.clone()), Resolution::Keep);
    }

    #[test]
    fn counters_far_past_the_clock_are_refused() {
        let now = 1_800_000_000;
        let ok = entry("f", "p1", &[("p1", now + 5)], 7, b"x");
        assert_eq!(ok.acceptable(now), Ok(()));
        let edge = entry(
            "f",
            "p1",
            &[("p1", now + crate::MAX_COUNTER_AHEAD)],
            7,
            b"x",
        );
        assert_eq!(edge.acceptable(now), Ok(()));
        let bad = entry("f", "p1", &[("p1", 3), ("p2", u64::MAX)], 7, b"x");
        assert_eq!(
            bad.acceptable(now),
            Err(EntryError::CounterAhead {
                path: RelPath::new("f").unwrap(),
                replica: "p2".into(),
                counter: u64::MAX
            })
        );
        let mut broken = ok.clone();
        broken.blocks.clear();
        assert!(matches!(
            broken.acceptable(now),
            Err(EntryError::Inconsistent(_))
        ));
    }

    #[test]
    fn an_entry_packs_without_its_path_and_unpacks_whole() {
        let one = entry("a/one.txt", "p1", &[("p1", 2), ("p2", 1)], 7, b"small");
        let empty = entry("e", "p1", &[("p1", 1)], 1, b"");
        let mut gone = entry("g", "p2", &[("p2", 3)], 1, b"");
        gone.deleted = true;
        let mut chunks = entry("big", "p1", &[("p1", 1)], 9, b"x");
        chunks.size = 3 * MIN_BLOCK_SIZE;
        chunks.blocks = vec![Hash::of(b"1"), Hash::of(b"2")];
        chunks.lengths = vec![MIN_BLOCK_SIZE as u32, 2 * MIN_BLOCK_SIZE as u32];
        let mut script = entry("run.sh", "p1", &[("p1", 1)], 3, b"#!/bin/sh");
        script.mode = Some(0o755);
        for e in [one, empty, gone, chunks, script] {
            let packed = PackedEntry::new(&e);
            assert!(
                !packed
                    .0
                    .windows(e.path.as_str().len())
                    .any(|w| w == e.path.as_str().as_bytes()),
                "the path is the store's key, not packed"
            );
            assert_eq!((packed.sha256(), packed.deleted()), (e.sha256, e.deleted));
            assert_eq!(packed.unpack(e.path.clone()).unwrap(), e);
        }
    }

    #[test]
    fn an_entry_packed_before_modes_were_kept_unpacks_without_one() {
        let e = entry("f", "p1", &[("p1", 1)], 1, b"x");
        let mut bytes = e.sha256.as_bytes().to_vec();
        bytes.push(0);
        let rest = (
            e.size,
            e.mtime_ns,
            true,
            Vec::<Hash>::new(),
            &e.version,
            &e.modified_by,
            Vec::<u32>::new(),
        );
        rmp_serde::encode::write(&mut bytes, &rest).unwrap();
        let old = PackedEntry(bytes.into_boxed_slice());
        assert_eq!(old.unpack(e.path.clone()).unwrap(), e);
        assert_eq!(e.mode, None);
    }

    #[test]
    fn a_mode_beyond_the_permission_bits_is_not_an_entry_anyone_may_act_on() {
        let mut e = entry("f", "p1", &[("p1", 1)], 1, b"x");
        for (mode, ok) in [
            (0o755, true),
            (0o000, true),
            (0o777, true),
            (0o4755, false),
            (0o1777, false),
            (u32::MAX, false),
        ] {
            e.mode = Some(mode);
            assert_eq!(e.is_consistent(), ok, "{mode:o}");
        }
    }

    #[test]
    fn a_one_block_file_packs_without_its_block_list() {
        let e = entry("f", "p1", &[("p1", 1)], 1, b"content");
        let mut two = e.clone();
        two.blocks.push(Hash::of(b"more"));
        assert!(PackedEntry::new(&e).len() + 60 < PackedEntry::new(&two).len());
    }

    #[test]
    fn unpacking_garbage_is_an_error() {
        let path = RelPath::new("f").unwrap();
        let good = PackedEntry::new(&entry("f", "p1", &[("p1", 1)], 1, b"x"));
        let head = good.0[..PACKED_HEAD].to_vec();
        let tails: [&[u8]; 4] = [
            b"",
            b"\xc1",
            &good.0[PACKED_HEAD..good.len() - 3],
            b"\x93\x01\x02\x03",
        ];
        for tail in tails {
            let bad = PackedEntry([&head[..], tail].concat().into_boxed_slice());
            assert!(matches!(
                bad.unpack(path.clone()),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn block_arithmetic() {
        assert_eq!(FileEntry::block_count_for(0), 0);
        assert_eq!(FileEntry::block_count_for(1), 1);
        assert_eq!(FileEntry::block_count_for(BLOCK_SIZE), 1);
        assert_eq!(FileEntry::block_count_for(BLOCK_SIZE + 1), 2);
        assert_eq!(block_len(BLOCK_SIZE + 1, 0), BLOCK_SIZE);
        assert_eq!(block_len(BLOCK_SIZE + 1, 1), 1);
        assert_eq!(block_len(BLOCK_SIZE + 1, 2), 0);
        assert_eq!(block_len(10, u64::MAX), 0);
    }

    #[test]
    fn spans_of_fixed_blocks_and_of_chunks() {
        let mut e = entry("f", "a", &[("a", 1)], 0, b"x");
        e.size = 2 * BLOCK_SIZE + 5;
        e.blocks = vec![Hash::of(b"x"); 3];
        let fixed: Vec<_> = e.spans().collect();
        assert_eq!(
            fixed,
            [
                (0, BLOCK_SIZE),
                (BLOCK_SIZE, BLOCK_SIZE),
                (2 * BLOCK_SIZE, 5)
            ]
        );
        assert!(e.is_consistent());
        e.lengths = vec![100_000, 200_000, (2 * BLOCK_SIZE + 5 - 300_000) as u32];
        assert!(e.is_consistent());
        let cut: Vec<_> = e.spans().collect();
        assert_eq!(cut[1], (100_000, 200_000));
        assert_eq!(cut[2].0 + cut[2].1, e.size);
        // Lengths that do not add up, miss a block or exceed the bound are
        // not an entry anyone may act on.
        e.lengths[2] += 1;
        assert!(!e.is_consistent());
        e.lengths.pop();
        assert!(!e.is_consistent());
        e.size = MAX_BLOCK_SIZE + 1;
        e.blocks = vec![Hash::of(b"x")];
        e.lengths = vec![(MAX_BLOCK_SIZE + 1) as u32];
        assert!(!e.is_consistent());
        e.lengths = vec![0];
        e.size = 0;
        assert!(!e.is_consistent());
    }

    #[test]
    fn chunks_on_the_fixed_boundaries_are_stored_as_fixed_blocks() {
        let b = BLOCK_SIZE as u32;
        assert!(FileEntry::canonical_lengths(10, vec![10]).is_empty());
        assert!(FileEntry::canonical_lengths(2 * BLOCK_SIZE + 1, vec![b, b, 1]).is_empty());
        assert_eq!(
            FileEntry::canonical_lengths(BLOCK_SIZE + 1, vec![1, b]),
            vec![1, b]
        );
        assert!(FileEntry::canonical_lengths(0, vec![]).is_empty());
    }

    #[test]
    fn newer_version_is_taken_whatever_the_clock() {
        let old = entry("f", "a", &[("a", 1)], 2_000, b"old");
        let new = entry("f", "b", &[("a", 1), ("b", 1)], 1_000, b"new");
        assert_eq!(old.resolve(&new), Resolution::TakeRemote);
        assert_eq!(new.resolve(&old), Resolution::Keep);
        assert!(new.supersedes(&old));
    }

    #[test]
    fn concurrent_newer_mtime_wins_and_both_sides_agree() {
        let a = entry("f", "a", &[("a", 1)], 1_000, b"from a");
        let b = entry("f", "b", &[("b", 1)], 2_000, b"from b");
        assert_eq!(a.resolve(&b), Resolution::ConflictRemoteWins);
        assert_eq!(b.resolve(&a), Resolution::ConflictLocalWins);
        assert!(b.supersedes(&a) && !a.supersedes(&b));
    }

    #[test]
    fn concurrent_tie_broken_by_hash_then_name() {
        let a = entry("f", "a", &[("a", 1)], 1_000, b"x");
        let b = entry("f", "b", &[("b", 1)], 1_000, b"y");
        assert_ne!(a.supersedes(&b), b.supersedes(&a));
    }

    #[test]
    fn edit_beats_concurrent_delete() {
        let edit = entry("f", "a", &[("a", 1)], 1_000, b"edit");
        let mut del = entry("f", "b", &[("b", 1)], 9_000, b"");
        del.deleted = true;
        assert_eq!(del.resolve(&edit), Resolution::ConflictRemoteWins);
        assert_eq!(edit.resolve(&del), Resolution::ConflictLocalWins);
    }

    #[test]
    fn concurrent_identical_content_is_not_a_conflict() {
        let a = entry("f", "a", &[("a", 1)], 1_000, b"same");
        let b = entry("f", "b", &[("b", 1)], 2_000, b"same");
        assert_eq!(a.resolve(&b), Resolution::TakeRemote);
    }

    #[test]
    fn consistency_checks_block_count() {
        let mut e = entry("f", "a", &[("a", 1)], 0, b"abc");
        assert!(e.is_consistent());
        e.blocks.clear();
        assert!(!e.is_consistent());
    }
}
