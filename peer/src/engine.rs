//! The sync engine: one thread that owns the local index and makes every
//! sync decision.
//!
//! Inputs arrive on one channel: debounced file-system events, tracker
//! notifications, heartbeat trouble, finished downloads. For each it
//! reconciles the disk with the index (hashing only what changed), resolves
//! remote versions against local ones (version vectors, tombstones,
//! conflict copies), hands downloads to a bounded pool of fetch workers,
//! and reports its own changes to the tracker.
//!
//! The rule that keeps data safe: a remote version is applied only after the
//! disk has been re-checked *at that moment*, and resolved against what the
//! disk holds then. A local edit made while a pull was running is indexed
//! first, becomes a version of its own, and is never overwritten silently.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};
use hashlink::LinkedHashSet;
use tracing::{debug, error, info, warn};
use zync_proto::{
    Causality, Event, FileEntry, Hash, Notification, RelPath, TrackerReply, TrackerRequest,
    VersionVector, PAGE_BYTES, STATE_DIR_NAME,
};

use crate::decide::{self, DonePlan, LocalPlan, Outcome, RemotePlan, Step};
use crate::folder::Folder;
use crate::fsops::{self, Found};
use crate::hashing::{self, HashError, Stat};
use crate::index::Record;
use crate::link::{LinkEvent, Registration};
use crate::transfer::{FetchError, Fetched};
use zync_net::{self as net, NetError, TrackerClient};

/// Everything the engine is told.
pub enum Input {
    /// Paths the watcher saw change (debounced).
    Fs(Vec<PathBuf>),
    /// The watcher lost events: rescan everything.
    Rescan,
    /// From the tracker links.
    Link(LinkEvent),
    /// A fetch worker finished.
    Done {
        /// What was fetched.
        entry: FileEntry,
        /// The result.
        result: Result<Fetched, FetchError>,
        /// How long it took.
        took: Duration,
    },
}

/// A download job for the worker pool.
pub struct Job {
    /// The version to fetch.
    pub entry: FileEntry,
}

/// The engine's fixed surroundings.
pub struct Setup {
    /// The synced folder (canonical).
    pub root: PathBuf,
    /// Temp files for downloads (inside the state folder, same file system).
    pub staging: PathBuf,
    /// This peer's name.
    pub name: String,
    /// Where other peers reach our block server.
    pub advertise: String,
    /// Tracker endpoint.
    pub tracker: String,
    /// Concurrent downloads.
    pub workers: usize,
    /// Gets a copy of every notification applied.
    pub observer: Option<Sender<Notification>>,
    /// How often to rescan the folder behind the watcher (`None`: never).
    pub rescan: Option<Duration>,
}

/// Why a path is being looked at; says which event a change found is logged as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// A watcher event, a remote version about to be applied, a retry.
    Event,
    /// The start-up scan, or a rescan after the watcher said it lost events.
    Scan,
    /// The periodic rescan: whatever it finds, the watcher missed.
    Rescan,
}

/// Least time between two index saves. The index is saved as soon as a
/// batch of changes is applied (so a crash loses at most this much), but
/// not more often than this.
const SAVE_EVERY: Duration = Duration::from_millis(50);

/// The index file is rewritten whole, so for a large index the pause after
/// a save grows with what the save cost: saving takes at most 1/`SAVE_SHARE`
/// of the engine's time, and the pause never exceeds [`SAVE_AT_MOST_EVERY`].
/// Losing the last unsaved changes in a crash is harmless: a file installed
/// but not recorded is re-hashed and, having the cluster's content, merges
/// with its version; a local edit not recorded is found by the next scan.
const SAVE_SHARE: u32 = 20;

/// Longest pause between saves of a dirty index.
const SAVE_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// The engine's state.
pub struct Engine {
    s: Setup,
    /// This replica's key in version vectors ([`crate::index::LocalIndex::replica`]).
    replica: String,
    /// The folder's index and served set, changed only through it.
    folder: Folder,
    tracker: TrackerClient,
    jobs: Sender<Job>,
    sub_endpoints: Sender<String>,
    registration: Arc<Registration>,
    // Tracker session.
    registered: bool,
    next_register: Option<Instant>,
    register_backoff: Duration,
    epoch: Option<u64>,
    seq: u64,
    need_snapshot: bool,
    outbox: Vec<FileEntry>,
    // Downloads.
    wanted: HashMap<RelPath, FileEntry>,
    /// Paths waiting for a worker, in arrival order, each once (a hash set
    /// with an order: a full folder's worth of paths can wait here, and
    /// asking a `VecDeque` whether it holds one was quadratic).
    queue: LinkedHashSet<RelPath>,
    active: HashMap<RelPath, VersionVector>,
    /// Current backoff of paths whose download failed (doubles per failure).
    backoff: HashMap<RelPath, Duration>,
    /// When to try a failed download again. An entry is removed when it
    /// fires, so no deadline here is ever in the past for long.
    retry_at: HashMap<RelPath, Instant>,
    // Paths that changed while being hashed: look again shortly.
    unstable: BTreeSet<RelPath>,
    unstable_at: Option<Instant>,
    /// Remote versions held back because their path was unstable when they
    /// were to be applied: applied again once the disk has been looked at.
    deferred: HashMap<RelPath, FileEntry>,
    last_save: Instant,
    /// Pause after a save before the next ([`SAVE_SHARE`]).
    save_every: Duration,
    /// Fault injection for the crash tests (`ZYNC_FAULT`, unset in normal
    /// use): `kill-after-install:PATH` kills the process with SIGKILL right
    /// after PATH is renamed into place, before the index records it;
    /// `no-saves-after-registering` stops saving the index once registered
    /// (a save that never comes, as on a very slow disk), so a later kill
    /// loses every change since but what the journal holds.
    fault: Option<String>,
    /// Set by `no-saves-after-registering`.
    saves_stopped: bool,
    /// When the next periodic rescan is due.
    next_rescan: Option<Instant>,
}

impl Engine {
    /// An engine over `folder`, talking to the tracker and workers through the given ends.
    pub fn new(
        s: Setup,
        folder: Folder,
        ctx: &net::Context,
        jobs: Sender<Job>,
        sub_endpoints: Sender<String>,
        registration: Arc<Registration>,
    ) -> Engine {
        let tracker = TrackerClient::new(ctx, &s.tracker, Duration::from_secs(2));
        let s_rescan = s.rescan;
        Engine {
            replica: folder.replica(&s.name),
            s,
            folder,
            tracker,
            jobs,
            sub_endpoints,
            registration,
            registered: false,
            next_register: Some(Instant::now()),
            register_backoff: Duration::from_millis(250),
            epoch: None,
            seq: 0,
            need_snapshot: false,
            outbox: Vec::new(),
            wanted: HashMap::new(),
            queue: LinkedHashSet::new(),
            active: HashMap::new(),
            backoff: HashMap::new(),
            retry_at: HashMap::new(),
            unstable: BTreeSet::new(),
            unstable_at: None,
            deferred: HashMap::new(),
            last_save: Instant::now(),
            save_every: SAVE_EVERY,
            fault: std::env::var("ZYNC_FAULT").ok(),
            saves_stopped: false,
            next_rescan: s_rescan.map(|d| Instant::now() + d),
        }
    }

    /// Runs until `shutdown` fires (or its sender is dropped).
    pub fn run(mut self, inputs: Receiver<Input>, shutdown: Receiver<()>) {
        info!(dir = %self.s.root.display(), name = %self.s.name, replica = %self.replica,
              endpoint = %self.s.advertise, files = self.folder.len(), "peer starting");
        self.replay_journal();
        self.scan(Cause::Scan);
        loop {
            self.timers();
            self.flush_outbox();
            self.dispatch();
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            select! {
                recv(shutdown) -> _ => break,
                recv(inputs) -> msg => match msg {
                    Ok(input) => {
                        self.handle(input);
                        // Take whatever else is queued before doing timer work.
                        for input in inputs.try_iter().take(256) {
                            self.handle(input);
                        }
                    }
                    Err(_) => break,
                },
                default(wait) => {}
            }
        }
        self.stop();
    }

    fn stop(&mut self) {
        if self.registered {
            let req = TrackerRequest::Unregister {
                name: self.s.name.clone(),
                device: self.folder.device,
            };
            let _ = self.tracker.request(&req);
        }
        if let Err(e) = self.folder.save() {
            error!(error = %e, "could not save the index");
        }
        info!("peer stopped");
    }

    fn next_deadline(&self) -> Instant {
        let mut t = Instant::now() + Duration::from_millis(500);
        for d in [self.next_register, self.unstable_at, self.next_rescan]
            .into_iter()
            .flatten()
        {
            t = t.min(d);
        }
        for at in self.retry_at.values() {
            t = t.min(*at);
        }
        if self.folder.is_dirty() {
            t = t.min(self.last_save + self.save_every);
        }
        t
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.next_register.is_some_and(|t| t <= now) {
            self.register();
        }
        if self.registered && self.need_snapshot {
            self.snapshot();
        }
        if self.unstable_at.is_some_and(|t| t <= now) {
            self.unstable_at = None;
            for p in std::mem::take(&mut self.unstable) {
                if self.reconcile_local(&p, Cause::Event) {
                    if let Some(r) = self.deferred.remove(&p) {
                        self.apply_remote(r, None);
                    }
                }
            }
        }
        if self.next_rescan.is_some_and(|t| t <= now) {
            self.scan(Cause::Rescan);
            self.next_rescan = self.s.rescan.map(|d| Instant::now() + d);
        }
        let due: Vec<RelPath> = self
            .retry_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            self.retry_at.remove(&p);
            if self.wanted.contains_key(&p)
                && !self.active.contains_key(&p)
                && !self.queue.contains(&p)
            {
                self.queue.insert(p);
            }
        }
        if self.folder.is_dirty()
            && !self.saves_stopped
            && now.duration_since(self.last_save) >= self.save_every
        {
            if let Err(e) = self.folder.save() {
                error!(error = %e, "could not save the index");
            }
            self.last_save = Instant::now();
            let took = self.last_save.duration_since(now);
            self.save_every = (took * SAVE_SHARE).clamp(SAVE_EVERY, SAVE_AT_MOST_EVERY);
            debug!(
                entries = self.folder.len(),
                ms = took.as_millis() as u64,
                next_in_ms = self.save_every.as_millis() as u64,
                "index saved"
            );
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Fs(paths) => self.on_fs(paths),
            Input::Rescan => self.scan(Cause::Scan),
            Input::Link(LinkEvent::Note(n)) => self.on_note(n),
            Input::Link(LinkEvent::TrackerLost { generation }) => {
                if self.registered && self.is_current(generation) {
                    warn!(event = %"tracker_lost", tracker = %self.s.tracker, "tracker stopped answering heartbeats");
                    self.registered = false;
                    self.schedule_register(false);
                }
            }
            Input::Link(LinkEvent::ForgotUs { generation }) => {
                if self.registered && self.is_current(generation) {
                    info!(tracker = %self.s.tracker, "tracker does not know us any more; registering again");
                    self.registered = false;
                    self.schedule_register(true);
                }
            }
            Input::Done {
                entry,
                result,
                took,
            } => self.on_done(entry, result, took),
        }
    }

    // ---- tracker session -------------------------------------------------

    fn schedule_register(&mut self, now: bool) {
        if now {
            self.register_backoff = Duration::from_millis(250);
        }
        if self.next_register.is_none() || now {
            self.next_register = Some(
                Instant::now()
                    + if now {
                        Duration::ZERO
                    } else {
                        self.register_backoff
                    },
            );
        }
    }

    fn batches(&self) -> Vec<Vec<FileEntry>> {
        batch(self.folder.iter().map(|le| le.entry.clone()).collect())
    }

    /// True if a heartbeat sent under `generation` was sent after the latest
    /// registration (else what it found out is already out of date).
    fn is_current(&self, generation: u64) -> bool {
        generation == self.registration.generation.load(Ordering::Acquire)
    }

    fn register(&mut self) {
        self.next_register = None;
        // Registering reports the whole index: record it first.
        let saved = match self.saves_stopped {
            true => Ok(()),
            false => self.folder.save(),
        };
        if let Err(e) = saved {
            return self.register_failed(format!("cannot save the index first: {e}"));
        }
        self.last_save = Instant::now();
        let mut batches = self.batches().into_iter();
        let first = batches.next().unwrap_or_default();
        let req = TrackerRequest::Register {
            name: self.s.name.clone(),
            device: self.folder.device,
            endpoint: self.s.advertise.clone(),
            files: first,
        };
        let reply = self.tracker.request(&req).and_then(|r| {
            for files in batches {
                let req = TrackerRequest::Update {
                    name: self.s.name.clone(),
                    device: self.folder.device,
                    files,
                };
                self.tracker.request(&req)?;
            }
            Ok(r)
        });
        match reply {
            Ok(TrackerReply::Registered {
                epoch,
                publish,
                heartbeat_ms,
            }) => {
                if self.epoch.is_some_and(|e| e != epoch) {
                    info!(event = %"tracker_restarted", tracker = %self.s.tracker,
                          epoch = %format!("{epoch:016x}"), "tracker restarted; re-registered");
                }
                info!(tracker = %self.s.tracker, files = self.folder.len(), "registered with tracker");
                self.epoch = Some(epoch);
                self.registered = true;
                self.register_backoff = Duration::from_millis(250);
                self.registration
                    .heartbeat_ms
                    .store(heartbeat_ms, Ordering::Relaxed);
                self.registration.generation.fetch_add(1, Ordering::Release);
                let host = net::host_of(&self.s.tracker).to_owned();
                let _ = self.sub_endpoints.send(net::reachable(&publish, &host));
                self.outbox.clear();
                self.need_snapshot = true;
                if self.fault.as_deref() == Some("no-saves-after-registering") {
                    warn!("ZYNC_FAULT: the index is not saved from now on");
                    self.saves_stopped = true;
                }
            }
            Ok(_) => self.register_failed("unexpected reply".into()),
            Err(e) => self.register_failed(e.to_string()),
        }
    }

    fn register_failed(&mut self, why: String) {
        let wait = self.register_backoff;
        warn!(tracker = %self.s.tracker, error = %why, retry_in = %humantime::format_duration(wait),
              "cannot register with tracker");
        self.register_backoff = (self.register_backoff * 2).min(Duration::from_secs(10));
        self.next_register = Some(Instant::now() + wait);
    }

    /// Fetches the cluster index page by page and applies each page as it
    /// comes (memory stays at one page). The snapshot counts as of the first
    /// page's `seq`: what changes while paging is also published, and the
    /// notifications after that `seq` are applied next (twice is harmless).
    fn snapshot(&mut self) {
        self.need_snapshot = false;
        let mut after = None;
        let mut first_seq = None;
        loop {
            match self.tracker.request(&TrackerRequest::List { after }) {
                Ok(TrackerReply::Snapshot {
                    epoch,
                    seq,
                    files,
                    next,
                    ..
                }) => {
                    if self.epoch != Some(epoch) {
                        // A tracker other than the one we registered with: start over.
                        self.registered = false;
                        self.schedule_register(true);
                        return;
                    }
                    debug!(
                        seq,
                        files = files.len(),
                        more = next.is_some(),
                        "applying snapshot page"
                    );
                    first_seq.get_or_insert(seq);
                    for f in files {
                        self.apply_remote(f.entry, None);
                    }
                    match next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                Ok(_) => return self.need_snapshot = true,
                Err(e) => {
                    warn!(error = %e, "cannot fetch the cluster index");
                    return self.tracker_failed();
                }
            }
        }
        if let Some(seq) = first_seq {
            self.seq = seq;
        }
    }

    fn tracker_failed(&mut self) {
        self.registered = false;
        self.schedule_register(false);
    }

    fn on_note(&mut self, n: Notification) {
        if !self.registered {
            return; // a snapshot follows registration
        }
        if self.epoch != Some(n.epoch) {
            self.registered = false;
            self.schedule_register(true);
            return;
        }
        match n.event {
            Event::Hugz => {
                if n.seq > self.seq {
                    self.need_snapshot = true;
                }
            }
            _ if n.seq <= self.seq => {}
            _ if n.seq > self.seq + 1 => {
                debug!(
                    have = self.seq,
                    got = n.seq,
                    "missed notifications; fetching a snapshot"
                );
                self.need_snapshot = true;
            }
            _ => {
                self.seq = n.seq;
                if let Some(o) = &self.s.observer {
                    let _ = o.try_send(n.clone());
                }
                let event = n.event;
                match event {
                    Event::FileChanged { file } => self.apply_remote(file.entry, None),
                    Event::PeerJoined { peer } if peer.name != self.s.name => {
                        info!(event = %"peer_joined", peer = %peer.name, endpoint = %peer.endpoint, "peer joined");
                        // A new source: retry what was waiting for one.
                        for at in self.retry_at.values_mut() {
                            *at = Instant::now();
                        }
                    }
                    Event::PeerLeft { name } if name != self.s.name => {
                        info!(event = %"peer_left", peer = %name, "peer left");
                    }
                    _ => {}
                }
            }
        }
    }

    /// Queues a new local version for the tracker. Until the peer is
    /// registered there is nothing to queue: registering sends the whole
    /// index (and a first scan of a large folder would queue all of it).
    fn report(&mut self, entry: FileEntry) {
        if self.registered {
            self.outbox.push(entry);
        }
    }

    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() || !self.registered {
            return;
        }
        // Recorded before reported: a crash after this loses no change the
        // cluster has heard of.
        if let Err(e) = self.folder.flush_journal() {
            return error!(error = %e, "cannot journal local changes; not reporting them yet");
        }
        for files in batch(std::mem::take(&mut self.outbox)) {
            let req = TrackerRequest::Update {
                name: self.s.name.clone(),
                device: self.folder.device,
                files,
            };
            match self.tracker.request(&req) {
                Ok(_) => {}
                Err(NetError::Refused {
                    kind: zync_proto::ErrorKind::UnknownPeer,
                    ..
                }) => {
                    self.registered = false;
                    self.schedule_register(true);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot report changes to the tracker");
                    // Registration sends the whole index, so nothing is lost.
                    self.tracker_failed();
                    return;
                }
            }
        }
    }

    // ---- local side ------------------------------------------------------

    /// Adopts what the journal recorded since the last save of the index
    /// ([`crate::index::LocalIndex::take_journal`]), before the start-up scan compares the
    /// disk with the index. A local version was reported, so it is adopted
    /// as it is. A remote version is adopted where the disk shows it was
    /// applied: a deletion if the file is gone; a download if the file holds
    /// its content, or is still the inode that was renamed into place
    /// (changed since: the scan then sees a local edit made *after* that
    /// version, which is what it is). So an installed file is not taken for
    /// a new local edit, and a reported file gone since is reported gone.
    fn replay_journal(&mut self) {
        for record in self.folder.take_journal() {
            let (r, stat) = match record {
                Record::Local { entry, stat } => (entry, stat),
                Record::Remote { entry: r, ino } => {
                    let stat = match fsops::look(&self.s.root, &r.path) {
                        Ok(Found::Missing) if r.deleted => None,
                        Ok(Found::File(st)) if !r.deleted => {
                            match hashing::hash_file(&self.s.root.join(r.path.as_str())) {
                                Ok(h) if h.sha256 == r.sha256 => Some(h.stat),
                                _ if ino == Some(st.ino) => None, // installed, edited since
                                _ => continue,                    // the install never happened
                            }
                        }
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

    /// Kills the process if `ZYNC_FAULT` is `kill-after-install:PATH`.
    fn kill_after_install(&self, path: &RelPath) {
        let Some(("kill-after-install", p)) = self.fault.as_deref().and_then(|f| f.split_once(':'))
        else {
            return;
        };
        if p == path.as_str() {
            error!(path = %path, "ZYNC_FAULT: killed right after an install");
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        }
    }

    /// Journals `record` and writes it out at once: for a change about to
    /// be made on disk.
    fn journal_now(&mut self, record: &Record) -> Result<(), crate::index::IndexError> {
        self.folder.journal(record)?;
        self.folder.flush_journal()
    }

    /// Records a new local version (index, and journal if it will be
    /// reported before the next save) and queues it for the tracker.
    fn record_local(&mut self, entry: FileEntry, stat: Option<Stat>) {
        if self.registered {
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

    /// Looks at every path on disk or in the index.
    fn scan(&mut self, cause: Cause) {
        let t = Instant::now();
        let mut paths: BTreeSet<RelPath> =
            self.folder.iter().map(|le| le.entry.path.clone()).collect();
        self.walk(&self.s.root.clone(), &mut paths);
        for p in &paths {
            self.reconcile_local(p, cause);
        }
        let (files, ms) = (paths.len(), t.elapsed().as_millis() as u64);
        match cause {
            Cause::Rescan => debug!(files, ms, "rescanned folder"),
            _ => info!(files, ms, "scanned folder"),
        }
    }

    fn walk(&self, dir: &Path, out: &mut BTreeSet<RelPath>) {
        let state = self.s.root.join(STATE_DIR_NAME);
        let it = walkdir::WalkDir::new(dir).follow_links(false).into_iter();
        for item in it.filter_entry(|e| e.path() != state) {
            match item {
                Ok(e) if e.file_type().is_file() => {
                    match RelPath::from_local(&self.s.root, e.path()) {
                        Ok(p) => {
                            out.insert(p);
                        }
                        Err(err) => warn!(path = %e.path().display(), error = %err, "not synced"),
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot read part of the folder"),
            }
        }
    }

    fn on_fs(&mut self, paths: Vec<PathBuf>) {
        let state = self.s.root.join(STATE_DIR_NAME);
        let mut rels = BTreeSet::new();
        for p in paths {
            if p.starts_with(&state) {
                continue;
            }
            if p == self.s.root {
                return self.scan(Cause::Scan);
            }
            let Ok(rel) = RelPath::from_local(&self.s.root, &p) else {
                debug!(path = %p.display(), "ignoring event outside the syncable namespace");
                continue;
            };
            if let Ok(Found::Dir) = fsops::look(&self.s.root, &rel) {
                self.walk(&p, &mut rels);
            }
            rels.extend(self.folder.paths_within(&rel));
            rels.insert(rel);
        }
        for rel in rels {
            self.reconcile_local(&rel, Cause::Event);
        }
    }

    /// Brings the index in line with what is on disk at `rel`: a new version
    /// if the content changed or the file went away. Returns whether the
    /// index now says what the disk holds; false while the file is being
    /// written (looked at again shortly) or cannot be read.
    fn reconcile_local(&mut self, rel: &RelPath, cause: Cause) -> bool {
        let found = match fsops::look(&self.s.root, rel) {
            Ok(f) => f,
            Err(e) => {
                warn!(path = %rel, error = %e, "cannot stat");
                return false;
            }
        };
        let cur = self.folder.get(rel).cloned();
        match found {
            Found::File(st) => {
                if !decide::needs_hash(cur.as_ref(), st) {
                    return true;
                }
                let h = match hashing::hash_file(&self.s.root.join(rel.as_str())) {
                    Ok(h) => h,
                    Err(HashError::Unstable) => {
                        self.unstable.insert(rel.clone());
                        self.unstable_at
                            .get_or_insert(Instant::now() + Duration::from_millis(250));
                        return false;
                    }
                    Err(HashError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        return self.reconcile_local(rel, cause);
                    }
                    Err(HashError::Io(e)) => {
                        warn!(path = %rel, error = %e, "cannot read");
                        return false;
                    }
                };
                let (kind, version) =
                    match decide::plan_hashed(cur.as_ref(), h.sha256, &self.replica, unix_now()) {
                        LocalPlan::NewVersion { kind, version } => (kind, version),
                        _ => {
                            self.folder.set_stat(rel, Some(h.stat));
                            return true;
                        }
                    };
                let entry = FileEntry {
                    path: rel.clone(),
                    size: h.stat.size,
                    mtime_ns: h.stat.mtime_ns,
                    sha256: h.sha256,
                    blocks: h.blocks,
                    version,
                    deleted: false,
                    modified_by: self.s.name.clone(),
                };
                log_local_change(cause, kind, &entry);
                self.record_local(entry, Some(h.stat));
                true
            }
            Found::Missing | Found::Dir | Found::Other => {
                let LocalPlan::Deleted { version } =
                    decide::plan_missing(cur.as_ref(), &self.replica, unix_now())
                else {
                    return true;
                };
                let entry = tombstone(rel.clone(), version, &self.s.name);
                log_local_change(cause, "deleted", &entry);
                self.record_local(entry, None);
                true
            }
        }
    }

    // ---- remote side -----------------------------------------------------

    /// Applies a remote version of a file, after re-checking the disk.
    /// Without `fetched` bytes, content that must be downloaded is queued and
    /// this is called again when it arrives.
    fn apply_remote(&mut self, r: FileEntry, fetched: Option<(Fetched, Duration)>) {
        let path = r.path.clone();
        if !self.reconcile_local(&path, Cause::Event) {
            // What is on disk is not known yet (being written, or unreadable):
            // replacing it now could destroy an edit the index has not seen.
            if self.unstable.contains(&path) {
                debug!(path = %path, "local file is changing; the remote version waits");
                self.deferred.insert(path, r);
            } else if !r.deleted {
                let backoff = self.retry_later(path.clone());
                self.wanted.insert(path.clone(), r);
                warn!(path = %path, retry_in = %humantime::format_duration(backoff),
                      "cannot check the local file; not replacing it yet");
            } else {
                warn!(path = %path, "cannot check the local file; not deleting it");
            }
            return;
        }
        let local = self.folder.get(&path).cloned();
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
        if let (true, Some(l)) = (aside, &local) {
            if !self.move_aside(&l.entry, &r) {
                return;
            }
        }
        let target = match step {
            Step::Delete { target, on_disk } => {
                if on_disk {
                    let record = Record::Remote {
                        entry: target.clone(),
                        ino: None,
                    };
                    if let Err(e) = self.journal_now(&record) {
                        return warn!(path = %path, error = %e, "cannot journal a deletion; not deleting");
                    }
                    if let Err(e) = fsops::remove_and_prune(&self.s.root, &path) {
                        return warn!(path = %path, error = %e, "cannot delete");
                    }
                    info!(event = %"deleted", path = %path, from = %target.modified_by, version = %target.version,
                          "deleted");
                }
                self.folder.put(target.clone(), None);
                target
            }
            Step::Adopt { target } => {
                let stat = local.as_ref().and_then(|l| l.stat);
                let record = Record::Remote {
                    entry: target.clone(),
                    ino: None,
                };
                if let Err(e) = self.folder.journal(&record) {
                    error!(path = %path, error = %e, "cannot journal a merged version");
                }
                self.folder.put(target.clone(), stat);
                target
            }
            Step::Install { target } => {
                // An install is only planned with the bytes here.
                let Some((f, took)) = fetched else { return };
                let record = Record::Remote {
                    entry: target.clone(),
                    ino: std::fs::symlink_metadata(&*f.file)
                        .ok()
                        .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
                };
                if let Err(e) = self.journal_now(&record) {
                    return warn!(path = %path, error = %e, "cannot journal a download; not installing it");
                }
                match fsops::install(f.file, &self.s.root, &path) {
                    Ok(stat) => {
                        self.kill_after_install(&path);
                        info!(event = %"synced", path = %path, from = %f.from, bytes = target.size,
                              ms = took.as_millis() as u64, sha256 = %target.sha256.short(), "synced");
                        self.folder.put(target.clone(), Some(stat));
                    }
                    Err(e) => {
                        let backoff = self.retry_later(path.clone());
                        return warn!(path = %path, error = %e, retry_in = %humantime::format_duration(backoff),
                                     "cannot put the downloaded file in place");
                    }
                }
                target
            }
        };
        self.wanted.remove(&path);
        self.backoff.remove(&path);
        self.retry_at.remove(&path);
        self.report(target);
    }

    /// A name for keeping `loser` beside its path: `NAME.conflict-<peer>-<stamp>.EXT`,
    /// the same on every peer that holds the loser (so their copies merge).
    /// An existing file there with other content is never replaced: the
    /// stamp gets `-2`, `-3`, ... instead.
    fn conflict_name(&self, loser: &FileEntry) -> Option<RelPath> {
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
            match fsops::look(&self.s.root, &c) {
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

    /// Keeps the local (losing) content as a conflict copy. False if it could not.
    fn move_aside(&mut self, loser: &FileEntry, winner: &FileEntry) -> bool {
        let path = &loser.path;
        let Some(copy) = self.conflict_name(loser) else {
            warn!(path = %path, "no usable conflict-copy name; keeping local version");
            return false;
        };
        let stat = match fsops::rename(&self.s.root, path, &copy) {
            Ok(st) => st,
            Err(e) => {
                warn!(path = %path, error = %e, "cannot keep conflict copy; keeping local version");
                return false;
            }
        };
        info!(event = %"conflict", path = %path, copy = %copy, winner = %winner.modified_by,
              loser = %loser.modified_by, "concurrent edits; losing version kept as a copy");
        self.folder.set_stat(path, None);
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
        true
    }

    fn want(&mut self, r: FileEntry) {
        let path = r.path.clone();
        if !decide::worth_wanting(self.wanted.get(&path), &r) {
            return;
        }
        self.wanted.insert(path.clone(), r);
        if !self.active.contains_key(&path) && !self.queue.contains(&path) {
            self.queue.insert(path);
        }
    }

    fn dispatch(&mut self) {
        while self.active.len() < self.s.workers {
            let Some(path) = self.queue.pop_front() else {
                break;
            };
            let Some(entry) = self.wanted.get(&path).cloned() else {
                continue;
            };
            self.active.insert(path, entry.version.clone());
            if self.jobs.send(Job { entry }).is_err() {
                return;
            }
        }
    }

    fn on_done(&mut self, entry: FileEntry, result: Result<Fetched, FetchError>, took: Duration) {
        let path = entry.path.clone();
        self.active.remove(&path);
        let outcome = match &result {
            Ok(_) => Outcome::Fetched,
            Err(FetchError::Deleted(_) | FetchError::NotFound(_)) => Outcome::Superseded,
            Err(_) => Outcome::Failed,
        };
        let wanted = self.wanted.get(&path).map(|w| &w.version);
        match (decide::plan_done(wanted, &entry.version, outcome), result) {
            (DonePlan::FetchAgain, _) => {
                self.queue.insert(path);
            }
            (DonePlan::Apply, Ok(f)) => self.apply_remote(entry, Some((f, took))),
            (DonePlan::Forget, Err(e)) => {
                // Superseded at the tracker: a notification brings what replaced it.
                warn!(event = %"fetch_failed", path = %path, error = %e, "download dropped");
                self.wanted.remove(&path);
                self.backoff.remove(&path);
            }
            (_, Err(e)) => {
                let backoff = self.retry_later(path.clone());
                warn!(event = %"fetch_failed", path = %path, error = %e, retry_in = %humantime::format_duration(backoff),
                      "download failed");
            }
            (_, Ok(_)) => {}
        }
    }

    /// Schedules the wanted version of `path` to be fetched again, after a
    /// backoff that doubles per failure (1 s to 30 s); returns the backoff.
    fn retry_later(&mut self, path: RelPath) -> Duration {
        let backoff = self.backoff.get(&path).map_or(Duration::from_secs(1), |b| {
            (*b * 2).min(Duration::from_secs(30))
        });
        self.backoff.insert(path.clone(), backoff);
        self.retry_at.insert(path, Instant::now() + backoff);
        backoff
    }
}

/// The one log line of a new local version: `event=local_change`, or
/// `event=missed_change` when only the periodic rescan found it.
fn log_local_change(cause: Cause, kind: &str, e: &FileEntry) {
    let sha256 = (!e.deleted).then(|| tracing::field::display(e.sha256.short()));
    match cause {
        Cause::Rescan => {
            warn!(event = %"missed_change", path = %e.path, kind = %kind, bytes = e.size, sha256,
                               version = %e.version, "local change the watcher missed, found by the rescan")
        }
        Cause::Event | Cause::Scan => {
            info!(event = %"local_change", path = %e.path, kind = %kind, bytes = e.size,
                                            sha256, version = %e.version, "local change")
        }
    }
}

/// Time since the Unix epoch (zero for a clock set before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The clock local changes are stamped with in version vectors
/// ([`VersionVector::bump_at`]): Unix seconds.
fn unix_now() -> u64 {
    since_epoch().as_secs()
}

fn tombstone(path: RelPath, version: VersionVector, by: &str) -> FileEntry {
    let now = since_epoch();
    FileEntry {
        path,
        size: 0,
        mtime_ns: now.as_nanos().min(i64::MAX as u128) as i64,
        sha256: Hash::EMPTY,
        blocks: Vec::new(),
        version,
        deleted: true,
        modified_by: by.to_owned(),
    }
}

/// Splits entries into batches of at most [`BATCH_BYTES`] (estimated), so no
/// tracker message comes near the message size limit.
fn batch(entries: Vec<FileEntry>) -> Vec<Vec<FileEntry>> {
    let mut out = vec![Vec::new()];
    let mut size = 0;
    for e in entries {
        let est = e.size_hint();
        if size + est > PAGE_BYTES && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            size = 0;
        }
        size += est;
        if let Some(b) = out.last_mut() {
            b.push(e);
        }
    }
    out
}
