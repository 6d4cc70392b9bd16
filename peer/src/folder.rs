//! A synced folder's state, with one owner: [`Folder`] is the only way to
//! change the local index, the set of files the block server may serve, and
//! (for sync) the files on disk.
//!
//! - The served set is `{ path → (sha256, size) }` of every entry that is
//!   not a tombstone and has a file on disk (a recorded stat). It follows
//!   from the index by that one rule; the block server sees it through a
//!   read-only [`ServedView`].
//! - Replacing, deleting or moving a file aside takes a [`Fresh`]: proof
//!   that the index agrees with what the disk holds at that path, as just
//!   seen. Only looking makes one ([`Folder::look`], [`Folder::hash`], then
//!   [`Folder::confirm`]), and each change consumes it, so a file can only
//!   be replaced by code that has just compared it with the index: an edit
//!   the index has not seen is never overwritten.
//! - Installing takes a [`Fetched`], which only the verifying download code
//!   makes: only verified content lands under a file's real name.
//! - Every change to the disk is journaled first ([`Record::Remote`]), so a
//!   crash right after it is recognised at the next start.

use std::fs::File;
use std::io;

use zync_proto::{FileEntry, Hash, RelPath};

use crate::fsops::{self, Found, Root};
use crate::hashing::{self, HashError, Hashed, Stat};
use crate::index::{IndexError, IndexReader, IndexStore, Record};
use crate::transfer::Fetched;
use crate::versions::{Reason, Versions};

/// What the block server may serve: path → (content hash, size), and the
/// folder to read it from; and where each block of those files is, which
/// downloads use to take blocks from local files instead of the network.
/// Both follow from the index ([`crate::index::LocalEntry::served`]) and
/// are read from it, so they hold nothing in memory. Read-only; only a
/// [`Folder`] changes the index.
#[derive(Clone)]
pub struct ServedView {
    index: IndexReader,
    root: Root,
}

impl ServedView {
    /// The content `path` may be served with, if any.
    pub fn lookup(&self, path: &RelPath) -> Option<(Hash, u64)> {
        self.index.served(path)
    }

    /// Opens `path` for serving (after [`ServedView::lookup`] said it may
    /// be). The reader checks what it reads against the served size; the
    /// receiver checks every block against its hash.
    pub fn open(&self, path: &RelPath) -> io::Result<File> {
        self.root.open(path)
    }

    /// A served file holding a block with hash `block`, and the block's
    /// offset in it: where a download may read it instead of fetching it.
    /// The file may have changed since it was indexed, so what is read
    /// must be checked against `block`.
    pub fn find_block(&self, block: &Hash) -> Option<(RelPath, u64)> {
        self.index.find_block(block)
    }
}

/// What the disk held at one path, as just seen. Only [`Folder::look`] and
/// [`Folder::hash`] make one.
#[derive(Debug)]
pub struct Seen {
    path: RelPath,
    found: Found,
}

impl Seen {
    /// What was there.
    pub fn found(&self) -> Found {
        self.found
    }
}

/// Proof that the index agrees with the disk at one path, as just seen:
/// what [`Folder::install`], [`Folder::delete`], [`Folder::adopt`] and
/// [`Folder::move_aside`] need. Only [`Folder::confirm`] makes one.
#[derive(Debug)]
#[must_use]
pub struct Fresh {
    path: RelPath,
    /// The stat the index and the disk agree on (`None`: no file of ours).
    stat: Option<Stat>,
}

/// Why the folder did not make a change.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The proof was for another path, or the index changed there since.
    #[error("{0}: the index changed since the disk was looked at")]
    Stale(RelPath),
    /// The change could not be journaled first, so it was not made.
    #[error("cannot journal the change first, so it was not made: {0}")]
    Journal(#[from] IndexError),
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Called right after a file is installed, before the index records it
/// (the crash tests' fault injection).
pub type InstallHook = Box<dyn Fn(&RelPath) + Send>;

/// The local index of one folder, what it lets the block server serve, and
/// the folder on disk. Reads go through `Deref` to the [`IndexStore`].
pub struct Folder {
    index: Box<dyn IndexStore>,
    served: ServedView,
    root: Root,
    after_install: Option<InstallHook>,
    /// Where what a remote change replaces or deletes is kept.
    versions: Option<Versions>,
    /// Set by [`Folder::stop_saving`].
    saves_stopped: bool,
}

impl Folder {
    /// Takes over `index` of the folder at `root`; everything it holds on
    /// disk becomes servable.
    pub fn new(index: impl IndexStore + 'static, root: Root) -> Folder {
        let view = ServedView {
            index: index.reader(),
            root: root.clone(),
        };
        Folder {
            index: Box::new(index),
            served: view,
            root,
            after_install: None,
            versions: None,
            saves_stopped: false,
        }
    }

    /// From now on, what a remote change replaces or deletes is kept in
    /// `versions` (if it keeps anything) instead of being lost.
    pub fn keep_versions(&mut self, versions: Versions) {
        self.versions = versions.enabled().then_some(versions);
    }

    /// Calls `hook` right after each install, before the index records it.
    pub fn on_install(&mut self, hook: InstallHook) {
        self.after_install = Some(hook);
    }

    /// The folder on disk.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The read-only view the block server serves from.
    pub fn view(&self) -> ServedView {
        self.served.clone()
    }

    /// Looks at what is on disk at `rel` now.
    pub fn look(&self, rel: &RelPath) -> io::Result<Seen> {
        Ok(Seen {
            path: rel.clone(),
            found: self.root.look(rel)?,
        })
    }

    /// Hashes the file `seen` found; what it returns is seen anew (the
    /// stat the file had, unchanged, while it was read).
    pub fn hash(&self, seen: &Seen) -> Result<(Hashed, Seen), HashError> {
        let h = hashing::hash_in(&self.root, &seen.path)?;
        let again = Seen {
            path: seen.path.clone(),
            found: Found::File(h.stat),
        };
        Ok((h, again))
    }

    /// The proof that the index agrees with `seen`, if it does: a file with
    /// the recorded stat, or no file where none of ours is recorded.
    pub fn confirm(&self, seen: Seen) -> Option<Fresh> {
        let on_disk = match seen.found {
            Found::File(st) => Some(st),
            Found::Missing | Found::Dir | Found::Other => None,
        };
        (self.recorded_stat(&seen.path) == on_disk).then_some(Fresh {
            path: seen.path,
            stat: on_disk,
        })
    }

    fn recorded_stat(&self, path: &RelPath) -> Option<Stat> {
        self.index.recorded_stat(path)
    }

    fn check(&self, fresh: &Fresh, target: &FileEntry) -> Result<(), FolderError> {
        if fresh.path != target.path || self.recorded_stat(&fresh.path) != fresh.stat {
            return Err(FolderError::Stale(fresh.path.clone()));
        }
        Ok(())
    }

    /// Renames the verified content `f` into place as `target`, journaled
    /// first; returns the stat it was installed with.
    pub fn install(
        &mut self,
        fresh: Fresh,
        target: FileEntry,
        f: Fetched,
    ) -> Result<Stat, FolderError> {
        self.check(&fresh, &target)?;
        let ours = self.ours_on_disk(&fresh);
        self.journal_now(&Record::Remote {
            entry: target.clone(),
            ino: f.ino(),
        })?;
        // Our content gets a second name first, so that the path is never
        // missing; if it cannot be kept, it is not replaced.
        let kept = match (&self.versions, ours) {
            (Some(v), Some(old)) => {
                Some(v.keep_linked(&self.root, &old, &target.modified_by, Reason::Replaced)?)
            }
            _ => None,
        };
        let stat = match f.install(&self.root, &target.path, fsops::mode_for(target.mode)) {
            Ok(stat) => stat,
            Err(e) => {
                if let (Some(v), Some(k)) = (&self.versions, kept) {
                    v.forget(&k);
                }
                return Err(e.into());
            }
        };
        if let Some(hook) = &self.after_install {
            hook(&target.path);
        }
        self.put(target, Some(stat));
        Ok(stat)
    }

    /// Records the tombstone `target`, first removing our file (journaled)
    /// if one is there. Returns whether a file was removed.
    pub fn delete(&mut self, fresh: Fresh, target: FileEntry) -> Result<bool, FolderError> {
        self.check(&fresh, &target)?;
        let ours = self.ours_on_disk(&fresh);
        let on_disk = ours.is_some();
        if let Some(old) = ours {
            self.journal_now(&Record::Remote {
                entry: target.clone(),
                ino: None,
            })?;
            match &self.versions {
                Some(v) => {
                    match v.keep_moved(&self.root, &old, &target.modified_by, Reason::Deleted) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.root.prune_parents(&target.path);
                }
                None => self.root.remove_and_prune(&target.path)?,
            }
        }
        self.put(target, None);
        Ok(on_disk)
    }

    /// The entry of our file at the proof's path, if one is there.
    fn ours_on_disk(&self, fresh: &Fresh) -> Option<FileEntry> {
        fresh.stat?;
        self.index
            .get(&fresh.path)
            .filter(|l| !l.entry.deleted)
            .map(|l| l.entry.clone())
    }

    /// Records `target` for the file already on disk, which holds its
    /// content (two peers made the same bytes, or only the mode changed),
    /// giving the file `target`'s mode if it has one and the file another.
    /// Returns the mode it gave, if it changed it.
    pub fn adopt(&mut self, fresh: Fresh, target: FileEntry) -> Result<Option<u32>, FolderError> {
        self.check(&fresh, &target)?;
        let mut stat = fresh.stat;
        let mut changed = None;
        let wanted = target.mode.map(|m| fsops::mode_for(Some(m)));
        if let (Some(st), Some(mode)) = (stat, wanted) {
            if st.mode != Some(mode) {
                // Journaled first, as an install is: after a crash the new
                // mode is then known for the cluster's, not taken for a
                // local change.
                self.journal_now(&Record::Remote {
                    entry: target.clone(),
                    ino: None,
                })?;
                if self.root.set_mode(&target.path, mode)? {
                    // The stat looked at, with the new mode: a stat taken
                    // now could take in a user's edit made since and pass
                    // it off as ours (as [`Root::place`] explains).
                    stat = Some(Stat {
                        mode: Some(mode),
                        ..st
                    });
                    changed = Some(mode);
                } else {
                    tracing::warn!(path = %target.path, mode = %format!("{mode:03o}"),
                                   "file has other hard links; its mode is left alone");
                }
            }
        }
        // Buffered: losing it costs only a re-hash that merges again.
        let journaled = self.index.journal(&Record::Remote {
            entry: target.clone(),
            ino: None,
        });
        self.put(target, stat);
        journaled.map_err(FolderError::from).map(|()| changed)
    }

    /// Renames our file at the proof's path to `copy`; the path then awaits
    /// other content (no file recorded). Returns the stat the copy has, and
    /// the proof for the path as it now is. The caller records the copy.
    pub fn move_aside(
        &mut self,
        fresh: Fresh,
        copy: &RelPath,
    ) -> Result<(Stat, Fresh), FolderError> {
        if self.recorded_stat(&fresh.path) != fresh.stat {
            return Err(FolderError::Stale(fresh.path));
        }
        let stat = self.root.rename(&fresh.path, copy)?;
        self.set_stat(&fresh.path, None);
        Ok((
            stat,
            Fresh {
                path: fresh.path,
                stat: None,
            },
        ))
    }

    /// Records `entry`, with the stat of its file on disk (`None`: no file
    /// is expected there).
    pub fn put(&mut self, entry: FileEntry, stat: Option<Stat>) {
        self.index.put(entry, stat);
    }

    /// Drops the record of `path` if it is a deletion that `forgotten` (a
    /// tombstone the cluster forgot) equals or supersedes; says whether it
    /// did. A live file, or a newer deletion, is kept.
    pub fn forget(&mut self, forgotten: &FileEntry) -> bool {
        use zync_proto::Causality::{Dominates, Equal};
        let path = &forgotten.path;
        let drop = self.index.get(path).is_some_and(|le| {
            le.entry.deleted
                && matches!(
                    forgotten.version.compare(&le.entry.version),
                    Equal | Dominates
                )
        });
        if drop {
            self.index.remove(path);
        }
        drop
    }

    /// Updates only the recorded stat of `path`.
    pub fn set_stat(&mut self, path: &RelPath, stat: Option<Stat>) {
        self.index.set_stat(path, stat);
    }

    /// Appends `record` to the journal (buffered).
    pub fn journal(&mut self, record: &Record) -> Result<(), IndexError> {
        self.index.journal(record)
    }

    /// Journals `record` and writes it out at once: for a change about to
    /// be made on disk.
    fn journal_now(&mut self, record: &Record) -> Result<(), IndexError> {
        self.index.journal(record)?;
        self.index.flush_journal()
    }

    /// Writes the buffered journal records out.
    pub fn flush_journal(&mut self) -> Result<(), IndexError> {
        self.index.flush_journal()
    }

    /// The records of the journal found at start, to replay.
    pub fn take_journal(&mut self) -> Vec<Record> {
        self.index.take_journal()
    }

    /// When the index's unsaved changes are due to be saved (the store
    /// paces itself); `None` if none are, or saves are stopped.
    pub fn save_due(&self) -> Option<std::time::Instant> {
        self.index.save_due().filter(|_| !self.saves_stopped)
    }

    /// Saves the index if a save is due by `now`.
    pub fn save_if_due(&mut self, now: std::time::Instant) -> Result<(), IndexError> {
        match self.save_due() {
            Some(at) if at <= now => self.save(),
            _ => Ok(()),
        }
    }

    /// Saves the index (and empties the journal), unless saves are stopped.
    pub fn save(&mut self) -> Result<(), IndexError> {
        if self.saves_stopped {
            return Ok(());
        }
        self.index.save()
    }

    /// Stops every save from now on, as a disk too slow to ever finish
    /// one would: what a crash then keeps is what the journal holds
    /// (fault injection for the crash tests, `ZYNC_FAULT`).
    pub fn stop_saving(&mut self) {
        self.saves_stopped = true;
    }
}

impl std::ops::Deref for Folder {
    type Target = dyn IndexStore;
    fn deref(&self) -> &(dyn IndexStore + 'static) {
        &*self.index
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::index::LocalIndex;
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
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn stat(n: u64) -> Stat {
        Stat {
            size: n,
            mtime_ns: 1,
            ino: n,
            mode: Some(0o644),
        }
    }

    #[test]
    fn the_served_set_follows_every_change_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LocalIndex::load(dir.path()).unwrap();
        index.put(entry("kept", b"k", false), Some(stat(1)));
        index.put(entry("gone", b"", true), None);
        let mut f = Folder::new(
            index,
            Root::new(dir.path().canonicalize().unwrap()).unwrap(),
        );
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
        // Saved, it reads the same from the database.
        f.save().unwrap();
        assert_eq!(view.lookup(&p("kept")), Some((Hash::of(b"k"), 1)));
        assert_eq!(view.lookup(&p("new")), None);
        f.put(entry("new", b"abc", false), Some(stat(3)));
        f.save().unwrap();
        assert_eq!(view.lookup(&p("new")), Some((Hash::of(b"abc"), 3)));
    }

    /// A file of two blocks: `x` at 0 and `y` at `BLOCK_SIZE`.
    fn two_blocks(path: &str, x: &[u8], y: &[u8]) -> FileEntry {
        let mut e = entry(path, b"", false);
        e.size = zync_proto::BLOCK_SIZE + 1;
        e.blocks = vec![Hash::of(x), Hash::of(y)];
        e
    }

    #[test]
    fn blocks_are_found_in_served_files_saved_or_not_and_only_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let index = LocalIndex::load(dir.path()).unwrap();
        let mut f = Folder::new(index, Root::new(root.clone()).unwrap());
        let view = f.view();
        let p = |s: &str| RelPath::new(s).unwrap();
        let (x, y, z) = (Hash::of(b"x"), Hash::of(b"y"), Hash::of(b"z"));
        let at = |s: &str, off: u64| Some((RelPath::new(s).unwrap(), off));

        f.put(two_blocks("a", b"x", b"y"), Some(stat(1)));
        assert_eq!(
            view.find_block(&y),
            at("a", zync_proto::BLOCK_SIZE),
            "unsaved"
        );
        f.save().unwrap();
        assert_eq!(view.find_block(&x), at("a", 0), "saved");
        assert_eq!(view.find_block(&y), at("a", zync_proto::BLOCK_SIZE));
        assert_eq!(view.find_block(&z), None);

        // An unsaved change hides the saved blocks of its path at once.
        f.set_stat(&p("a"), None);
        assert_eq!(view.find_block(&x), None, "content awaited is not served");
        f.put(two_blocks("a", b"z", b"y"), Some(stat(2)));
        assert_eq!(view.find_block(&x), None, "no longer in the file");
        assert_eq!(view.find_block(&z), at("a", 0));
        f.save().unwrap();
        assert_eq!(view.find_block(&x), None, "and not in the database either");
        assert_eq!(view.find_block(&z), at("a", 0));

        // Another file with the block; the first is deleted: it is found
        // in the other, saved or not.
        f.put(two_blocks("b", b"q", b"z"), Some(stat(3)));
        f.save().unwrap();
        f.put(entry("a", b"", true), None);
        assert_eq!(view.find_block(&z), at("b", zync_proto::BLOCK_SIZE));
        f.save().unwrap();
        assert_eq!(view.find_block(&z), at("b", zync_proto::BLOCK_SIZE));
        assert_eq!(view.find_block(&y), None, "a tombstone serves no block");

        // After a restart the database alone answers.
        drop((f, view));
        let f = Folder::new(
            LocalIndex::load(dir.path()).unwrap(),
            Root::new(root.clone()).unwrap(),
        );
        assert_eq!(f.view().find_block(&z), at("b", zync_proto::BLOCK_SIZE));
        assert_eq!(
            f.view().lookup(&p("b")).map(|(_, n)| n),
            Some(zync_proto::BLOCK_SIZE + 1)
        );
    }

    #[test]
    fn only_a_tombstone_the_forgotten_one_equals_or_supersedes_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::load(dir.path()).unwrap();
        let mut f = Folder::new(
            index,
            Root::new(dir.path().canonicalize().unwrap()).unwrap(),
        );
        let versioned = |path: &str, deleted: bool, bumps: &[&str]| {
            let mut e = entry(path, b"x", deleted);
            for b in bumps {
                e.version.bump(b);
            }
            e
        };
        let forgotten = versioned("gone", true, &["a", "a"]);
        // Ours is that tombstone, or an older one: dropped.
        f.put(forgotten.clone(), None);
        assert!(f.forget(&forgotten));
        assert!(f.get(&forgotten.path).is_none());
        f.put(versioned("gone", true, &["a"]), None);
        assert!(f.forget(&forgotten));
        // A newer deletion, a live file, or no record at all: kept as is.
        let newer = versioned("gone", true, &["a", "a", "b"]);
        f.put(newer.clone(), None);
        assert!(!f.forget(&forgotten));
        assert_eq!(f.get(&newer.path).unwrap().entry, newer);
        let live = versioned("back", false, &["a"]);
        f.put(live.clone(), Some(stat(1)));
        assert!(!f.forget(&versioned("back", true, &["a", "a"])));
        assert_eq!(f.get(&live.path).unwrap().entry, live);
        assert!(!f.forget(&versioned("never", true, &["a"])));
    }

    /// A folder in a temp dir with `a` = "old" on disk and indexed.
    fn folder_with_a() -> (tempfile::TempDir, Folder) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        std::fs::create_dir_all(root.state()).unwrap();
        let index = LocalIndex::load(root.state()).unwrap();
        let mut f = Folder::new(index, root);
        let a = RelPath::new("a").unwrap();
        std::fs::write(f.root().file(&a), b"old").unwrap();
        let st = stat_on_disk(&f, &a);
        f.put(entry("a", b"old", false), Some(st));
        (dir, f)
    }

    /// The stat of the file at `rel` (which must be one).
    fn stat_on_disk(f: &Folder, rel: &RelPath) -> Stat {
        match f.root().look(rel).unwrap() {
            Found::File(st) => st,
            other => panic!("{rel}: {other:?}, not a file"),
        }
    }

    fn fetched(f: &Folder, content: &[u8]) -> Fetched {
        let tmp = tempfile::NamedTempFile::new_in(f.root().state()).unwrap();
        std::fs::write(tmp.path(), content).unwrap();
        // Dated like a download (the entry's mtime), not "being written".
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        tmp.as_file().set_modified(then).unwrap();
        Fetched::check_local(tmp.into_temp_path(), Hash::of(content)).unwrap()
    }

    fn edit_later(f: &Folder, rel: &RelPath, content: &[u8]) {
        // Another size, so the stat differs whatever the clock's grain.
        std::fs::write(f.root().file(rel), content).unwrap();
    }

    #[test]
    fn a_file_is_replaced_only_with_proof_that_the_index_has_seen_it() {
        let (_d, mut f) = folder_with_a();
        let a = RelPath::new("a").unwrap();
        let fresh = f
            .confirm(f.look(&a).unwrap())
            .expect("index and disk agree");

        // The user edits the file after it was looked at: nothing proves
        // the index knows the edit, so no new look confirms, ...
        edit_later(&f, &a, b"the user's edit");
        assert!(f.confirm(f.look(&a).unwrap()).is_none());
        // ... and an install with the old proof is refused once the index
        // moved on (it recorded the edit's stat meanwhile).
        f.set_stat(&a, Some(stat_on_disk(&f, &a)));
        let err = f
            .install(fresh, entry("a", b"new", false), fetched(&f, b"new"))
            .unwrap_err();
        assert!(matches!(err, FolderError::Stale(_)), "{err}");
        assert_eq!(
            std::fs::read(f.root().file(&a)).unwrap(),
            b"the user's edit"
        );

        // With a proof of what is there now, the install goes through.
        let fresh = f.confirm(f.look(&a).unwrap()).unwrap();
        let stat = f
            .install(fresh, entry("a", b"new", false), fetched(&f, b"new"))
            .unwrap();
        assert_eq!(std::fs::read(f.root().file(&a)).unwrap(), b"new");
        assert_eq!(f.get(&a).unwrap().stat, Some(stat));
        assert_eq!(f.view().lookup(&a), Some((Hash::of(b"new"), 3)));
    }

    fn mode_on_disk(f: &Folder, rel: &RelPath) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(f.root().file(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn an_install_gives_the_origins_mode_and_an_adopt_changes_only_the_mode() {
        let (_d, mut f) = folder_with_a();
        let umask = fsops::umask();
        let (a, b) = (RelPath::new("a").unwrap(), RelPath::new("b").unwrap());
        // A mode not known: what any new file gets, never the temp file's 0600.
        let fresh = f.confirm(f.look(&b).unwrap()).unwrap();
        f.install(fresh, entry("b", b"plain", false), fetched(&f, b"plain"))
            .unwrap();
        assert_eq!(mode_on_disk(&f, &b), 0o666 & !umask);
        // The origin's mode, masked by the umask, and recorded.
        let fresh = f.confirm(f.look(&a).unwrap()).unwrap();
        let script = FileEntry {
            mode: Some(0o775),
            ..entry("a", b"#!/bin/sh", false)
        };
        let stat = f
            .install(fresh, script.clone(), fetched(&f, b"#!/bin/sh"))
            .unwrap();
        assert_eq!(mode_on_disk(&f, &a), 0o775 & !umask);
        assert_eq!(stat.mode, Some(0o775 & !umask));
        // The same content with another mode: only the mode changes.
        let fresh = f.confirm(f.look(&a).unwrap()).unwrap();
        let ino = stat_on_disk(&f, &a).ino;
        let private = FileEntry {
            mode: Some(0o600),
            ..script
        };
        f.adopt(fresh, private).unwrap();
        assert_eq!(mode_on_disk(&f, &a), 0o600);
        assert_eq!(stat_on_disk(&f, &a).ino, ino, "the same file");
        assert!(
            f.confirm(f.look(&a).unwrap()).is_some(),
            "the new stat is recorded"
        );
    }

    #[test]
    fn an_edit_made_while_the_mode_is_set_is_never_taken_for_ours() {
        let (_d, mut f) = folder_with_a();
        let a = RelPath::new("a").unwrap();
        let fresh = f.confirm(f.look(&a).unwrap()).unwrap();
        // The user writes after the look, before the chmod.
        edit_later(&f, &a, b"the user's edit");
        let target = FileEntry {
            mode: Some(0o600),
            ..entry("a", b"old", false)
        };
        assert_eq!(f.adopt(fresh, target).unwrap(), Some(0o600));
        let now = stat_on_disk(&f, &a);
        assert!(
            f.confirm(f.look(&a).unwrap()).is_none(),
            "the index does not claim the edit"
        );
        assert!(
            crate::decide::needs_hash(f.get(&a).as_ref(), now),
            "so it is hashed"
        );
    }

    #[test]
    fn a_mode_is_never_set_through_a_symlink() {
        let (d, mut f) = folder_with_a();
        let a = RelPath::new("a").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let before = std::fs::metadata(outside.path()).unwrap().permissions();
        let fresh = f.confirm(f.look(&a).unwrap()).unwrap();
        // Swapped for a link after it was looked at.
        std::fs::remove_file(d.path().join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("a")).unwrap();
        let target = FileEntry {
            mode: Some(0o777),
            ..entry("a", b"old", false)
        };
        assert!(f.adopt(fresh, target).is_err());
        assert_eq!(
            std::fs::metadata(outside.path()).unwrap().permissions(),
            before
        );
    }

    #[test]
    fn a_proof_is_for_one_path_only() {
        let (_d, mut f) = folder_with_a();
        let b = RelPath::new("b").unwrap();
        let fresh_b = f
            .confirm(f.look(&b).unwrap())
            .expect("nothing there, nothing indexed");
        let err = f
            .install(fresh_b, entry("a", b"x", false), fetched(&f, b"x"))
            .unwrap_err();
        assert!(matches!(err, FolderError::Stale(_)));
        assert_eq!(
            std::fs::read(f.root().file(&RelPath::new("a").unwrap())).unwrap(),
            b"old"
        );
    }

    #[test]
    fn moving_aside_then_installing_keeps_both_contents() {
        let (_d, mut f) = folder_with_a();
        let a = RelPath::new("a").unwrap();
        let copy = RelPath::new("a.conflict").unwrap();
        let fresh = f.confirm(f.look(&a).unwrap()).unwrap();
        let (_, fresh) = f.move_aside(fresh, &copy).unwrap();
        assert_eq!(f.view().lookup(&a), None, "content awaited is not served");
        f.install(fresh, entry("a", b"theirs", false), fetched(&f, b"theirs"))
            .unwrap();
        assert_eq!(std::fs::read(f.root().file(&a)).unwrap(), b"theirs");
        assert_eq!(std::fs::read(f.root().file(&copy)).unwrap(), b"old");
    }

    #[test]
    fn a_deletion_removes_our_file_and_its_empty_folders_journaled_first() {
        let (_d, mut f) = folder_with_a();
        let deep = RelPath::new("d/e/f").unwrap();
        std::fs::create_dir_all(f.root().file(&RelPath::new("d/e").unwrap())).unwrap();
        std::fs::write(f.root().file(&deep), b"x").unwrap();
        let st = stat_on_disk(&f, &deep);
        f.put(entry("d/e/f", b"x", false), Some(st));
        let fresh = f.confirm(f.look(&deep).unwrap()).unwrap();
        assert!(f.delete(fresh, entry("d/e/f", b"", true)).unwrap());
        assert!(!f.root().dir().join("d").exists());
        assert!(f.get(&deep).unwrap().entry.deleted);
        assert_eq!(f.view().lookup(&deep), None);
        // The journal holds the deletion, so a crash now is recognised.
        let state = f.root().state().to_path_buf();
        drop(f);
        let mut again = LocalIndex::load(&state).unwrap();
        assert!(again.take_journal().iter().any(
            |r| matches!(r, Record::Remote { entry, .. } if entry.path == deep && entry.deleted)
        ));
    }

    #[test]
    fn a_deletion_where_no_file_of_ours_is_leaves_the_disk_alone() {
        let (_d, mut f) = folder_with_a();
        let b = RelPath::new("b").unwrap();
        let fresh = f.confirm(f.look(&b).unwrap()).unwrap();
        assert!(!f.delete(fresh, entry("b", b"", true)).unwrap());
        assert!(f.get(&b).unwrap().entry.deleted);
    }
}
