//! The local side: the start-up journal replay, scans, watcher events,
//! and turning what is on disk into new local versions.

use super::*;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Most files being hashed at once before a scan waits for some to finish.
const HASH_WINDOW: usize = 1024;
/// Most files a scan looks at in one turn of the engine's loop.
const SCAN_STEP: usize = 4096;
/// Paths the walk of a scan hands over at a time, from its own thread.
const WALK_CHUNK: usize = 1024;
/// Chunks the walk may be ahead of the scan.
const WALK_AHEAD: usize = 8;

/// A scan of the whole folder in progress.
pub(super) struct Scan {
    cause: Cause,
    /// The walk, where it stands.
    walk: Box<dyn Iterator<Item = RelPath> + Send>,
    /// Every file the walk found, by a 64-bit hash of its path (8 bytes a
    /// file, not the path), keyed afresh each scan.
    key: RandomState,
    seen: HashSet<u64>,
    /// Files sent to be hashed.
    to_hash: usize,
    started: Instant,
}

impl Engine {
    /// Adopts what the journal recorded since the last save of the index
    /// ([`crate::index::LocalIndex::take_journal`]), before the start-up scan compares the
    /// disk with the index. A local version was reported, so it is adopted
    /// as it is. A remote version is adopted where the disk shows it was
    /// applied: a deletion if the file is gone; a download if the file holds
    /// its content, or is still the inode that was renamed into place
    /// (changed since: the scan then sees a local edit made *after* that
    /// version, which is what it is). So an installed file is not taken for
    /// a new local edit, and a reported file gone since is reported gone.
    pub(super) fn replay_journal(&mut self) {
        for record in self.folder.take_journal() {
            let (r, stat) = match record {
                Record::Local { entry, stat } => (entry, stat),
                Record::Remote { entry: r, ino } => {
                    let Ok(seen) = self.folder.look(&r.path) else {
                        continue;
                    };
                    let stat = match seen.found() {
                        Found::Missing if r.deleted => None,
                        Found::File(st) if !r.deleted => match self.folder.hash(&seen) {
                            Ok((h, _)) if h.sha256 == r.sha256 => Some(h.stat),
                            _ if ino == Some(st.ino) => None, // installed, edited since
                            _ => continue,                    // the install never happened
                        },
                        _ => continue, // the change never reached the disk
                    };
                    (r, stat)
                }
            };
            let cur = self.folder.get(&r.path);
            if cur.is_some_and(|c| {
                !matches!(
                    r.version.compare(&c.entry.version),
                    Causality::Dominates | Causality::Equal
                )
            }) {
                continue; // the index already knows better
            }
            debug!(path = %r.path, version = %r.version, deleted = r.deleted,
                   "adopted a change recorded just before the last stop");
            self.folder.put(r, stat);
        }
    }

    /// Records a new local version (index, and journal if it will be
    /// reported before the next save) and queues it for the tracker.
    pub(super) fn record_local(&mut self, entry: FileEntry, stat: Option<Stat>) {
        if self.session.is_registered() {
            let record = Record::Local {
                entry: entry.clone(),
                stat,
            };
            if let Err(e) = self.folder.journal(&record) {
                error!(path = %entry.path, error = %e, "cannot journal a local change");
            }
        }
        self.folder.put(entry.clone(), stat);
        self.report(entry);
    }

    /// Starts looking at every path on disk or in the index (a scan in
    /// progress starts over). [`Engine::continue_scan`] takes it on.
    pub(super) fn scan(&mut self, cause: Cause) {
        self.scanning = Some(Scan {
            cause,
            walk: walk_ahead(self.folder.root()),
            key: RandomState::new(),
            seen: HashSet::new(),
            to_hash: 0,
            started: Instant::now(),
        });
        self.continue_scan();
    }

    /// Whether the scan in progress can go on now (it waits while
    /// [`HASH_WINDOW`] files are being hashed).
    pub(super) fn scan_can_go(&self) -> bool {
        self.scanning.is_some() && self.hashing.len() < HASH_WINDOW
    }

    /// Takes the scan in progress on by up to [`SCAN_STEP`] files, as long
    /// as fewer than [`HASH_WINDOW`] files are being hashed: a first scan
    /// of a million new files holds a window of them, not all of them (each
    /// queued hash costs a path, a file name and a slot), and the engine
    /// handles what comes in between two steps.
    pub(super) fn continue_scan(&mut self) {
        let Some(mut s) = self.scanning.take() else {
            return;
        };
        for _ in 0..SCAN_STEP {
            if self.hashing.len() >= HASH_WINDOW {
                break;
            }
            let Some(p) = s.walk.next() else {
                return self.finish_scan(s);
            };
            s.seen.insert(s.key.hash_one(p.as_str()));
            let before = self.hashing.len();
            self.reconcile_local(&p, s.cause);
            s.to_hash += self.hashing.len().saturating_sub(before);
        }
        self.scanning = Some(s);
    }

    /// The walk is done: every file of the index it did not find is gone,
    /// or no longer a file. (Two paths with the same hash would hide such a
    /// deletion from this scan, about once in 10^7 scans of a million
    /// files; the next scan, keyed anew, finds it.)
    fn finish_scan(&mut self, s: Scan) {
        let gone: Vec<RelPath> = self
            .folder
            .entries()
            .filter(|le| le.served().is_some())
            .filter(|le| !s.seen.contains(&s.key.hash_one(le.entry.path.as_str())))
            .map(|le| le.entry.path)
            .collect();
        for p in &gone {
            self.reconcile_local(p, s.cause);
        }
        self.scanned_once = true;
        // `to_hash`: files whose stat differed from the index (or that it
        // did not know), sent to be hashed.
        let (files, ms, to_hash, cause) = (
            s.seen.len(),
            s.started.elapsed().as_millis() as u64,
            s.to_hash,
            s.cause,
        );
        match cause {
            Cause::Rescan => debug!(files, ms, to_hash, "rescanned folder"),
            _ => info!(files, ms, to_hash, "scanned folder"),
        }
    }

    pub(super) fn on_fs(&mut self, paths: Vec<PathBuf>) {
        let root = self.folder.root().clone();
        let mut rels = BTreeSet::new();
        // What each path of an event was found to be: looked at once.
        let mut seen = HashMap::new();
        for p in paths {
            if root.is_state(&p) {
                continue;
            }
            if p == root.dir() {
                return self.scan(Cause::Scan);
            }
            let Ok(rel) = root.rel(&p) else {
                debug!(path = %p.display(), "ignoring event outside the syncable namespace");
                continue;
            };
            // One that cannot be looked at is looked at again, and the
            // failure logged, by `reconcile_local` below.
            if let Ok(s) = self.folder.look(&rel) {
                if s.found() == Found::Dir {
                    rels.extend(root.files(&p));
                }
                seen.insert(rel.clone(), s);
            }
            rels.extend(self.folder.paths_within(&rel));
            rels.insert(rel);
        }
        for rel in rels {
            match seen.remove(&rel) {
                Some(s) => {
                    self.reconcile_seen(&rel, s, Cause::Event);
                }
                None => {
                    self.reconcile_local(&rel, Cause::Event);
                }
            }
        }
    }

    /// Brings the index in line with what is on disk at `rel`: a new version
    /// if the content changed or the file went away. Returns the proof that
    /// the index now says what the disk holds; `None` while the file is
    /// being written (looked at again shortly) or cannot be read.
    pub(super) fn reconcile_local(&mut self, rel: &RelPath, cause: Cause) -> Option<Fresh> {
        match self.folder.look(rel) {
            Ok(seen) => self.reconcile_seen(rel, seen, cause),
            Err(e) => {
                warn!(path = %rel, error = %e, "cannot stat");
                None
            }
        }
    }

    /// [`Engine::reconcile_local`] with what was just seen at `rel`. An
    /// ignored path is left alone: nothing is recorded or reported.
    fn reconcile_seen(&mut self, rel: &RelPath, seen: Seen, cause: Cause) -> Option<Fresh> {
        if self.ignore.is_ignored(rel) {
            return None;
        }
        let cur = self.folder.get(rel);
        match seen.found() {
            Found::File(st) => {
                if !decide::needs_hash(cur.as_ref(), st) {
                    let plan = decide::plan_unhashed(cur.as_ref(), st, &self.replica, unix_now());
                    match (plan, cur) {
                        (LocalPlan::NewVersion { kind, version }, Some(cur)) => {
                            let entry = FileEntry {
                                version,
                                mode: st.mode,
                                modified_by: self.s.name.clone(),
                                ..cur.entry
                            };
                            log_local_change(cause, kind, &entry);
                            self.record_local(entry, Some(st));
                        }
                        (LocalPlan::Touched, _) => self.folder.set_stat(rel, Some(st)),
                        _ => {}
                    }
                    return self.folder.confirm(seen);
                }
                // Hashed off this thread; `on_hashed` goes on from here. A
                // hash already on its way is looked at again when it lands.
                if !self.hashing.contains_key(rel) {
                    self.hashing.insert(rel.clone(), cause);
                    self.hashers.hash(rel.clone(), rel.clone());
                }
                None
            }
            Found::Missing | Found::Dir | Found::Other => {
                if let LocalPlan::Deleted { version } =
                    decide::plan_missing(cur.as_ref(), &self.replica, unix_now())
                {
                    let entry = tombstone(rel.clone(), version, &self.s.name);
                    log_local_change(cause, "deleted", &entry);
                    self.record_local(entry, None);
                }
                self.folder.confirm(seen)
            }
        }
    }

    /// A hash of `rel` is back: record what the file holds (a new version,
    /// or only its stat), or look again if it changed since; then apply a
    /// remote version that waited for it.
    pub(super) fn on_hashed(&mut self, rel: RelPath, result: Result<Hashed, HashError>) {
        let Some(cause) = self.hashing.remove(&rel) else {
            return;
        };
        if self.ignore.is_ignored(&rel) {
            // Ignored since it was sent to be hashed: nothing is recorded,
            // and a remote version that waited for it is left alone too.
            self.deferred.remove(&rel);
            return;
        }
        let h = match result {
            Ok(h) => h,
            Err(HashError::Unstable) => {
                self.unstable.insert(rel.clone());
                self.unstable_at
                    .get_or_insert(Instant::now() + Duration::from_millis(250));
                return;
            }
            Err(HashError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.look_again(&rel, cause)
            }
            Err(HashError::Io(e)) => {
                warn!(path = %rel, error = %e, "cannot read");
                if let Some(r) = self.deferred.remove(&rel) {
                    self.hold_back(r);
                }
                return;
            }
        };
        let seen = match self.folder.look(&rel) {
            Ok(seen) if seen.found() == Found::File(h.stat) => seen,
            // Changed since it was hashed: look again.
            Ok(_) => return self.look_again(&rel, cause),
            Err(e) => return warn!(path = %rel, error = %e, "cannot stat"),
        };
        let cur = self.folder.get(&rel);
        match decide::plan_hashed(cur.as_ref(), h.sha256, h.stat, &self.replica, unix_now()) {
            LocalPlan::NewVersion { kind, version } => {
                let entry = FileEntry {
                    path: rel.clone(),
                    size: h.stat.size,
                    mtime_ns: h.stat.mtime_ns,
                    sha256: h.sha256,
                    blocks: h.blocks,
                    version,
                    deleted: false,
                    modified_by: self.s.name.clone(),
                    lengths: h.lengths,
                    mode: h.stat.mode,
                };
                log_local_change(cause, kind, &entry);
                self.record_local(entry, Some(h.stat));
            }
            _ => self.folder.set_stat(&rel, Some(h.stat)),
        }
        if self.folder.confirm(seen).is_some() {
            self.resume_deferred(&rel);
        }
    }

    /// Reconciles `rel` again, and if the index then says what the disk
    /// holds, applies the remote version that waited for that.
    pub(super) fn look_again(&mut self, rel: &RelPath, cause: Cause) {
        if self.reconcile_local(rel, cause).is_some() {
            self.resume_deferred(rel);
        }
    }

    /// Applies the remote version of `rel` that waited for the disk to be
    /// known, if one did.
    pub(super) fn resume_deferred(&mut self, rel: &RelPath) {
        if let Some(r) = self.deferred.remove(rel) {
            self.apply_remote(r, None);
        }
    }
}

/// The walk of the whole folder, run ahead on a thread of its own: reading
/// directories and turning names into checked paths then takes the other
/// core, while the engine's thread compares each file with the index. The
/// walk only finds names; each file is looked at (`lstat`) when the scan
/// comes to it, and the watcher, started before any scan, covers a change
/// between the two. Dropping the iterator (a scan started over) ends the
/// thread at its next chunk.
fn walk_ahead(root: &fsops::Root) -> Box<dyn Iterator<Item = RelPath> + Send> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<RelPath>>(WALK_AHEAD);
    let walker = root.clone();
    let spawned = std::thread::Builder::new()
        .name("zync-walk".into())
        .spawn(move || {
            let mut walk = walker.files(walker.dir());
            loop {
                let chunk: Vec<RelPath> = walk.by_ref().take(WALK_CHUNK).collect();
                if chunk.is_empty() || tx.send(chunk).is_err() {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Box::new(rx.into_iter().flatten()),
        Err(e) => {
            warn!(error = %e, "cannot start a thread for the walk; walking on the engine's");
            root.files(root.dir())
        }
    }
}
