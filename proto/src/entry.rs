use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::{Causality, Hash, RelPath, VersionVector, BLOCK_SIZE};

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
    /// SHA-256 of each [`BLOCK_SIZE`] block, in order; empty for an empty file.
    pub blocks: Vec<Hash>,
    /// The version this entry is.
    pub version: VersionVector,
    /// True for a tombstone.
    pub deleted: bool,
    /// Name of the peer that made this version.
    pub modified_by: String,
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

impl FileEntry {
    /// Number of blocks a file of `size` bytes has.
    pub fn block_count_for(size: u64) -> u64 {
        size.div_ceil(BLOCK_SIZE)
    }

    /// True when the metadata is self-consistent: a tombstone has no content,
    /// and the block list has exactly one hash per block of `size`.
    pub fn is_consistent(&self) -> bool {
        if self.deleted {
            return self.size == 0 && self.blocks.is_empty();
        }
        Self::block_count_for(self.size) == self.blocks.len() as u64
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
    pub fn supersedes(&self, other: &FileEntry) -> bool {
        match self.version.compare(&other.version) {
            Causality::Dominates => true,
            Causality::DominatedBy | Causality::Equal => false,
            Causality::Concurrent => self.conflict_order(other) == Ordering::Greater,
        }
    }

    /// About how many bytes this entry takes on the wire (an upper-side
    /// estimate), for cutting lists into messages of [`crate::PAGE_BYTES`].
    pub fn size_hint(&self) -> usize {
        128 + self.path.as_str().len()
            + self.modified_by.len()
            + 34 * self.blocks.len()
            + self
                .version
                .iter()
                .map(|(k, _)| k.len() + 10)
                .sum::<usize>()
    }

    /// What the holder of `self` should do on hearing of `remote`.
    pub fn resolve(&self, remote: &FileEntry) -> Resolution {
        match remote.version.compare(&self.version) {
            Causality::Dominates => Resolution::TakeRemote,
            Causality::DominatedBy | Causality::Equal => Resolution::Keep,
            Causality::Concurrent if remote.same_content(self) => Resolution::TakeRemote,
            Causality::Concurrent => match remote.conflict_order(self) {
                Ordering::Greater => Resolution::ConflictRemoteWins,
                _ => Resolution::ConflictLocalWins,
            },
        }
    }
}

/// Length of block `index` of a file of `size` bytes (0 past the end).
pub fn block_len(size: u64, index: u64) -> u64 {
    let start = index.saturating_mul(BLOCK_SIZE);
    size.saturating_sub(start).min(BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        path: &str,
        by: &str,
        counters: &[(&str, u64)],
        mtime: i64,
        content: &[u8],
    ) -> FileEntry {
        let mut version = VersionVector::new();
        for (p, n) in counters {
            for _ in 0..*n {
                version.bump(p);
            }
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
