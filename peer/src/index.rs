//! The peer's local index: for every path it has seen, the version it holds
//! and the file's stat when that version was recorded. Persisted in the
//! state folder so a restart neither re-hashes unchanged files nor forgets
//! versions (and tombstones).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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

#[derive(Serialize, Deserialize)]
struct IndexFile {
    format: u32,
    device: u64,
    entries: Vec<LocalEntry>,
}

const FORMAT: u32 = 1;
const FILE_NAME: &str = "index.msgpack";

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

/// The local index and where it is saved.
pub struct LocalIndex {
    /// This folder's random device id, stable across restarts.
    pub device: u64,
    entries: BTreeMap<RelPath, LocalEntry>,
    file: PathBuf,
    dirty: bool,
}

impl LocalIndex {
    /// Loads the index from `state_dir`, or starts an empty one with a new
    /// device id if there is none.
    pub fn load(state_dir: &Path) -> Result<LocalIndex, IndexError> {
        let file = state_dir.join(FILE_NAME);
        let io_err = |source| IndexError::Io {
            path: file.clone(),
            source,
        };
        match std::fs::read(&file) {
            Ok(bytes) => {
                let parsed: IndexFile =
                    rmp_serde::from_slice(&bytes).map_err(|e| IndexError::Corrupt {
                        path: file.clone(),
                        reason: e.to_string(),
                    })?;
                if parsed.format != FORMAT {
                    return Err(IndexError::Corrupt {
                        path: file,
                        reason: format!("unknown format {}", parsed.format),
                    });
                }
                let entries = parsed
                    .entries
                    .into_iter()
                    .map(|e| (e.entry.path.clone(), e))
                    .collect();
                Ok(LocalIndex {
                    device: parsed.device,
                    entries,
                    file,
                    dirty: false,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalIndex {
                device: rand::random::<u64>() | 1,
                entries: BTreeMap::new(),
                file,
                dirty: true,
            }),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Writes the index atomically (temp file, fsync, rename) if it changed.
    pub fn save(&mut self) -> Result<(), IndexError> {
        if !self.dirty {
            return Ok(());
        }
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
        Ok(())
    }

    /// True when there are changes not yet saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The entry for `path`.
    pub fn get(&self, path: &RelPath) -> Option<&LocalEntry> {
        self.entries.get(path)
    }

    /// Records `entry` with the stat it was recorded at.
    pub fn put(&mut self, entry: FileEntry, stat: Option<Stat>) {
        self.dirty = true;
        self.entries
            .insert(entry.path.clone(), LocalEntry { entry, stat });
    }

    /// Updates only the recorded stat of `path`.
    pub fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>) {
        if let Some(e) = self.entries.get_mut(path) {
            if e.stat != stat {
                e.stat = stat;
                self.dirty = true;
            }
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = &LocalEntry> {
        self.entries.values()
    }

    /// Paths of entries at `dir` or below it.
    pub fn paths_within(&self, dir: &RelPath) -> Vec<RelPath> {
        self.entries
            .range(dir.clone()..)
            .take_while(|(p, _)| p.as_str().starts_with(dir.as_str()))
            .filter(|(p, _)| p.is_within(dir))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    fn corrupt_index_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"\xc1\xc1 not msgpack").unwrap();
        assert!(matches!(
            LocalIndex::load(dir.path()),
            Err(IndexError::Corrupt { .. })
        ));
    }
}
