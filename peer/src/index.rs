//! The peer's local index: for every path it has seen, the version it holds
//! and the file's stat when that version was recorded. Persisted in the
//! state folder so a restart neither re-hashes unchanged files nor forgets
//! versions (and tombstones).
//!
//! Version vectors count changes per *replica* ([`IndexStore::replica`]: the
//! peer's name and this index's random device id), not per peer name. An
//! index that is lost or corrupt is replaced by a new one with a new device
//! id, so the folder becomes a new replica: what it finds on disk then counts
//! as concurrent with the cluster's versions, never as older, and a local
//! edit it cannot place in history is kept (as a conflict copy if it loses)
//! instead of being overwritten.
//!
//! [`LocalIndex`] keeps it in an embedded database (redb: `index.redb`),
//! one record per path, so a save writes what changed, not the whole index,
//! and memory holds only the changes not yet saved. Saves still come in
//! batches (a commit costs an fsync), so between two saves every change is
//! also appended to a small journal ([`Record`]): a local version before it
//! is reported to the tracker, a remote version before the disk is changed
//! to match it. Without it, a crash before the next save lost those
//! records: a file downloaded and renamed into place was then taken by the
//! start-up scan for a new local edit (which beats a deletion made
//! meanwhile, and brought the file back everywhere), and a local file
//! already reported but no longer on disk was never reported gone (so the
//! cluster sent it back). On load the journal's records are handed to the
//! engine ([`IndexStore::take_journal`]), which adopts the local ones and
//! each remote one the disk shows was applied; a save empties the journal.
//!
//! An index of the previous format (`index.msgpack`, one file rewritten
//! whole) is carried over into the database on first start, device id
//! included, and then removed.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use zync_proto::{FileEntry, Hash, RelPath};

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

impl LocalEntry {
    /// The version the block server may serve for this path: every entry
    /// that is not a tombstone and has a file on disk (a recorded stat).
    pub fn served(&self) -> Option<&FileEntry> {
        (!self.entry.deleted && self.stat.is_some()).then_some(&self.entry)
    }
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

/// The index of the previous format: one MessagePack file, rewritten
/// whole on every save. Read once, to carry it over into the database.
#[derive(Serialize, Deserialize)]
struct LegacyFile {
    format: u32,
    device: u64,
    entries: Vec<LocalEntry>,
}

const LEGACY_FORMAT: u32 = 1;
const LEGACY_NAME: &str = "index.msgpack";
const DB_NAME: &str = "index.redb";
const JOURNAL_NAME: &str = "journal.msgpack";

/// Every path's [`LocalEntry`], MessagePack-encoded, keyed by the path.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// Where the blocks of served files are ([`LocalEntry::served`]): the
/// block's hash and the path as one key (hash first, so the paths holding
/// a block are one range), the block's offset as the value. It lets a
/// download take a block from a local file without a map in memory.
const BLOCKS: TableDefinition<&[u8], u64> = TableDefinition::new("blocks");
/// `device` (the replica's id), `format`, and `blocks` (set once the
/// blocks table covers every entry); an index without a device was never
/// finished being made.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The database's page cache. redb's default (1 GiB) would hold a whole
/// large index in memory; reads of a path are rare enough (a file changed,
/// a version arrived) that the OS page cache serves the rest.
const CACHE_BYTES: usize = 16 << 20;

/// The database's layout, in `META`.
const FORMAT: u64 = 2;

/// Reads the index of the previous format in `state_dir`: `None` if there
/// is none, else its device id and entries, or why it is unreadable.
fn read_legacy(state_dir: &Path) -> Result<Option<Result<LegacyFile, String>>, io::Error> {
    let bytes = match std::fs::read(state_dir.join(LEGACY_NAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let parsed = rmp_serde::from_slice::<LegacyFile>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|p| match p.format {
            LEGACY_FORMAT => Ok(p),
            other => Err(format!("unknown format {other}")),
        });
    Ok(Some(parsed))
}

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

/// The journal file beside the index: the changes since the last save.
struct Journal {
    file: PathBuf,
    handle: Option<std::fs::File>,
    /// Records not yet written to the file ([`Journal::flush`]).
    buf: Vec<u8>,
    /// A journal file was there at load: the next save removes it.
    stale: bool,
    /// Records found in it at load, for the engine to check against the disk.
    replay: Vec<Record>,
}

impl Journal {
    fn open(state_dir: &Path) -> Journal {
        let file = state_dir.join(JOURNAL_NAME);
        Journal {
            stale: file.exists(),
            replay: read_journal(&file),
            file,
            handle: None,
            buf: Vec::new(),
        }
    }

    fn err(&self) -> impl Fn(io::Error) -> IndexError + '_ {
        |source| IndexError::Io {
            path: self.file.clone(),
            source,
        }
    }

    fn add(&mut self, record: &Record) -> Result<(), IndexError> {
        // By field name: an entry's optional fields are left out when
        // empty, which only names keep apart.
        rmp_serde::encode::write_named(&mut self.buf, record).map_err(|e| IndexError::Corrupt {
            path: self.file.clone(),
            reason: e.to_string(),
        })
    }

    fn flush(&mut self) -> Result<(), IndexError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.handle.is_none() {
            let f = crate::fsops::private_file()
                .append(true)
                .open(&self.file)
                .map_err(self.err())?;
            self.handle = Some(f);
        }
        if let Some(f) = &mut self.handle {
            f.write_all(&self.buf).map_err(|source| IndexError::Io {
                path: self.file.clone(),
                source,
            })?;
        }
        self.buf.clear();
        Ok(())
    }

    /// Everything journaled is saved in the index: empty the journal.
    fn clear(&mut self) -> Result<(), IndexError> {
        self.buf.clear();
        if let Some(j) = &self.handle {
            j.set_len(0).map_err(self.err())?;
        } else if self.stale {
            match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.err()(e)),
                _ => {}
            }
        }
        self.stale = false;
        Ok(())
    }
}

/// Errors reading or writing the index.
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
    /// The database refused an operation.
    #[error("index {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },
    /// Another process has this folder's index open.
    #[error("index {path} is in use by another process (is another peer running on this folder?)")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
}

/// Where a folder's index lives: what [`crate::folder::Folder`] reads and
/// writes, and all it needs of a store ([`LocalIndex`]: an embedded
/// database with a journal beside it).
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

    /// The stat `path`'s entry was recorded at (`None`: no entry, or no
    /// file of ours there).
    fn recorded_stat(&self, path: &RelPath) -> Option<Stat> {
        self.get(path).and_then(|l| l.stat)
    }

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

    /// A read-only handle for other threads, which sees every change at
    /// once (saved or not).
    fn reader(&self) -> IndexReader;
}

/// Least time between two saves of a [`LocalIndex`]. It is saved as soon
/// as a batch of changes is applied (so a crash loses at most this much),
/// but not more often than this: each save is a commit, and a commit an
/// fsync. Losing the last unsaved changes in a crash is harmless: the
/// journal holds every change that was reported or made on disk; a file
/// installed but not recorded is re-hashed and, having the cluster's
/// content, merges with its version; a local edit not recorded is found by
/// the next scan.
const SAVE_EVERY: Duration = Duration::from_millis(50);

/// Most time between two saves, however long the last one took.
const MOST_PAUSE: Duration = Duration::from_secs(1);

/// The pause before the next save, after one that took `took`: at least
/// [`SAVE_EVERY`], and four times what the last save took, so saving never
/// takes more than a fifth of the engine's time. Under a heavy stream of
/// changes (a late joiner installing thousands of files a second) saves
/// then come larger and fewer, and each costs less per change: a commit
/// rewrites the tree's pages on the path to every leaf it touches, and
/// ends in an fsync. The journal holds every change in between.
fn pause_after(took: Duration) -> Duration {
    (took * 4).clamp(SAVE_EVERY, MOST_PAUSE)
}

/// The local index: an embedded database (`index.redb`), the changes not
/// yet saved, and the journal (`journal.msgpack`) of those since the last
/// save.
pub struct LocalIndex {
    /// This folder's random device id, stable across restarts.
    pub device: u64,
    /// Set when the saved index was unreadable and a new one was started:
    /// where the old file was moved and why.
    pub recovered: Option<(PathBuf, String)>,
    /// Set when an index of the previous format was carried over: how many
    /// entries it held.
    pub upgraded: Option<usize>,
    /// The database and the unsaved changes, shared with every
    /// [`IndexReader`].
    shared: IndexReader,
    len: usize,
    journal: Journal,
    last_save: Instant,
    /// Least time from the last save to the next ([`pause_after`]).
    pause: Duration,
}

/// The changes not yet saved (`None`: the entry was removed); they hide
/// what the database holds for the same path.
#[derive(Default)]
struct Pending {
    changes: BTreeMap<RelPath, Option<LocalEntry>>,
    /// The blocks of the served files among `changes`, by block hash,
    /// with their offsets (what [`BLOCKS`] will hold for them once saved).
    blocks: HashMap<Hash, Vec<(RelPath, u64)>>,
}

impl Pending {
    fn set(&mut self, path: &RelPath, change: Option<LocalEntry>) {
        if let Some(old) = self.changes.get(path).and_then(Option::as_ref) {
            for b in old.served().map_or(&[][..], |e| &e.blocks) {
                if let Some(at) = self.blocks.get_mut(b) {
                    at.retain(|(p, _)| p != path);
                    if at.is_empty() {
                        self.blocks.remove(b);
                    }
                }
            }
        }
        if let Some(e) = change.as_ref().and_then(LocalEntry::served) {
            for (b, (offset, _)) in e.blocks.iter().zip(e.spans()) {
                let at = self.blocks.entry(*b).or_default();
                if !at.iter().any(|(p, _)| p == path) {
                    at.push((path.clone(), offset));
                }
            }
        }
        self.changes.insert(path.clone(), change);
    }
}

/// A read-only handle on a [`LocalIndex`] for other threads (the block
/// server, download workers): what the folder serves, and where a block
/// of a served file is. It sees the unsaved changes too, so it answers as
/// the index does at every moment, and it reads the rest from the
/// database (whose readers never wait for its writer), so memory does not
/// grow with the folder.
#[derive(Clone)]
pub struct IndexReader {
    db: Arc<Database>,
    pending: Arc<RwLock<Pending>>,
    /// The tables as of the last commit, opened once and shared: opening a
    /// read transaction and its tables for every lookup cost more than the
    /// lookup. Only the writer replaces it, right after each commit and
    /// before it lets go of the changes that commit saved, so a reader that
    /// no longer finds a change among the unsaved ones finds it here.
    snapshot: Arc<RwLock<Option<Arc<Snapshot>>>>,
    file: PathBuf,
}

/// The saved tables as of one commit.
struct Snapshot {
    entries: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    blocks: redb::ReadOnlyTable<&'static [u8], u64>,
}

impl Snapshot {
    fn of(db: &Database) -> Result<Snapshot, redb::Error> {
        let txn = db.begin_read()?;
        Ok(Snapshot {
            entries: txn.open_table(ENTRIES)?,
            blocks: txn.open_table(BLOCKS)?,
        })
    }
}

impl IndexReader {
    /// The content `path` is served with, and its size, if it is served.
    pub fn served(&self, path: &RelPath) -> Option<(Hash, u64)> {
        // The lock is let go before the database is read.
        let unsaved = self.pending().changes.get(path).cloned();
        let found = match unsaved {
            Some(change) => change,
            None => self.saved(path.as_str()),
        };
        found
            .as_ref()
            .and_then(LocalEntry::served)
            .map(|e| (e.sha256, e.size))
    }

    /// A served file holding a block with hash `block`, and the block's
    /// offset in it.
    pub fn find_block(&self, block: &Hash) -> Option<(RelPath, u64)> {
        let pending = self.pending();
        if let Some((path, at)) = pending.blocks.get(block).and_then(|at| at.first()) {
            return Some((path.clone(), *at));
        }
        let run = || -> Result<Option<(RelPath, u64)>, redb::Error> {
            let snap = self.snapshot()?;
            for row in snap.blocks.range(block.as_bytes().as_slice()..)? {
                let (key, at) = row?;
                let Some(path) = key.value().strip_prefix(block.as_bytes().as_slice()) else {
                    break; // past the block's range
                };
                let path = std::str::from_utf8(path)
                    .ok()
                    .and_then(|p| RelPath::new(p).ok())
                    .ok_or_else(|| redb_corrupt("a block key without a path".into()))?;
                // An unsaved change of the path decides (and was looked at above).
                if !pending.changes.contains_key(&path) {
                    return Ok(Some((path, at.value())));
                }
            }
            Ok(None)
        };
        run().unwrap_or_else(|e| {
            tracing::error!(file = %self.file.display(), error = %e, "cannot read the index");
            None
        })
    }

    /// The unsaved changes. A writer that panicked left them as they were
    /// (each change is one insert), so a poisoned lock is still read.
    fn pending(&self) -> RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|e| e.into_inner())
    }

    fn pending_mut(&self) -> RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The saved tables as of the last commit.
    fn snapshot(&self) -> Result<Arc<Snapshot>, redb::Error> {
        let cached = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some(snap) => Ok(snap.clone()),
            // Refreshing failed after the last commit: a fresh look each time.
            None => Ok(Arc::new(Snapshot::of(&self.db)?)),
        }
    }

    /// Takes the tables as of the commit just made. Called by the writer
    /// only, before it drops the unsaved changes that commit saved.
    fn refresh(&self) {
        let fresh = Snapshot::of(&self.db)
            .map_err(|e| {
                tracing::warn!(file = %self.file.display(), error = %e, "cannot open the index for reading");
            })
            .ok()
            .map(Arc::new);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// The saved entry for `path`. A database that cannot be read is
    /// logged and reads as no entry.
    fn saved(&self, path: &str) -> Option<LocalEntry> {
        self.read(path, decode)
    }

    /// `read` of the saved record of `path`, if there is one. A database
    /// that cannot be read is logged and reads as no record.
    fn read<T>(&self, path: &str, read: impl FnOnce(&[u8]) -> Result<T, String>) -> Option<T> {
        let run = || -> Result<Option<T>, redb::Error> {
            let snap = self.snapshot()?;
            let got = snap.entries.get(path)?;
            got.map(|v| read(v.value()).map_err(redb_corrupt))
                .transpose()
        };
        run().unwrap_or_else(|e| {
            tracing::error!(path = %path, file = %self.file.display(), error = %e, "cannot read the index");
            None
        })
    }
}

/// The tables of one write transaction.
struct Tables<'t> {
    entries: redb::Table<'t, &'static str, &'static [u8]>,
    blocks: redb::Table<'t, &'static [u8], u64>,
    meta: redb::Table<'t, &'static str, u64>,
}

/// The key of `block` of the served file `path` in [`BLOCKS`].
fn block_key(block: &Hash, path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(32 + path.len());
    key.extend_from_slice(block.as_bytes());
    key.extend_from_slice(path.as_bytes());
    key
}

impl Tables<'_> {
    /// Fills the blocks table from the entries: an index made before it
    /// existed gets it on first open, in the same transaction.
    fn fill_blocks(&mut self) -> Result<(), redb::Error> {
        let mut n = 0usize;
        for row in self.entries.iter()? {
            let (path, bytes) = row?;
            let Ok(le) = decode(bytes.value()) else {
                continue; // reported when it is read
            };
            if let Some(e) = le.served() {
                add_blocks(&mut self.blocks, path.value(), e)?;
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(files = n, "index: listed the blocks of every served file");
        }
        Ok(())
    }

    /// Records `change` for `path` (`None`: removes its entry), and keeps
    /// the blocks table in step with what is served.
    fn set(&mut self, path: &str, change: Option<&LocalEntry>) -> Result<(), redb::Error> {
        let old = match change {
            Some(le) => {
                let bytes = encode(le).map_err(redb_corrupt)?;
                let old = self.entries.insert(path, bytes.as_slice())?;
                old.and_then(|v| decode(v.value()).ok())
            }
            None => {
                let old = self.entries.remove(path)?;
                old.and_then(|v| decode(v.value()).ok())
            }
        };
        // An old record that cannot be decoded leaves its block keys: a
        // stale one costs a read that fails its hash check, nothing more.
        let old = old.as_ref().and_then(LocalEntry::served);
        let new = change.and_then(LocalEntry::served);
        if let (Some(o), Some(n)) = (old, new) {
            if o.blocks == n.blocks && o.lengths == n.lengths {
                return Ok(()); // served with the same blocks (a new stat)
            }
        }
        for b in old.map_or(&[][..], |e| &e.blocks) {
            self.blocks.remove(block_key(b, path).as_slice())?;
        }
        if let Some(e) = new {
            add_blocks(&mut self.blocks, path, e)?;
        }
        Ok(())
    }
}

/// Lists every block of the served file `e` at `path` in the blocks table.
fn add_blocks(
    blocks: &mut redb::Table<'_, &'static [u8], u64>,
    path: &str,
    e: &FileEntry,
) -> Result<(), redb::Error> {
    for (b, (offset, _)) in e.blocks.iter().zip(e.spans()) {
        blocks.insert(block_key(b, path).as_slice(), offset)?;
    }
    Ok(())
}

/// Encodes an entry for the database (fields by name, as on the wire, so
/// a field added later reads as its default).
fn encode(le: &LocalEntry) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(le).map_err(|e| e.to_string())
}

fn decode(bytes: &[u8]) -> Result<LocalEntry, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

impl LocalIndex {
    /// Opens the index in `state_dir`, or starts an empty one with a new
    /// device id if there is none; an index of the previous format is
    /// carried over first. An unreadable index is moved aside (to
    /// `index.redb.corrupt`, for inspection) and a new one is started, as
    /// if it had been lost ([`LocalIndex::recovered`] says so).
    pub fn load(state_dir: &Path) -> Result<LocalIndex, IndexError> {
        let file = state_dir.join(DB_NAME);
        let journal = Journal::open(state_dir);
        let (db, meta) = match open_db(&file)? {
            Ok(opened) => opened,
            Err(reason) => {
                let aside = state_dir.join(format!("{DB_NAME}.corrupt"));
                std::fs::rename(&file, &aside).map_err(|source| IndexError::Io {
                    path: file.clone(),
                    source,
                })?;
                let (db, meta) = match open_db(&file)? {
                    Ok(opened) => opened,
                    Err(again) => {
                        return Err(IndexError::Corrupt {
                            path: file,
                            reason: again,
                        })
                    }
                };
                let mut ix = LocalIndex::made(db, file, meta, journal)?;
                ix.recovered = Some((aside, reason));
                return Ok(ix);
            }
        };
        let mut ix = LocalIndex::made(db, file, meta, journal)?;
        if meta.is_none() {
            ix.carry_over(state_dir)?;
        }
        Ok(ix)
    }

    /// An index on `db`, whose device id `meta` gives (`None`: a new one,
    /// saved at once).
    fn made(
        db: Database,
        file: PathBuf,
        meta: Option<(u64, usize)>,
        journal: Journal,
    ) -> Result<LocalIndex, IndexError> {
        let (device, len) = meta.unwrap_or((rand::random::<u64>() | 1, 0));
        let ix = LocalIndex {
            device,
            recovered: None,
            upgraded: None,
            shared: IndexReader {
                db: Arc::new(db),
                pending: Arc::default(),
                snapshot: Arc::default(),
                file,
            },
            len,
            journal,
            last_save: Instant::now(),
            pause: SAVE_EVERY,
        };
        ix.shared.refresh();
        if meta.is_none() {
            ix.commit(|t| {
                t.meta.insert("device", device)?;
                t.meta.insert("format", FORMAT)?;
                Ok(())
            })?;
        }
        Ok(ix)
    }

    /// Carries an index of the previous format over (device id and every
    /// entry, in one commit), then removes it. An unreadable one is moved
    /// aside, as an unreadable database would be.
    fn carry_over(&mut self, state_dir: &Path) -> Result<(), IndexError> {
        let legacy = state_dir.join(LEGACY_NAME);
        let io_err = |source| IndexError::Io {
            path: legacy.clone(),
            source,
        };
        match read_legacy(state_dir).map_err(io_err)? {
            None => Ok(()),
            Some(Err(reason)) => {
                let aside = state_dir.join(format!("{LEGACY_NAME}.corrupt"));
                std::fs::rename(&legacy, &aside).map_err(io_err)?;
                self.recovered = Some((aside, reason));
                Ok(())
            }
            Some(Ok(old)) => {
                let n = old.entries.len();
                self.commit(|t| {
                    for le in &old.entries {
                        t.set(le.entry.path.as_str(), Some(le))?;
                    }
                    t.meta.insert("device", old.device)?;
                    Ok(())
                })?;
                self.device = old.device;
                self.len = self.count()?;
                std::fs::remove_file(&legacy).map_err(io_err)?;
                self.upgraded = Some(n);
                Ok(())
            }
        }
    }

    /// Runs `write` on the tables in one write transaction, and commits it
    /// (durably: it returns once on disk).
    fn commit(
        &self,
        write: impl FnOnce(&mut Tables<'_>) -> Result<(), redb::Error>,
    ) -> Result<(), IndexError> {
        let run = || -> Result<(), redb::Error> {
            let txn = self.shared.db.begin_write()?;
            {
                let mut t = Tables {
                    entries: txn.open_table(ENTRIES)?,
                    blocks: txn.open_table(BLOCKS)?,
                    meta: txn.open_table(META)?,
                };
                write(&mut t)?;
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(|source| self.db_err(source))?;
        self.shared.refresh();
        Ok(())
    }

    fn db_err(&self, source: redb::Error) -> IndexError {
        IndexError::Db {
            path: self.shared.file.clone(),
            source,
        }
    }

    /// How many entries the database holds.
    fn count(&self) -> Result<usize, IndexError> {
        let run = || -> Result<u64, redb::Error> { Ok(self.shared.snapshot()?.entries.len()?) };
        run().map(|n| n as usize).map_err(|e| self.db_err(e))
    }

    /// The saved entries from `start` on, in path order.
    fn saved_from(&self, start: &str) -> Box<dyn Iterator<Item = LocalEntry>> {
        let run = || -> Result<redb::OwnedRange<&'static str, &'static [u8]>, redb::Error> {
            Ok(self.shared.snapshot()?.entries.range_owned(start..)?)
        };
        let file = self.shared.file.clone();
        match run() {
            Ok(range) => Box::new(range.filter_map(move |r| {
                let read = r
                    .map_err(|e| e.to_string())
                    .and_then(|(_, v)| decode(v.value()));
                read.map_err(|e| {
                    tracing::error!(file = %file.display(), error = %e, "cannot read an index entry");
                })
                .ok()
            })),
            Err(e) => {
                tracing::error!(file = %self.shared.file.display(), error = %e, "cannot read the index");
                Box::new(std::iter::empty())
            }
        }
    }

    /// Whether `path` has an entry, saved or not.
    fn has(&self, path: &RelPath) -> bool {
        if let Some(p) = self.shared.pending().changes.get(path) {
            return p.is_some();
        }
        // The key alone: no need to decode the entry.
        self.shared.read(path.as_str(), |_| Ok(())).is_some()
    }

    /// Every entry from `start` on, in path order: the saved ones, with the
    /// changes not yet saved laid over them.
    fn merged<'a>(&'a self, start: Option<&RelPath>) -> impl Iterator<Item = LocalEntry> + 'a {
        Merged {
            saved: self.saved_from(start.map_or("", |p| p.as_str())).peekable(),
            pending: &self.shared,
            next_pending: None,
            after: start.cloned().map(std::ops::Bound::Included),
        }
    }
}

/// A MessagePack problem inside a database read or write.
fn redb_corrupt(reason: String) -> redb::Error {
    redb::Error::Corrupted(reason)
}

/// Opens (or creates) the database at `file`: the database and, if it was
/// made before, its device id and number of entries. The inner error is
/// why it cannot be used as an index (to move it aside); the outer one, a
/// failure to move aside for (the file is in use, or cannot be written).
#[allow(clippy::type_complexity)]
fn open_db(file: &Path) -> Result<Result<(Database, Option<(u64, usize)>), String>, IndexError> {
    // Made 0600 (redb would make it as any new file): it names every path,
    // size and hash of the folder. One made before is made so too.
    {
        use std::os::unix::fs::PermissionsExt;
        let private = crate::fsops::private_file()
            .open(file)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)));
        if let Err(e) = private {
            tracing::warn!(path = %file.display(), error = %e, "cannot make the index private");
        }
    }
    let db = match Database::builder().set_cache_size(CACHE_BYTES).create(file) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(IndexError::InUse {
                path: file.to_owned(),
            })
        }
        // Not a database (redb reads its header as I/O): moved aside below.
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(source)))
            if !matches!(
                source.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Err(IndexError::Io {
                path: file.to_owned(),
                source,
            })
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let run = || -> Result<Option<(u64, usize)>, redb::Error> {
        let txn = db.begin_write()?;
        let meta = {
            let mut t = Tables {
                entries: txn.open_table(ENTRIES)?,
                blocks: txn.open_table(BLOCKS)?,
                meta: txn.open_table(META)?,
            };
            let device = t.meta.get("device")?.map(|v| v.value());
            let format = t.meta.get("format")?.map(|v| v.value());
            if format.is_some_and(|f| f != FORMAT) {
                return Err(redb_corrupt(format!("unknown format {format:?}")));
            }
            if t.meta.get("blocks")?.is_none() {
                t.fill_blocks()?;
                t.meta.insert("blocks", 1)?;
            }
            device.map(|d| Ok::<_, redb::Error>((d, t.entries.len()? as usize)))
        }
        .transpose()?;
        txn.commit()?;
        Ok(meta)
    };
    Ok(match run() {
        Ok(meta) => Ok((db, meta)),
        Err(e) => Err(e.to_string()),
    })
}

/// Saved entries and unsaved changes, merged in path order. The unsaved
/// changes are read one at a time (each under a short read lock: the
/// block server reads them too), after the last one taken.
struct Merged<'a, S: Iterator<Item = LocalEntry>> {
    saved: std::iter::Peekable<S>,
    pending: &'a IndexReader,
    /// The next unsaved change, taken out already.
    next_pending: Option<(RelPath, Option<LocalEntry>)>,
    /// Where the unsaved changes not taken yet start (`None`: at the start).
    after: Option<std::ops::Bound<RelPath>>,
}

impl<S: Iterator<Item = LocalEntry>> Merged<'_, S> {
    fn peek_pending(&mut self) -> Option<&RelPath> {
        use std::ops::Bound::{Excluded, Unbounded};
        if self.next_pending.is_none() {
            let from = self.after.clone().unwrap_or(Unbounded);
            let next = self
                .pending
                .pending()
                .changes
                .range((from, Unbounded))
                .next()
                .map(|(p, c)| (p.clone(), c.clone()));
            if let Some((p, _)) = &next {
                self.after = Some(Excluded(p.clone()));
            }
            self.next_pending = next;
        }
        self.next_pending.as_ref().map(|(p, _)| p)
    }
}

impl<S: Iterator<Item = LocalEntry>> Iterator for Merged<'_, S> {
    type Item = LocalEntry;

    fn next(&mut self) -> Option<LocalEntry> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        loop {
            let pending = self.peek_pending().cloned();
            let order = match (self.saved.peek(), &pending) {
                (None, None) => return None,
                (Some(_), None) => Less,
                (None, Some(_)) => Greater,
                (Some(s), Some(p)) => s.entry.path.cmp(p),
            };
            if order == Less {
                return self.saved.next();
            }
            if order == Equal {
                self.saved.next(); // hidden by the unsaved change
            }
            // A removal yields nothing: go on.
            if let Some((_, Some(le))) = self.next_pending.take() {
                return Some(le);
            }
        }
    }
}

impl IndexStore for LocalIndex {
    fn device(&self) -> u64 {
        self.device
    }

    /// Commits the changes not yet saved, in one transaction, and empties
    /// the journal.
    fn save(&mut self) -> Result<(), IndexError> {
        let t = Instant::now();
        // Readers go on seeing the unsaved changes until the commit is
        // done; only this thread changes them, so none is missed.
        let changes = {
            let pending = self.shared.pending();
            if pending.changes.is_empty() {
                return Ok(());
            }
            self.commit(|t| {
                for (path, change) in &pending.changes {
                    t.set(path.as_str(), change.as_ref())?;
                }
                Ok(())
            })?; // on failure they stay, for the next try
            pending.changes.len()
        };
        *self.shared.pending_mut() = Pending::default();
        self.journal.clear()?;
        self.last_save = Instant::now();
        self.pause = pause_after(self.last_save.duration_since(t));
        tracing::debug!(
            changes,
            entries = self.len,
            ms = self.last_save.duration_since(t).as_millis() as u64,
            "index saved"
        );
        Ok(())
    }

    fn save_due(&self) -> Option<Instant> {
        let unsaved = !self.shared.pending().changes.is_empty();
        unsaved.then(|| self.last_save + self.pause)
    }

    /// Adds `record` to the journal, buffered: it reaches the file with the
    /// next [`IndexStore::flush_journal`] (or is made moot by a save).
    fn journal(&mut self, record: &Record) -> Result<(), IndexError> {
        self.journal.add(record)
    }

    /// Writes the buffered journal records to the file. Call it before a
    /// journaled change is reported or made on disk: the records are then
    /// written (not fsynced: they survive the process being killed, as
    /// the page cache does, but not a power cut).
    fn flush_journal(&mut self) -> Result<(), IndexError> {
        self.journal.flush()
    }

    /// The journal's records found at load (each once): versions that were
    /// being applied when the process last stopped without saving.
    fn take_journal(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.journal.replay)
    }

    /// The entry for `path`.
    fn get(&self, path: &RelPath) -> Option<LocalEntry> {
        if let Some(change) = self.shared.pending().changes.get(path) {
            return change.clone();
        }
        self.shared.saved(path.as_str())
    }

    /// Without copying an unsaved entry: the engine asks this several
    /// times for every file it installs.
    fn recorded_stat(&self, path: &RelPath) -> Option<Stat> {
        if let Some(change) = self.shared.pending().changes.get(path) {
            return change.as_ref().and_then(|l| l.stat);
        }
        self.shared.saved(path.as_str()).and_then(|l| l.stat)
    }

    /// Records `entry` with the stat it was recorded at.
    fn put(&mut self, entry: FileEntry, stat: Option<Stat>) {
        if !self.has(&entry.path) {
            self.len += 1;
        }
        let path = entry.path.clone();
        self.shared
            .pending_mut()
            .set(&path, Some(LocalEntry { entry, stat }));
    }

    fn remove(&mut self, path: &RelPath) {
        if self.has(path) {
            self.len -= 1;
            self.shared.pending_mut().set(path, None);
        }
    }

    /// Updates only the recorded stat of `path`.
    fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>) {
        if let Some(mut le) = self.get(path) {
            if le.stat != stat {
                le.stat = stat;
                self.shared.pending_mut().set(path, Some(le));
            }
        }
    }

    /// Every entry, in path order.
    fn entries(&self) -> Box<dyn Iterator<Item = LocalEntry> + '_> {
        Box::new(self.merged(None))
    }

    /// Paths of entries at `dir` or below it.
    fn paths_within(&self, dir: &RelPath) -> Vec<RelPath> {
        // Asked for the path of every watcher event, mostly of a file with
        // nothing below it: a look at the keys after `dir/` says so
        // without reading an entry.
        let below = format!("{dir}/");
        let saved_below = self
            .shared
            .snapshot()
            .and_then(|s| {
                let first = s.entries.range(below.as_str()..)?.next().transpose()?;
                Ok(first.is_some_and(|(k, _)| k.value().starts_with(&below)))
            })
            .unwrap_or(true);
        // Paths such as `dir.txt` sort between `dir` and `dir/`.
        let pending_below = self
            .shared
            .pending()
            .changes
            .range((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(|p| p.as_str().starts_with(dir.as_str()))
            .any(|p| p.is_within(dir));
        let mut paths = Vec::new();
        if self.has(dir) {
            paths.push(dir.clone());
        }
        if saved_below || pending_below {
            paths.extend(
                self.merged(Some(dir))
                    .take_while(|le| le.entry.path.as_str().starts_with(dir.as_str()))
                    .filter(|le| le.entry.path != *dir && le.entry.path.is_within(dir))
                    .map(|le| le.entry.path),
            );
        }
        paths
    }

    /// Number of entries.
    fn len(&self) -> usize {
        self.len
    }

    fn reader(&self) -> IndexReader {
        self.shared.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zync_proto::{Hash, VersionVector};

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
            mode: None,
        }
    }

    fn stat(ino: u64) -> Stat {
        Stat {
            size: 1,
            mtime_ns: 5,
            ino,
            mode: Some(0o644),
        }
    }

    fn paths(ix: &LocalIndex) -> Vec<String> {
        ix.entries()
            .map(|le| le.entry.path.as_str().to_owned())
            .collect()
    }

    #[test]
    fn survives_a_restart_and_keeps_the_device_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        let e = entry("a/b", "me");
        ix.put(e.clone(), Some(stat(9)));
        ix.save().unwrap();
        let device = ix.device;
        assert!(
            matches!(LocalIndex::load(dir.path()), Err(IndexError::InUse { .. })),
            "one process at a time"
        );
        drop(ix);
        let again = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(again.device, device);
        assert_eq!(again.len(), 1);
        let got = again.get(&e.path).unwrap();
        assert_eq!(got.entry, e);
        assert_eq!(got.stat, Some(stat(9)));
        assert_eq!(
            again.paths_within(&RelPath::new("a").unwrap()),
            vec![e.path.clone()]
        );
        assert!(again
            .paths_within(&RelPath::new("a/bc").unwrap())
            .is_empty());
    }

    #[test]
    fn unsaved_changes_hide_saved_entries_until_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        // Taken before any change: a reader follows every save.
        let reader = ix.reader();
        for p in ["a", "c", "d/x", "e"] {
            ix.put(entry(p, "me"), Some(stat(1)));
        }
        ix.save().unwrap();
        let e = RelPath::new("e").unwrap();
        assert!(reader.served(&e).is_some(), "saved and served");
        // Not saved yet: a new entry, a changed one, a removed one.
        ix.put(entry("b", "me"), None);
        ix.set_stat(&RelPath::new("c").unwrap(), Some(stat(2)));
        ix.remove(&RelPath::new("e").unwrap());
        ix.remove(&RelPath::new("never").unwrap());
        ix.put(entry("d/y", "me"), None);
        let check = |ix: &LocalIndex| {
            assert_eq!(paths(ix), ["a", "b", "c", "d/x", "d/y"]);
            assert_eq!(ix.len(), 5);
            assert_eq!(
                ix.get(&RelPath::new("c").unwrap()).unwrap().stat,
                Some(stat(2))
            );
            assert!(ix.get(&RelPath::new("e").unwrap()).is_none());
            let d = RelPath::new("d").unwrap();
            assert_eq!(ix.paths_within(&d).len(), 2);
        };
        check(&ix);
        assert!(reader.served(&e).is_none(), "removed, not saved yet");
        ix.save().unwrap();
        check(&ix);
        assert!(reader.served(&e).is_none(), "removed and saved");
        assert!(reader.served(&RelPath::new("c").unwrap()).is_some());
        drop((ix, reader));
        check(&LocalIndex::load(dir.path()).unwrap());
    }

    #[test]
    fn an_index_of_the_previous_format_is_carried_over_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let old = LegacyFile {
            format: LEGACY_FORMAT,
            device: 0xabcd_ef01_2345_6789,
            entries: vec![
                LocalEntry {
                    entry: entry("a", "p1"),
                    stat: Some(stat(3)),
                },
                LocalEntry {
                    entry: entry("d/b", "p2"),
                    stat: None,
                },
            ],
        };
        std::fs::write(
            dir.path().join(LEGACY_NAME),
            rmp_serde::to_vec_named(&old).unwrap(),
        )
        .unwrap();
        // A journal written by the old version is kept for the engine.
        let r = Record::Remote {
            entry: entry("j", "p1"),
            ino: Some(4),
        };
        std::fs::write(
            dir.path().join(JOURNAL_NAME),
            rmp_serde::to_vec(&r).unwrap(),
        )
        .unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(ix.upgraded, Some(2));
        assert_eq!(ix.device, old.device, "the same replica");
        assert_eq!(paths(&ix), ["a", "d/b"]);
        assert_eq!(
            ix.get(&RelPath::new("a").unwrap()).unwrap().stat,
            Some(stat(3))
        );
        assert_eq!(ix.take_journal(), vec![r]);
        assert!(!dir.path().join(LEGACY_NAME).exists(), "the old file goes");
        drop(ix);
        let again = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(again.upgraded, None, "once");
        assert_eq!(again.device, old.device);
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn an_index_made_before_the_blocks_table_gets_it_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let block = Hash::of(b"block");
        {
            let mut ix = LocalIndex::load(dir.path()).unwrap();
            let mut served = entry("a/served", "p1");
            served.blocks = vec![block];
            ix.put(served, Some(stat(1)));
            let mut awaited = entry("b/awaited", "p1");
            awaited.blocks = vec![Hash::of(b"other")];
            ix.put(awaited, None);
            ix.save().unwrap();
        }
        // What an index of the last release held: no blocks table, no flag.
        {
            let db = Database::create(dir.path().join(DB_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(BLOCKS).unwrap();
            txn.open_table(META).unwrap().remove("blocks").unwrap();
            txn.commit().unwrap();
        }
        let ix = LocalIndex::load(dir.path()).unwrap();
        let r = ix.reader();
        assert_eq!(
            r.find_block(&block),
            Some((RelPath::new("a/served").unwrap(), 0))
        );
        assert_eq!(
            r.find_block(&Hash::of(b"other")),
            None,
            "not served, not listed"
        );
        assert_eq!(
            r.served(&RelPath::new("a/served").unwrap()),
            Some((Hash::of(b"x"), 1))
        );
    }

    #[test]
    fn corrupt_index_is_moved_aside_and_replaced_by_a_new_replica() {
        let dir = tempfile::tempdir().unwrap();
        let old = LocalIndex::load(dir.path()).unwrap();
        let old_replica = old.replica("p");
        drop(old);
        let garbage = b"\xc1\xc1 not a database".repeat(100);
        std::fs::write(dir.path().join(DB_NAME), &garbage).unwrap();
        let ix = LocalIndex::load(dir.path()).unwrap();
        let (aside, reason) = ix.recovered.clone().unwrap();
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            garbage,
            "kept for inspection"
        );
        assert!(!reason.is_empty());
        assert!(ix.is_empty());
        assert_ne!(ix.replica("p"), old_replica, "a new replica id");
        assert!(ix.replica("p").starts_with("p@"));
    }

    #[test]
    fn journaled_versions_are_handed_back_after_a_crash_and_a_save_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
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
        drop(again);
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
        drop(third);
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
    fn paths_within_a_folder_are_found_saved_or_not_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        let within = |ix: &LocalIndex, d: &str| -> Vec<String> {
            let mut p: Vec<String> = ix
                .paths_within(&RelPath::new(d).unwrap())
                .iter()
                .map(|p| p.to_string())
                .collect();
            p.sort();
            p
        };
        // Siblings that sort between `d` and `d/`, saved.
        for p in ["d.txt", "d-x/y", "d/a"] {
            ix.put(entry(p, "me"), None);
        }
        ix.save().unwrap();
        assert_eq!(within(&ix, "d"), ["d/a"]);
        assert_eq!(within(&ix, "d/a"), ["d/a"], "a file is within itself");
        assert!(within(&ix, "d.txt/x").is_empty());
        // Unsaved: one more below, one more beside.
        ix.put(entry("d/b/c", "me"), None);
        ix.put(entry("d!", "me"), None);
        assert_eq!(within(&ix, "d"), ["d/a", "d/b/c"]);
        assert_eq!(within(&ix, "d/b"), ["d/b/c"]);
        // Only unsaved entries below a path that is saved.
        assert!(within(&ix, "d.txt").contains(&"d.txt".to_owned()));
        ix.put(entry("e", "me"), None);
        ix.save().unwrap();
        ix.put(entry("e/f", "me"), None);
        ix.remove(&RelPath::new("e").unwrap());
        assert_eq!(within(&ix, "e"), ["e/f"]);
        ix.remove(&RelPath::new("d/a").unwrap());
        assert_eq!(within(&ix, "d"), ["d/b/c"]);
    }

    #[test]
    fn saves_are_spaced_by_what_the_last_one_took_within_bounds() {
        assert_eq!(pause_after(Duration::ZERO), SAVE_EVERY);
        assert_eq!(
            pause_after(Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        assert_eq!(pause_after(Duration::from_secs(10)), MOST_PAUSE);
    }

    #[test]
    fn a_save_is_due_only_with_changes_and_not_sooner_than_the_least_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = LocalIndex::load(dir.path()).unwrap();
        assert_eq!(ix.save_due(), None, "nothing to save");
        ix.put(entry("a", "me"), None);
        let due = ix.save_due().expect("a change is due to be saved");
        assert_eq!(due, ix.last_save + ix.pause);
        assert!(ix.pause >= SAVE_EVERY);
        ix.save().unwrap();
        assert_eq!(ix.save_due(), None);
        // Only a real change makes a save due: the same stat again is none.
        ix.set_stat(&RelPath::new("a").unwrap(), None);
        assert_eq!(ix.save_due(), None);
    }
}
