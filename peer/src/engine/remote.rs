//! The remote side: applying remote versions (as `decide` plans them),
//! conflict copies, and the download queue.

use super::*;
use crate::metrics::metrics;

impl Engine {
    /// Applies a remote version of a file, after re-checking the disk.
    /// Without `fetched` bytes, content that must be downloaded is queued and
    /// this is called again when it arrives.
    pub(super) fn apply_remote(&mut self, r: FileEntry, fetched: Option<(Fetched, Duration)>) {
        let path = r.path.clone();
        if let Err(e) = r.acceptable(unix_now()) {
            // A hostile member or tracker: never taken in, whatever it is.
            return warn!(path = %path, error = %e, "remote version refused");
        }
        if self.ignore.is_ignored(&path) {
            // Never fetched, deleted or overwritten: what is here stays.
            debug!(path = %path, "ignored path; the remote version is left alone");
            return;
        }
        let Some(fresh) = self.reconcile_local(&path, Cause::Event) else {
            // What is on disk is not known yet (being hashed, being written,
            // or unreadable): replacing it now could destroy an edit the
            // index has not seen.
            if self.hashing.contains_key(&path) || self.unstable.contains(&path) {
                debug!(path = %path, "local file is being looked at; the remote version waits");
                self.deferred.insert(path, r);
            } else {
                self.hold_back(r);
            }
            return;
        };
        let local = self.folder.get(&path);
        let (aside, step) = match decide::plan_remote(local.as_ref(), &r, fetched.is_some()) {
            RemotePlan::Keep => return,
            RemotePlan::OursWins => {
                if let (None, Some(l)) = (&fetched, &local) {
                    info!(event = %"conflict", path = %path, winner = %l.entry.modified_by,
                          loser = %r.modified_by, kept = %"local", "concurrent edits; ours wins");
                }
                return;
            }
            RemotePlan::Fetch => return self.want(r),
            RemotePlan::Apply { aside, step } => (aside, step),
        };
        let fresh = match (aside, &local) {
            (true, Some(l)) => match self.move_aside(fresh, &l.entry, &r) {
                Some(fresh) => fresh,
                None => return,
            },
            _ => fresh,
        };
        // Whether an install renamed the download's partial file into place.
        let mut placed_partial = false;
        let target = match step {
            Step::Delete { target, .. } => match self.folder.delete(fresh, target.clone()) {
                Ok(removed) => {
                    if removed {
                        metrics().synced.with_label_values(&["delete"]).inc();
                        info!(event = %"deleted", path = %path, from = %target.modified_by,
                              version = %target.version, "deleted");
                    }
                    target
                }
                Err(e) => return warn!(path = %path, error = %e, "cannot delete"),
            },
            Step::Adopt { target } => {
                match self.folder.adopt(fresh, target.clone()) {
                    Ok(Some(mode)) => {
                        metrics().synced.with_label_values(&["mode"]).inc();
                        info!(event = %"mode_synced", path = %path, from = %target.modified_by,
                              mode = %format!("{mode:03o}"), "file mode changed to match");
                    }
                    Ok(None) => {}
                    Err(e) => error!(path = %path, error = %e, "cannot adopt a version"),
                }
                target
            }
            Step::Install { target } => {
                // An install is only planned with the bytes here.
                let Some((f, took)) = fetched else { return };
                let (from, fetched, reused, resumed) =
                    (f.from(), f.fetched(), f.reused(), f.resumed());
                let partial = f.is_partial_of(&self.s.staging, &target);
                match self.folder.install(fresh, target.clone(), f) {
                    Ok(_) => {
                        placed_partial = partial;
                        let m = metrics();
                        m.synced.with_label_values(&["install"]).inc();
                        m.fetched_bytes.inc_by(fetched);
                        m.reused_bytes.inc_by(reused);
                        info!(event = %"synced", path = %path, from = %from, bytes = target.size,
                              ms = took.as_millis() as u64, fetched, reused, resumed,
                              sha256 = %target.sha256.short(), "synced");
                    }
                    Err(e @ FolderError::Journal(_)) => {
                        return warn!(path = %path, error = %e, "not installing a download");
                    }
                    Err(e) => {
                        let why = format!("cannot put the downloaded file in place: {e}");
                        let backoff = self.retry_later(path.clone(), why);
                        return warn!(path = %path, error = %e, retry_in = %humantime::format_duration(backoff),
                                     "cannot put the downloaded file in place");
                    }
                }
                target
            }
        };
        let gone = self.downloads.finish(&path);
        self.failures.remove(&path);
        // The partial file of the content just installed is in place now:
        // no need to look for it in staging.
        self.drop_partial_of(gone.filter(|g| !(placed_partial && g.sha256 == target.sha256)));
        self.report(target);
    }

    /// Holds back a remote version because the local file at its path
    /// cannot be read: a download is tried again after a backoff; a
    /// deletion waits for the next change there.
    pub(super) fn hold_back(&mut self, r: FileEntry) {
        let path = r.path.clone();
        if !r.deleted {
            self.note_failure(path.clone(), "cannot check the local file".into());
            let backoff = self.downloads.want_later(r, Instant::now());
            warn!(path = %path, retry_in = %humantime::format_duration(backoff),
                  "cannot check the local file; not replacing it yet");
        } else {
            warn!(path = %path, "cannot check the local file; not deleting it");
        }
    }

    /// A name for keeping `loser` beside its path: `NAME.conflict-<peer>-<stamp>.EXT`,
    /// the same on every peer that holds the loser (so their copies merge).
    /// An existing file there with other content is never replaced: the
    /// stamp gets `-2`, `-3`, ... instead.
    pub(super) fn conflict_name(&self, loser: &FileEntry) -> Option<RelPath> {
        let stamp = fsops::stamp(loser.mtime_ns);
        for n in 1..=100 {
            let s = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            let c = loser.path.conflict_copy(&loser.modified_by, &s).ok()?;
            let same = self.folder.get(&c).is_some_and(|e| {
                !e.entry.deleted && e.stat.is_some() && e.entry.sha256 == loser.sha256
            });
            match self.folder.root().look(&c) {
                Ok(Found::Missing) => return Some(c),
                Ok(Found::File(st))
                    if same && self.folder.get(&c).and_then(|e| e.stat) == Some(st) =>
                {
                    return Some(c)
                }
                _ => {}
            }
        }
        None
    }

    /// Keeps the local (losing) content as a conflict copy; returns the
    /// proof for the path, which now holds no file. `None` if it could not.
    pub(super) fn move_aside(
        &mut self,
        fresh: Fresh,
        loser: &FileEntry,
        winner: &FileEntry,
    ) -> Option<Fresh> {
        let path = &loser.path;
        let Some(copy) = self.conflict_name(loser) else {
            warn!(path = %path, "no usable conflict-copy name; keeping local version");
            return None;
        };
        let (stat, fresh) = match self.folder.move_aside(fresh, &copy) {
            Ok(moved) => moved,
            Err(e) => {
                warn!(path = %path, error = %e, "cannot keep conflict copy; keeping local version");
                return None;
            }
        };
        metrics().conflicts.inc();
        info!(event = %"conflict", path = %path, copy = %copy, winner = %winner.modified_by,
              loser = %loser.modified_by, "concurrent edits; losing version kept as a copy");
        let mut version = self
            .folder
            .get(&copy)
            .map(|c| c.entry.version.clone())
            .unwrap_or_default();
        version.bump_at(&self.replica, unix_now());
        let entry = FileEntry {
            path: copy.clone(),
            version,
            modified_by: self.s.name.clone(),
            ..loser.clone()
        };
        self.record_local(entry, Some(stat));
        Some(fresh)
    }

    /// Removes what failed tries of `gone` (a download no longer wanted,
    /// which no worker has) left to resume from: nothing will resume it.
    fn drop_partial_of(&self, gone: Option<FileEntry>) {
        if let Some(e) = gone {
            transfer::drop_partial(&self.s.staging, &e);
        }
    }

    pub(super) fn want(&mut self, r: FileEntry) {
        let replaced = self.downloads.want(r);
        self.drop_partial_of(replaced);
    }

    /// Applies a version the tracker sent, remembering who holds it for
    /// the download it may start.
    pub(super) fn apply_cluster_file(&mut self, f: ClusterFile) {
        let (path, sha256) = (f.entry.path.clone(), f.entry.sha256);
        let known = self.folder.get(&path).is_some_and(|l| {
            match f.entry.version.compare(&l.entry.version) {
                Causality::DominatedBy => true,
                // Equal versions with other content are a conflict.
                Causality::Equal => f.entry.same_content(&l.entry),
                Causality::Dominates | Causality::Concurrent => false,
            }
        });
        if known && self.downloads.wanted(&path).is_none() {
            // Our version already is this one or newer (most often: another
            // peer now holds what we hold): whatever the disk says, there is
            // nothing to apply, so no need to look at it.
            return;
        }
        self.apply_remote(f.entry, None);
        self.downloads.held_by(&path, sha256, f.holders);
    }

    /// Hands the queued downloads to the workers, small files in batches.
    pub(super) fn dispatch(&mut self) {
        let mut small = Vec::new();
        while let Some(entry) = self.downloads.next_job() {
            let holders = self
                .downloads
                .holders(&entry.path)
                .iter()
                .filter_map(|name| self.peers.get(name).cloned())
                .collect();
            let job = match transfer::batchable(&entry) {
                true => {
                    small.push((entry, holders));
                    if small.len() < transfer::BATCH_FILES {
                        continue;
                    }
                    std::mem::take(&mut small)
                }
                false => vec![(entry, holders)],
            };
            if self.jobs.send(Job { files: job }).is_err() {
                return;
            }
        }
        if !small.is_empty() {
            let _ = self.jobs.send(Job { files: small });
        }
    }

    pub(super) fn on_done(
        &mut self,
        entry: FileEntry,
        result: Result<Fetched, FetchError>,
        took: Duration,
    ) {
        let path = entry.path.clone();
        let wanted = self.downloads.done(&path);
        let outcome = match &result {
            Ok(_) => Outcome::Fetched,
            Err(FetchError::Deleted(_) | FetchError::NotFound(_)) => Outcome::Superseded,
            Err(_) => Outcome::Failed,
        };
        let plan = decide::plan_done(wanted.as_ref(), &entry.version, outcome);
        if result.is_err() {
            // A failed try may leave a partial file to resume from; once
            // that content is no longer wanted here, nothing will.
            let useless = match plan {
                DonePlan::Forget => true,
                DonePlan::FetchAgain => self
                    .downloads
                    .wanted(&path)
                    .is_none_or(|w| w.sha256 != entry.sha256),
                DonePlan::Apply | DonePlan::Retry => false,
            };
            if useless {
                transfer::drop_partial(&self.s.staging, &entry);
            }
        }
        match (plan, result) {
            (DonePlan::FetchAgain, _) => self.downloads.again(&path),
            (DonePlan::Apply, Ok(f)) => {
                self.apply_remote(entry, Some((f, took)));
                self.downloads.settle(&path);
            }
            (DonePlan::Forget, Err(e)) => {
                // Superseded at the tracker: a notification brings what replaced it.
                metrics().fetch_failures.inc();
                warn!(event = %"fetch_failed", path = %path, error = %e, "download dropped");
                self.downloads.finish(&path);
                self.failures.remove(&path);
            }
            (_, Err(e)) => {
                metrics().fetch_failures.inc();
                let backoff = self.retry_later(path.clone(), e.to_string());
                warn!(event = %"fetch_failed", path = %path, error = %e, retry_in = %humantime::format_duration(backoff),
                      "download failed");
            }
            (_, Ok(_)) => {}
        }
    }

    /// Schedules the wanted version of `path` to be fetched again, after a
    /// backoff that doubles per failure (1 s to 30 s), because of `why`;
    /// returns the backoff.
    pub(super) fn retry_later(&mut self, path: RelPath, why: String) -> Duration {
        let backoff = self
            .downloads
            .retry_later(&path, Instant::now())
            .unwrap_or_default();
        self.note_failure(path, why);
        backoff
    }

    /// Keeps `why` as the latest failure of `path`, for the heartbeats to
    /// report (only the latest [`zync_proto::MAX_TRANSFERS`]).
    pub(super) fn note_failure(&mut self, path: RelPath, why: String) {
        self.failures.remove(&path);
        self.failures.insert(path, why);
        while self.failures.len() > zync_proto::MAX_TRANSFERS {
            self.failures.pop_front();
        }
    }
}
