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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};
use tracing::{debug, error, info, warn};
use zync_proto::{
    Causality, ClusterFile, Event, FileEntry, Hash, Notification, PeerInfo, RelPath, TrackerReply,
    TrackerRequest, VersionVector, PAGE_BYTES,
};

use crate::decide::{self, DonePlan, LocalPlan, Outcome, RemotePlan, Step};
use crate::downloads::Downloads;
use crate::folder::{Folder, FolderError, Fresh, Seen};
use crate::fsops::{self, Found};
use crate::hashing::{HashError, Hashed, Hashers, Stat};
use crate::ignore::{Ignore, IGNORE_FILE};
use crate::index::Record;
use crate::link::{LinkEvent, Registration};
use crate::session::{NoteVerdict, Session};
use crate::transfer::{self, FetchError, Fetched};
use zync_net::{self as net, NetError, TrackerClient};

mod local;
mod pager;
mod remote;
mod tracker;

pub use pager::{Page, Pager};

/// How long the engine waits for the tracker's answer to a request.
pub const TRACKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the engine is told.
pub enum Input {
    /// Paths the watcher saw change (debounced).
    Fs(Vec<PathBuf>),
    /// The watcher lost events: rescan everything.
    Rescan,
    /// From the tracker links.
    Link(LinkEvent),
    /// A hasher finished with a file.
    Hashed {
        /// The file.
        path: RelPath,
        /// Its hashes, or why there are none.
        result: Result<Hashed, HashError>,
    },
    /// A fetch worker finished.
    Done {
        /// What was fetched.
        entry: FileEntry,
        /// The result.
        result: Result<Fetched, FetchError>,
        /// How long it took.
        took: Duration,
    },
    /// The pager's reply to the engine's ask for a snapshot page.
    Page(Page),
}

/// A download job for the worker pool: one file, or up to
/// [`transfer::BATCH_FILES`] small ones, each with the live peers the
/// cluster said hold it (none: ask the tracker).
pub struct Job {
    /// The versions to fetch.
    pub files: Vec<transfer::Want>,
}

/// The engine's fixed surroundings.
pub struct Setup {
    /// Temp files for downloads (inside the state folder, same file system).
    pub staging: PathBuf,
    /// This peer's name.
    pub name: String,
    /// Where other peers reach our block server.
    pub advertise: String,
    /// Tracker endpoints, comma-separated, the first preferred.
    pub tracker: String,
    /// Which of them is in use, shared with the heartbeat and the fetchers.
    pub choice: net::Choice,
    /// Concurrent downloads.
    pub workers: usize,
    /// Downloads that may wait before the next snapshot page is fetched.
    pub backlog: usize,
    /// Gets a copy of every notification applied, and word of each
    /// snapshot applied whole.
    pub observer: Option<Sender<crate::Observed>>,
    /// How often to rescan the folder behind the watcher (`None`: never).
    pub rescan: Option<Duration>,
    /// Where the failed downloads are told to the heartbeat.
    pub progress: crate::transfer::Progress,
    /// Fetches the snapshot's pages off the engine's thread.
    pub pager: Pager,
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

/// The engine's state.
pub struct Engine {
    s: Setup,
    /// This replica's key in version vectors ([`crate::index::IndexStore::replica`]).
    replica: String,
    /// The folder's index and served set, changed only through it.
    folder: Folder,
    tracker: TrackerClient,
    jobs: Sender<Job>,
    sub_endpoints: Sender<String>,
    registration: Arc<Registration>,
    /// The tracker session's state machine.
    session: Session,
    /// The snapshot page asked of the pager and not yet answered: the
    /// ask's number and the page's cursor.
    page_asked: Option<(u64, Option<RelPath>)>,
    /// Asks for pages made so far (they number them).
    page_asks: u64,
    /// Entries of the last page not yet applied: applied a slice at a
    /// time, so downloads finishing meanwhile go on being installed.
    page_left: VecDeque<ClusterFile>,
    /// Whether `page_left` is the snapshot's last page.
    page_last: bool,
    /// Notifications that came while a page was asked for or being
    /// applied: applied after it, in the order they came, as they would
    /// be had the page been fetched on this thread.
    held_notes: Vec<Notification>,
    outbox: Vec<FileEntry>,
    /// Every path being downloaded or waiting to be, one state each.
    downloads: Downloads,
    /// Hash files off this thread.
    hashers: Hashers<RelPath>,
    /// Paths being hashed, and why they are being looked at.
    hashing: HashMap<RelPath, Cause>,
    /// The scan of the whole folder in progress, if one is.
    scanning: Option<local::Scan>,
    /// The first scan since start is done: until then the peer does not
    /// register (registering reports the whole index, which the first
    /// scan brings up to date).
    scanned_once: bool,
    /// The tracker has acknowledged every file the first scan found
    /// (logged once, as `event=scan_reported`).
    scan_reported: bool,
    // Paths that changed while being hashed: look again shortly.
    unstable: BTreeSet<RelPath>,
    unstable_at: Option<Instant>,
    /// Remote versions held back because their path was being hashed or
    /// written when they were to be applied: applied once the index says
    /// what the disk holds there.
    deferred: HashMap<RelPath, FileEntry>,
    /// Fault injection for the crash tests (`ZYNC_FAULT`, unset in normal
    /// use): `kill-after-install:PATH` kills the process with SIGKILL right
    /// after PATH is renamed into place, before the index records it;
    /// `no-saves-after-registering` stops saving the index once registered
    /// (a save that never comes, as on a very slow disk), so a later kill
    /// loses every change since but what the journal holds.
    fault: Option<String>,
    /// When the next periodic rescan is due.
    next_rescan: Option<Instant>,
    /// The other live peers, by name, as the tracker's snapshot and
    /// notifications tell them: where a download can go without a lookup.
    peers: HashMap<String, PeerInfo>,
    /// The paths this folder does not sync (`.zyncignore` and defaults).
    ignore: Ignore,
    /// When the metrics' gauges (and the failures heartbeats report) are
    /// next set (once a second).
    gauges_at: Instant,
    /// The latest download failures still waiting to be tried again, by
    /// path, oldest first (at most `MAX_TRANSFERS`).
    failures: hashlink::LinkedHashMap<RelPath, String>,
}

impl Engine {
    /// An engine over `folder`, talking to the tracker and workers through the given ends.
    pub fn new(
        s: Setup,
        mut folder: Folder,
        ctx: &net::Context,
        jobs: Sender<Job>,
        hashers: Hashers<RelPath>,
        sub_endpoints: Sender<String>,
        registration: Arc<Registration>,
    ) -> Engine {
        let tracker = TrackerClient::following(ctx, &s.tracker, TRACKER_TIMEOUT, s.choice.clone());
        let fault = std::env::var("ZYNC_FAULT").ok();
        if let Some(hook) = fault.as_deref().and_then(kill_after_install) {
            folder.on_install(hook);
        }
        let s_rescan = s.rescan;
        let workers = s.workers;
        let folder_root = folder.root().dir().to_path_buf();
        Engine {
            replica: folder.replica(&s.name),
            s,
            folder,
            tracker,
            jobs,
            hashers,
            hashing: HashMap::new(),
            scanning: None,
            scanned_once: false,
            scan_reported: false,
            sub_endpoints,
            registration,
            session: Session::new(Instant::now()),
            page_asked: None,
            page_asks: 0,
            page_left: VecDeque::new(),
            page_last: false,
            held_notes: Vec::new(),
            outbox: Vec::new(),
            downloads: Downloads::new(workers, transfer::BATCH_FILES),
            unstable: BTreeSet::new(),
            unstable_at: None,
            deferred: HashMap::new(),
            fault,
            next_rescan: s_rescan.map(|d| Instant::now() + d),
            peers: HashMap::new(),
            ignore: Ignore::load(folder_root.as_path()),
            gauges_at: Instant::now(),
            failures: hashlink::LinkedHashMap::new(),
        }
    }

    /// Runs until `shutdown` fires (or its sender is dropped).
    pub fn run(mut self, inputs: Receiver<Input>, shutdown: Receiver<()>) {
        info!(dir = %self.folder.root().dir().display(), name = %self.s.name, replica = %self.replica,
              endpoint = %self.s.advertise, files = self.folder.len(), "peer starting");
        self.replay_journal();
        self.scan(Cause::Scan);
        loop {
            self.timers();
            self.continue_scan();
            self.flush_outbox();
            self.note_scan_reported();
            self.dispatch();
            let wait = match self.scan_can_go() || !self.page_left.is_empty() {
                true => Duration::ZERO, // after a look at what came in
                false => self
                    .next_deadline()
                    .saturating_duration_since(Instant::now()),
            };
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
        if self.session.is_registered() {
            let req = TrackerRequest::Unregister {
                name: self.s.name.clone(),
                device: self.folder.device(),
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
        for d in [
            self.session.register_at().filter(|_| self.scanned_once),
            self.unstable_at,
            self.next_rescan,
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(d);
        }
        if let Some(at) = self.downloads.next_wake() {
            t = t.min(at);
        }
        if let Some(at) = self.folder.save_due() {
            t = t.min(at);
        }
        t
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.scanned_once && self.session.start_register(now) {
            self.register();
        }
        if self.session.wants_snapshot() || !self.page_left.is_empty() {
            self.snapshot();
        }
        self.release_held_notes();
        if self.unstable_at.is_some_and(|t| t <= now) {
            self.unstable_at = None;
            for p in std::mem::take(&mut self.unstable) {
                self.look_again(&p, Cause::Event);
            }
        }
        if self.next_rescan.is_some_and(|t| t <= now) {
            self.scan(Cause::Rescan);
            self.next_rescan = self.s.rescan.map(|d| Instant::now() + d);
        }
        self.downloads.wake_due(now);
        if self.gauges_at <= now {
            self.gauges_at = now + Duration::from_secs(1);
            let m = crate::metrics::metrics();
            let (files, bytes) = self.downloads.needed();
            m.needed_files.set(files as i64);
            m.needed_bytes.set(bytes as i64);
            m.transfers_in_flight.set(self.downloads.active() as i64);
            m.index_entries.set(self.folder.len() as i64);
            m.registered.set(i64::from(self.session.is_registered()));
            let failing = self.downloads.waiting();
            m.failing_files.set(failing as i64);
            // A path no longer wanted (installed, superseded, ignored) has
            // nothing left to fail.
            let downloads = &self.downloads;
            self.failures.retain(|p, _| downloads.wanted(p).is_some());
            let latest = self
                .failures
                .iter()
                .rev()
                .map(|(p, e)| zync_proto::Failure::new(p.clone(), e))
                .collect();
            self.s.progress.set_failures(failing as u64, latest);
        }
        if let Err(e) = self.folder.save_if_due(now) {
            error!(error = %e, "could not save the index");
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Fs(paths) => self.on_fs(paths),
            Input::Rescan => self.scan(Cause::Scan),
            Input::Link(LinkEvent::Note(n)) => self.on_note(*n),
            Input::Page(page) => self.on_page(page),
            Input::Hashed { path, result } => self.on_hashed(path, result),
            Input::Link(LinkEvent::TrackerLost { generation }) => {
                if self.session.is_registered() && self.is_current(generation) {
                    warn!(event = %"tracker_lost", tracker = %self.tracker.endpoint(),
                          "lost the tracker (connection broken or heartbeats unanswered)");
                    self.session.lost(Instant::now(), false);
                }
            }
            Input::Link(LinkEvent::ForgotUs { generation }) => {
                if self.session.is_registered() && self.is_current(generation) {
                    info!(tracker = %self.tracker.endpoint(), "tracker does not know us any more; registering again");
                    self.session.lost(Instant::now(), true);
                }
            }
            Input::Link(LinkEvent::PreferredBack { generation }) => {
                if self.session.is_registered()
                    && self.is_current(generation)
                    && self.s.choice.get() != 0
                {
                    self.fail_back();
                }
            }
            Input::Done {
                entry,
                result,
                took,
            } => self.on_done(entry, result, took),
        }
    }
}

/// For `ZYNC_FAULT=kill-after-install:PATH`: a hook that kills the process
/// with SIGKILL right after PATH is renamed into place.
fn kill_after_install(fault: &str) -> Option<crate::folder::InstallHook> {
    let ("kill-after-install", p) = fault.split_once(':')? else {
        return None;
    };
    let p = p.to_owned();
    Some(Box::new(move |path: &RelPath| {
        if p == path.as_str() {
            error!(path = %path, "ZYNC_FAULT: killed right after an install");
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        }
    }))
}

/// The one log line of a new local version: `event=local_change`, or
/// `event=missed_change` when only the periodic rescan found it.
fn log_local_change(cause: Cause, kind: &str, e: &FileEntry) {
    crate::metrics::metrics()
        .local_changes
        .with_label_values(&[kind])
        .inc();
    let sha256 = (!e.deleted).then(|| tracing::field::display(e.sha256.short()));
    let mode = e.mode.map(|m| tracing::field::display(format!("{m:03o}")));
    match cause {
        Cause::Rescan => {
            warn!(event = %"missed_change", path = %e.path, kind = %kind, bytes = e.size, sha256,
                  mode, version = %e.version, "local change the watcher missed, found by the rescan")
        }
        Cause::Event | Cause::Scan => {
            info!(event = %"local_change", path = %e.path, kind = %kind, bytes = e.size,
                  sha256, mode, version = %e.version, "local change")
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
        lengths: Vec::new(),
        mode: None,
    }
}

/// Splits entries into batches of at most `bytes` (estimated; at most
/// [`PAGE_BYTES`], so no tracker message comes near the message size
/// limit); lazily, so a large index is never all in memory at once.
fn batch(
    entries: impl IntoIterator<Item = FileEntry>,
    bytes: usize,
) -> impl Iterator<Item = Vec<FileEntry>> {
    let bytes = bytes.min(PAGE_BYTES);
    let mut entries = entries.into_iter().peekable();
    let mut first = true;
    std::iter::from_fn(move || {
        let mut b = Vec::new();
        let mut size = 0;
        while let Some(e) = entries.peek() {
            let est = e.size_hint();
            if size + est > bytes && !b.is_empty() {
                break;
            }
            size += est;
            b.extend(entries.next());
        }
        // One batch at least, empty if there is nothing.
        (!b.is_empty() || std::mem::take(&mut first)).then(|| {
            first = false;
            b
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> FileEntry {
        FileEntry {
            path: RelPath::new(format!("dir/file-{i:07}")).unwrap(),
            size: 1,
            mtime_ns: 1,
            sha256: zync_proto::Hash::of(b"x"),
            blocks: vec![zync_proto::Hash::of(b"x")],
            version: VersionVector::new(),
            deleted: false,
            modified_by: "p1".into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    #[test]
    fn batches_keep_every_entry_in_order_within_the_size_asked_and_a_page() {
        assert_eq!(
            batch(Vec::new(), PAGE_BYTES).collect::<Vec<_>>(),
            vec![Vec::new()],
            "one empty batch"
        );
        let n = 3 * PAGE_BYTES / entry(0).size_hint() + 7;
        let batches: Vec<Vec<FileEntry>> = batch((0..n).map(entry), PAGE_BYTES).collect();
        assert!(batches.len() >= 3, "{} batches", batches.len());
        for b in &batches {
            assert!(!b.is_empty());
            assert!(b.iter().map(FileEntry::size_hint).sum::<usize>() <= PAGE_BYTES);
        }
        let all: Vec<FileEntry> = batches.into_iter().flatten().collect();
        assert_eq!(all, (0..n).map(entry).collect::<Vec<_>>());
        // Smaller batches on request; never larger than a page.
        let small = batch((0..n).map(entry), PAGE_BYTES / 8);
        let sizes: Vec<usize> = small
            .map(|b| b.iter().map(FileEntry::size_hint).sum())
            .collect();
        assert!(sizes.len() >= 24, "{} batches", sizes.len());
        assert!(sizes.iter().all(|&s| s <= PAGE_BYTES / 8));
        let capped = batch((0..n).map(entry), 2 * PAGE_BYTES);
        assert!(capped
            .map(|b| b.iter().map(FileEntry::size_hint).sum::<usize>())
            .all(|s| s <= PAGE_BYTES));
    }
}
