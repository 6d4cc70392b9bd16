//! The peer's local index: for every path it has seen, the version it holds
//! and the file's stat when that version was recorded. Persisted in the
//! state folder so a restart neither re-hashes unchanged files nor forgets
//! versions (and tombstones).
//!
//! Version vectors count changes per *replica* ([`LocalIndex::replica`]: the
//! peer's name and this index's random device id), not per peer name. An
//! index that is lost or corrupt is replaced by a new one with a new device
//! id, so the folder becomes a new replica: what it finds on disk then counts
//! as concurrent with the cluster's versions, never as older, and a local
//! edit it cannot place in history is kept (as a conflict copy if it loses)
//! instead of being overwritten.
//!
//! The index file is rewritten whole, so saves are paced. Between two
//! saves every change is also appended to a small journal ([`Record`]): a
//! local version before it is reported to the tracker, a remote version
//! before the disk is changed to match it. Without it, a crash before the
//! next save lost those records: a file downloaded and renamed into place
//! was then taken by the start-up scan for a new local edit (which beats a
//! deletion made meanwhile, and brought the file back everywhere), and a
//! local file already reported but no longer on disk was never reported
//! gone (so the cluster sent it back). On load the journal's records are
//! handed to the engine ([`LocalIndex::take_journal`]), which adopts the
//! local ones and each remote one the disk shows was applied; a save
//! empties the journal.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zync_proto::{FileEntry, RelPath};

use crate::hashing::Stat;

/// One path's local state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalEntry {
    /// The version this peer holds (a tombstone if deleted).
    pub entry: FileEntry,
    /// The file's stat when `entry` was recorded; `None` when no file is
    /// expected on disk (a tombstone, or content moved aside and awaited).
    pub stat: Option<Stat>,
}

/// A journal record: a change to the index made since the last save.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A local version, minted for what the disk held then (its stat;
    /// `None` for a deletion). Written before the version is reported.
    Local {
        /// The version.
        entry: FileEntry,
        /// The stat it was recorded at.
        stat: Option<Stat>,
    },
    /// A remote version about to be applied to the disk (a download renamed
    /// into place, a file deleted). Written before the disk is changed.
    Remote {
        /// The version.
        entry: FileEntry,
        /// For a download, the inode of the temp file about to be renamed
        /// into place: a path that has it was installed, even if its
        /// content changed since.
        ino: Option<u64>,
    },
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    format: u32,
    device: u64,
    entries: Vec<LocalEntry>,
}

const FORMAT: u32 = 1;
const FILE_NAME: &str = "index.msgpack";
const JOURNAL_NAME: &str = "journal.msgpack";

/// Reads the records of a journal file. A record cut short (the process
/// died while writing it) ends the journal: what it describes was never
/// done, since the disk is changed only after its record is written.
fn read_journal(path: &Path) -> Vec<Record> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut rd = bytes.as_slice();
    let mut out = Vec::new();
    while !rd.is_empty() {
        match rmp_serde::from_read::<_, Record>(&mut rd) {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
    }
    out
}

/// Errors reading or writing the index file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file could not be read or written.
    #[error("index {path}: {source}")]
    Io {
        /// The index file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file exists but is not a valid index.
    #[error("index {path} is corrupt: {reason}")]
    Corrupt {
        /// The index file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Where a folder's index lives: what [`crate::folder::Folder`] reads and
/// writes, and all it needs of a store. [`LocalIndex`] keeps it in memory
/// and saves it as one file with a journal beside it; an embedded database
/// implements the same, and the engine does not change.
///
/// A store decides itself when its unsaved changes are due to be saved
/// ([`IndexStore::save_due`]), since only it knows what a save costs.
pub trait IndexStore: Send {
    /// This folder's random device id, stable across restarts.
    fn device(&self) -> u64;

    /// This replica's key in version vectors: `NAME@DEVICE` (the device
    /// id's low 32 bits in hex), so a folder whose index was lost counts
    /// its changes afresh instead of reusing counters the cluster has seen.
    fn replica(&self, name: &str) -> String {
        format!("{name}@{:08x}", self.device() as u32)
    }

    /// The entry for `path`.
    fn get(&self, path: &RelPath) -> Option<LocalEntry>;

    /// Records `entry` with the stat it was recorded at.
    fn put(&mut self, entry: FileEntry, stat: Option<Stat>);

    /// Updates only the recorded stat of `path` (nothing if it has no entry).
    fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>);

    /// Drops the entry for `path` (a tombstone the cluster forgot). Not
    /// journaled: a record that comes back after a crash is reported again,
    /// and forgotten again.
    fn remove(&mut self, path: &RelPath);

    /// Every entry, in path order.
    fn entries(&self) -> Box<dyn Iterator<Item = LocalEntry> + '_>;

    /// Paths of entries at `dir` or below it.
    fn paths_within(&self, dir: &RelPath) -> Vec<RelPath>;

    /// Number of entries.
    fn len(&self) -> usize;

    /// True when there are no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `record` to the journal, buffered: it is kept from the next
    /// [`IndexStore::flush_journal`] on (or made moot by a save).
    fn journal(&mut self, record: &Record) -> Result<(), IndexError>;

    /// Keeps the buffered journal records. Called before a journaled change
    /// is reported or made on disk.
    fn flush_journal(&mut self) -> Result<(), IndexError>;

    /// The journal's records found at load (each once): versions that were
    /// being applied when the process last stopped without saving.
    fn take_journal(&mut self) -> Vec<Record>;

    /// When the unsaved changes should be saved; `None` if there are none.
    fn save_due(&self) -> Option<Instant>;

    /// Saves every change (and empties the journal).
    fn save(&mut self) -> Result<(), IndexError>;
}

/// Least time between two saves of a [`LocalIndex`]. It is saved as soon
/// as a batch of changes is applied (so a crash loses at most this much),
/// but not more often than this.
const SAVE_EVERY: Duration = Duration::from_millis(50);

/// The index file is rewritten whole, so for a large index the pause after
/// a save grows with what the save cost: saving takes at most 1/`SAVE_SHARE`
/// of the engine's time, and the pause never exceeds [`SAVE_AT_MOST_EVERY`].
/// Losing the last unsaved changes in a crash is harmless: the journal
/// holds every change that was reported or made on disk; a file installed
/// but not recorded is re-hashed and, having the cluster's content, merges
/// with its version; a local edit not recorded is found by the next scan.
const SAVE_SHARE: u32 = 20;

/// Longest pause between saves of a dirty [`LocalIndex`].
const SAVE_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// The local index in memory, saved whole as `index.msgpack` with a
/// journal (`journal.msgpack`) of the changes since.
pub struct LocalIndex {
    /// This folder's random device id, stable across restarts.
    pub device: u64,
    /// Set when the saved index was unreadable and a new one was started:
    /// where the old file was moved and why.
    pub recovered: Option<(PathBuf, String)>,
    entries: BTreeMap<RelPath, LocalEntry>,
    file: PathBuf,
    dirty: bool,
    /// The journal: changes since the last save ([`Record`]).
    journal_file: PathBuf,
    journal: Option<std::fs::File>,
    /// Records not yet written to the journal file ([`LocalIndex::flush_journal`]).
    journal_buf: Vec<u8>,
    /// A journal file was there at load: the next save removes it.
    journal_stale: bool,
    /// Records found in the journal at load, for the engine to check against the disk.
    replay: Vec<Record>,
    /// When the index was last saved, and the pause after it ([`SAVE_SHARE`]).
    last_save: Instant,
    save_every: Duration,
}

impl LocalIndex {
    /// Loads the index from `state_dir`, or starts an empty one with a new
    /// device id if there is none. An unreadable index is moved aside (to
    /// `index.msgpack.corrupt`, for inspection) and a new one is started, as
    /// if it had been lost ([`LocalIndex::recovered`] says so).
    pub fn load(state_dir: &Path) -> Result<LocalIndex, IndexError> {
        let file = state_dir.join(FILE_NAME);
        let io_err = |source| IndexError::Io {
            path: file.clone(),
            source,
        };
        let journal_file = state_dir.join(JOURNAL_NAME);
        let journal_stale = journal_file.exists();
        let replay = read_journal(&journal_file);
        let fresh = |file: PathBuf| LocalIndex {
            device: rand::random::<u64>() | 1,
            recovered: None,
            entries: BTreeMap::new(),
            file,
            dirty: true,
            journal_file: journal_file.clone(),
            journal: None,
            journal_buf: Vec::new(),
            journal_stale,
            replay: replay.clone(),
            last_save: Instant::now(),
            save_every: SAVE_EVERY,
        };
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fresh(file)),
            Err(e) => return Err(io_err(e)),
        };
        let parsed = rmp_serde::from_slice::<IndexFile>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|p| match p.format {
                FORMAT => Ok(p),
                other => Err(format!("unknown format {other}")),
            });
        match parsed {
            Ok(parsed) => Ok(LocalIndex {
                device: parsed.device,
                recovered: None,
                entries: parsed
                    .entries
                    .into_iter()
                    .map(|e| (e.entry.path.clone(), e))
                    .collect(),
                file,
                dirty: false,
                journal_file: journal_file.clone(),
                journal: None,
                journal_buf: Vec::new(),
                journal_stale,
                replay: replay.clone(),
                last_save: Instant::now(),
                save_every: SAVE_EVERY,
            }),
            Err(reason) => {
                let aside = state_dir.join(format!("{FILE_NAME}.corrupt"));
                std::fs::rename(&file, &aside).map_err(io_err)?;
                let mut ix = fresh(file);
                ix.recovered = Some((aside, reason));
                Ok(ix)
            }
        }
    }

    /// Writes the index atomically (temp file, fsync, rename) if it
    /// changed, and sets the pause before the next save by what it cost.
    fn write(&mut self) -> Result<(), IndexError> {
        if !self.dirty {
            return Ok(());
        }
        let t = Instant::now();
        let io_err = |source| IndexError::Io {
            path: self.file.clone(),
            source,
        };
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let data = IndexFile {
            format: FORMAT,
            device: self.device,
            entries: self.entries.values().cloned().collect(),
        };
        let bytes = rmp_serde::to_vec_named(&data).map_err(|e| IndexError::Corrupt {
            path: self.file.clone(),
            reason: e.to_string(),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
        tmp.write_all(&bytes).map_err(io_err)?;
        tmp.as_file().sync_data().map_err(io_err)?;
        tmp.persist(&self.file).map_err(|e| io_err(e.error))?;
        self.dirty = false;
        // Everything journaled is in the saved index now.
        let journal_err = |source| IndexError::Io {
            path: self.journal_file.clone(),
            source,
        };
        self.journal_buf.clear();
        if let Some(j) = &self.journal {
            j.set_len(0).map_err(journal_err)?;
        } else if self.journal_stale {
            match std::fs::remove_file(&self.journal_file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(journal_err(e)),
                _ => {}
            }
        }
        self.journal_stale = false;
        self.last_save = Instant::now();
        let took = self.last_save.duration_since(t);
        self.save_every = (took * SAVE_SHARE).clamp(SAVE_EVERY, SAVE_AT_MOST_EVERY);
        tracing::debug!(
            entries = self.entries.len(),
            ms = took.as_millis() as u64,
            next_in_ms = self.save_every.as_millis() as u64,
            "index saved"
        );
        Ok(())
    }
}

impl IndexStore for LocalIndex {
    fn device(&self) -> u64 {
        self.device
    }

    fn save(&mut self) -> Result<(), IndexError> {
        self.write()
    }

    fn save_due(&self) -> Option<Instant> {
        self.dirty.then(|| self.last_save + self.save_every)
    }

    /// Adds `record` to the journal, buffered: it reaches the file with the
    /// next [`LocalIndex::flush_journal`] (or is made moot by a save).
    fn journal(&mut self, record: &Record) -> Result<(), IndexError> {
        rmp_serde::encode::write(&mut self.journal_buf, record).map_err(|e| IndexError::Corrupt {
            path: self.journal_file.clone(),
            reason: e.to_string(),
        })
    }

    /// Writes the buffered journal records to the file. Call it before a
    /// journaled change is reported or made on disk: the records are then
    /// written (not fsynced: they survive the process being killed, as
    /// the page cache does, but not a power cut).
    fn flush_journal(&mut self) -> Result<(), IndexError> {
        if self.journal_buf.is_empty() {
            return Ok(());
        }
        let io_err = |source| IndexError::Io {
            path: self.journal_file.clone(),
            source,
        };
        if self.journal.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_file)
                .map_err(io_err)?;
            self.journal = Some(f);
        }
        if let Some(f) = &mut self.journal {
            f.write_all(&self.journal_buf).map_err(io_err)?;
        }
        self.journal_buf.clear();
        Ok(())
    }

    /// The journal's records found at load (each once): versions that were
    /// being applied when the process last stopped without saving.
    fn take_journal(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.replay)
    }

    /// The entry for `path`.
    fn get(&self, path: &RelPath) -> Option<LocalEntry> {
        self.entries.get(path).cloned()
    }

    /// Records `entry` with the stat it was recorded at.
    fn put(&mut self, entry: FileEntry, stat: Option<Stat>) {
        self.dirty = true;
        self.entries
            .insert(entry.path.clone(), LocalEntry { entry, stat });
    }

    fn remove(&mut self, path: &RelPath) {
        if self.entries.remove(path).is_some() {
            self.dirty = true;
        }
    }

    /// Updates only the recorded stat of `path`.
    fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>) {
        if let Some(e) = self.entries.get_mut(path) {
            if e.stat != stat {
                e.stat = stat;
                self.dirty = true;
            }
        }
    }

    /// Every entry.
    fn entries(&self) -> Box<dyn Iterator<Item = LocalEntry> + '_> {
        Box::new(self.entries.values().cloned())
    }

    /// Paths of entries at `dir` or below it.
    fn paths_within(&self, dir: &RelPath) -> Vec<RelPath> {
        self.entries
            .range(dir.clone()..)
            .take_while(|(p, _)| p.as_str().starts_with(dir.as_str()))
            .filter(|(p, _)| p.is_within(dir))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Number of entries.
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zync_proto::{Hash, VersionVector};

    #[test]
    fn survives_a_restart_and_keeps_the_device_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        let mut version = VersionVector::new();
        version.bump("me");
        let e = FileEntry {
            path: RelPath::new("a/b").unwrap(),
            size: 0,
            mtime_ns: 5,
            sha256: Hash::EMPTY,
            blocks: vec![],
            version,
            deleted: false,
            modified_by: "me".into(),
            lengths: Vec::new(),
        };
        let st = Stat {
            size: 0,
            mtime_ns: 5,
            ino: 9,
        };
        ix.put(e.clone(), Some(st));
        ix.save().unwrap();
        let again = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(again.device, ix.device);
        let got = again.get(&e.path).unwrap();
        assert_eq!(got.entry, e);
        assert_eq!(got.stat, Some(st));
        assert_eq!(
            again.paths_within(&RelPath::new("a").unwrap()),
            vec![e.path.clone()]
        );
        assert!(again
            .paths_within(&RelPath::new("a/bc").unwrap())
            .is_empty());
    }

    #[test]
    fn corrupt_index_is_moved_aside_and_replaced_by_a_new_replica() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = LocalIndex::load(dir.path()).unwrap();
        old.save().unwrap();
        let garbage = b"\xc1\xc1 not msgpack";
        std::fs::write(dir.path().join(FILE_NAME), garbage).unwrap();
        let ix = LocalIndex::load(dir.path()).unwrap();
        let (aside, reason) = ix.recovered.clone().unwrap();
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            garbage,
            "kept for inspection"
        );
        assert!(!reason.is_empty());
        assert!(ix.is_empty());
        assert_ne!(ix.replica("p"), old.replica("p"), "a new replica id");
        assert!(ix.replica("p").starts_with("p@"));
    }

    fn entry(path: &str, by: &str) -> FileEntry {
        let mut version = VersionVector::new();
        version.bump(by);
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size: 1,
            mtime_ns: 5,
            sha256: Hash::of(b"x"),
            blocks: vec![],
            version,
            deleted: false,
            modified_by: by.into(),
            lengths: Vec::new(),
        }
    }

    #[test]
    fn journaled_versions_are_handed_back_after_a_crash_and_a_save_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        ix.save().unwrap();
        let a = Record::Remote {
            entry: entry("a", "p1"),
            ino: Some(7),
        };
        let b = Record::Local {
            entry: entry("d/b", "p2"),
            stat: None,
        };
        ix.journal(&a).unwrap();
        ix.flush_journal().unwrap();
        ix.journal(&b).unwrap();
        ix.flush_journal().unwrap();
        ix.journal(&Record::Local {
            entry: entry("never/flushed", "p2"),
            stat: None,
        })
        .unwrap();
        drop(ix); // killed before the next save
        let mut again = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(again.take_journal(), vec![a.clone(), b]);
        assert!(again.take_journal().is_empty(), "handed over once");
        again.put(entry("a", "p1"), None);
        again.save().unwrap();
        let mut third = LocalIndex::load(dir.path()).unwrap();
        assert!(
            third.take_journal().is_empty(),
            "a save empties the journal"
        );
        let c = Record::Remote {
            entry: entry("c", "p3"),
            ino: None,
        };
        third.journal(&c).unwrap();
        third.flush_journal().unwrap();
        third.put(entry("c", "p3"), None);
        third.save().unwrap();
        assert!(LocalIndex::load(dir.path())
            .unwrap()
            .take_journal()
            .is_empty());
    }

    #[test]
    fn a_journal_record_cut_short_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        let [a, b] = ["a", "b"].map(|p| Record::Remote {
            entry: entry(p, "p1"),
            ino: None,
        });
        ix.journal(&a).unwrap();
        ix.journal(&b).unwrap();
        ix.flush_journal().unwrap();
        drop(ix);
        let path = dir.path().join(JOURNAL_NAME);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let mut again = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(again.take_journal(), vec![a]);
    }

    #[test]
    fn a_save_is_due_only_with_changes_and_not_sooner_than_the_least_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        ix.save().unwrap();
        assert_eq!(ix.save_due(), None, "nothing to save");
        let before = Instant::now();
        ix.put(entry("a", "me"), None);
        let due = ix.save_due().expect("a change is due to be saved");
        assert!(due >= ix.last_save + SAVE_EVERY);
        assert!(due <= before + SAVE_AT_MOST_EVERY);
        ix.save().unwrap();
        assert_eq!(ix.save_due(), None);
        // Only a real change makes a save due: the same stat again is none.
        ix.set_stat(&RelPath::new("a").unwrap(), None);
        assert_eq!(ix.save_due(), None);
    }
}
