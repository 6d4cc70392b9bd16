//! A synced folder's state, with one owner: [`Folder`] is the only way to
//! change the local index, and the set of files the block server may serve
//! follows from it by one rule, so the two can never disagree.
//!
//! The served set is `{ path → (sha256, size) }` of every entry that is not
//! a tombstone and has a file on disk (a recorded stat). The block server
//! sees it through a read-only [`ServedView`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use zync_proto::{FileEntry, Hash, RelPath};

use crate::hashing::Stat;
use crate::index::{IndexError, LocalEntry, LocalIndex, Record};

/// What the block server may serve: path → (content hash, size). Read-only;
/// only a [`Folder`] changes it.
#[derive(Clone, Default)]
pub struct ServedView(Arc<RwLock<HashMap<RelPath, (Hash, u64)>>>);

impl ServedView {
    /// The content `path` may be served with, if any.
    pub fn lookup(&self, path: &RelPath) -> Option<(Hash, u64)> {
        self.0.read().ok().and_then(|m| m.get(path).copied())
    }

    fn set(&self, path: &RelPath, served: Option<(Hash, u64)>) {
        if let Ok(mut m) = self.0.write() {
            match served {
                Some(v) => m.insert(path.clone(), v),
                None => m.remove(path),
            };
        }
    }
}

/// The local index of one folder and what it lets the block server serve.
/// Reads go through `Deref` to the [`LocalIndex`]; every change of an entry
/// goes through [`Folder::put`] or [`Folder::set_stat`].
pub struct Folder {
    index: LocalIndex,
    served: ServedView,
}

fn served(le: &LocalEntry) -> Option<(Hash, u64)> {
    (!le.entry.deleted && le.stat.is_some()).then_some((le.entry.sha256, le.entry.size))
}

impl Folder {
    /// Takes over `index`; everything it holds on disk becomes servable.
    pub fn new(index: LocalIndex) -> Folder {
        let view = ServedView::default();
        for le in index.iter() {
            view.set(&le.entry.path, served(le));
        }
        Folder {
            index,
            served: view,
        }
    }

    /// The read-only view the block server serves from.
    pub fn view(&self) -> ServedView {
        self.served.clone()
    }

    /// Records `entry`, with the stat of its file on disk (`None`: no file
    /// is expected there).
    pub fn put(&mut self, entry: FileEntry, stat: Option<Stat>) {
        let path = entry.path.clone();
        self.index.put(entry, stat);
        self.sync_served(&path);
    }

    /// Updates only the recorded stat of `path`.
    pub fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>) {
        self.index.set_stat(path, stat);
        self.sync_served(path);
    }

    fn sync_served(&self, path: &RelPath) {
        self.served.set(path, self.index.get(path).and_then(served));
    }

    /// Appends `record` to the journal (buffered).
    pub fn journal(&mut self, record: &Record) -> Result<(), IndexError> {
        self.index.journal(record)
    }

    /// Writes the buffered journal records out.
    pub fn flush_journal(&mut self) -> Result<(), IndexError> {
        self.index.flush_journal()
    }

    /// The records of the journal found at start, to replay.
    pub fn take_journal(&mut self) -> Vec<Record> {
        self.index.take_journal()
    }

    /// Saves the index (and empties the journal).
    pub fn save(&mut self) -> Result<(), IndexError> {
        self.index.save()
    }
}

impl std::ops::Deref for Folder {
    type Target = LocalIndex;
    fn deref(&self) -> &LocalIndex {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use zync_proto::VersionVector;

    fn entry(path: &str, content: &[u8], deleted: bool) -> FileEntry {
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size: if deleted { 0 } else { content.len() as u64 },
            mtime_ns: 1,
            sha256: Hash::of(content),
            blocks: vec![],
            version: VersionVector::new(),
            deleted,
            modified_by: "p1".into(),
        }
    }

    fn stat(n: u64) -> Stat {
        Stat {
            size: n,
            mtime_ns: 1,
            ino: n,
        }
    }

    #[test]
    fn the_served_set_follows_every_change_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LocalIndex::load(dir.path()).unwrap();
        index.put(entry("kept", b"k", false), Some(stat(1)));
        index.put(entry("gone", b"", true), None);
        let mut f = Folder::new(index);
        let view = f.view();
        let p = |s: &str| RelPath::new(s).unwrap();
        assert_eq!(view.lookup(&p("kept")), Some((Hash::of(b"k"), 1)));
        assert_eq!(view.lookup(&p("gone")), None, "a tombstone is never served");

        f.put(entry("new", b"abc", false), Some(stat(3)));
        assert_eq!(view.lookup(&p("new")), Some((Hash::of(b"abc"), 3)));
        // Content awaited (moved aside, being fetched): not served.
        f.set_stat(&p("new"), None);
        assert_eq!(view.lookup(&p("new")), None);
        f.set_stat(&p("new"), Some(stat(3)));
        assert_eq!(view.lookup(&p("new")), Some((Hash::of(b"abc"), 3)));
        // A new version is served as that version, a deletion not at all.
        f.put(entry("new", b"abcd", false), Some(stat(4)));
        assert_eq!(view.lookup(&p("new")), Some((Hash::of(b"abcd"), 4)));
        f.put(entry("new", b"", true), None);
        assert_eq!(view.lookup(&p("new")), None);
        // A stat for a path the index does not hold serves nothing.
        f.set_stat(&p("stranger"), Some(stat(9)));
        assert_eq!(view.lookup(&p("stranger")), None);
    }
}
