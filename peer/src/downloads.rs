//! The download queue: one state per path, instead of five maps kept in
//! step by hand. No I/O; the time is an argument.
//!
//! A path is wanted at one version at a time. Its download is queued (in
//! arrival order), active on a worker (at most `workers` large files at
//! once, or `batch` small files in the place of each), waiting
//! out a backoff after a failure (1 s doubling to 30 s), or idle (its bytes
//! came back and the engine is deciding on them).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use hashlink::LinkedHashSet;
use zync_proto::{FileEntry, Hash, RelPath, VersionVector};

use crate::decide;

/// First wait after a failure; it doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Queued,
    /// On a worker, fetching this version; it takes this many slots.
    Active(VersionVector, usize),
    /// Failed; try again at this time.
    Waiting(Instant),
    /// Back from a worker; the engine decides.
    Idle,
}

#[derive(Debug)]
struct Download {
    /// The version wanted now (`None`: no longer wanted, while a worker
    /// still has the path).
    wanted: Option<FileEntry>,
    state: State,
    /// The last wait, if the last try failed.
    backoff: Option<Duration>,
    /// Peers the cluster said hold the wanted version, when it said so.
    holders: Vec<String>,
}

/// Every path being downloaded or waiting to be.
#[derive(Debug)]
pub struct Downloads {
    paths: HashMap<RelPath, Download>,
    /// Queued paths, in arrival order, each once (a full folder's worth can
    /// wait here; asking a `VecDeque` whether it holds one was quadratic).
    queue: LinkedHashSet<RelPath>,
    /// Paths waiting out a backoff, by when it ends: the engine asks for
    /// the next one on every turn of its loop, which must not cost a walk
    /// over every download.
    waiting: BTreeSet<(Instant, RelPath)>,
    /// Slots taken by active downloads.
    active: usize,
    /// Slots there are: `workers` × `batch`.
    slots: usize,
    /// Slots a download that cannot go in a batch takes.
    batch: usize,
}

impl Downloads {
    /// An empty queue for `workers` concurrent downloads (at least one),
    /// where `batch` small files ([`crate::transfer::batchable`]) count as
    /// one download: they travel together.
    pub fn new(workers: usize, batch: usize) -> Downloads {
        let batch = batch.max(1);
        Downloads {
            paths: HashMap::new(),
            queue: LinkedHashSet::new(),
            waiting: BTreeSet::new(),
            active: 0,
            slots: workers.max(1) * batch,
            batch,
        }
    }

    /// How many paths are wanted or still on a worker.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether no path is wanted or on a worker.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// How many paths are queued, on a worker or being decided on: all but
    /// those waiting out a backoff (which may wait for a holder to come
    /// back, and must not hold up what could be fetched meanwhile).
    pub fn in_progress(&self) -> usize {
        self.paths.len().saturating_sub(self.waiting.len())
    }

    /// How many files are wanted (or on a worker) and their bytes. A walk
    /// over every download: for the metrics, once a second.
    pub fn needed(&self) -> (usize, u64) {
        let bytes = self
            .paths
            .values()
            .filter_map(|d| d.wanted.as_ref())
            .filter(|e| !e.deleted)
            .map(|e| e.size)
            .sum();
        (self.paths.len(), bytes)
    }

    /// How many paths wait out a backoff after a failed try.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The version wanted for `path`, if any.
    pub fn wanted(&self, path: &RelPath) -> Option<&FileEntry> {
        self.paths.get(path).and_then(|d| d.wanted.as_ref())
    }

    /// Wants `r` (unless the version wanted already is it or supersedes
    /// it), and queues it at once unless it is queued already or a worker
    /// has the path (the worker's result then fetches it after). Returns
    /// the version it replaces, if no worker has it and its content is
    /// another: what a failed try of it left is of no more use.
    pub fn want(&mut self, r: FileEntry) -> Option<FileEntry> {
        if !decide::worth_wanting(self.wanted(&r.path), &r) {
            return None;
        }
        let path = r.path.clone();
        let replaced = self
            .paths
            .get(&path)
            .filter(|d| !matches!(d.state, State::Active(..)))
            .and_then(|d| d.wanted.clone())
            .filter(|w| w.sha256 != r.sha256);
        let d = self.set_wanted(r);
        let was = d.state.clone();
        if matches!(was, State::Waiting(_) | State::Idle) {
            d.state = State::Queued;
            unlist(&mut self.queue, &mut self.waiting, &was, &path);
            self.queue.insert(path);
        }
        replaced
    }

    /// Wants `r`, but not before a backoff (the disk could not be checked,
    /// or the install failed); returns the backoff.
    pub fn want_later(&mut self, r: FileEntry, now: Instant) -> Duration {
        let path = r.path.clone();
        self.set_wanted(r);
        self.retry_later(&path, now).unwrap_or(FIRST_BACKOFF)
    }

    /// Makes `r` the version wanted for its path (a new path starts idle).
    fn set_wanted(&mut self, r: FileEntry) -> &mut Download {
        let d = self.paths.entry(r.path.clone()).or_insert(Download {
            wanted: None,
            state: State::Idle,
            backoff: None,
            holders: Vec::new(),
        });
        if d.wanted.as_ref().is_none_or(|w| w.sha256 != r.sha256) {
            d.holders.clear();
        }
        d.wanted = Some(r);
        d
    }

    /// Remembers that `holders` hold content `sha256` of `path`, if that is
    /// the version wanted there: its download can go to them without asking
    /// the tracker first.
    pub fn held_by(&mut self, path: &RelPath, sha256: Hash, holders: Vec<String>) {
        if let Some(d) = self.paths.get_mut(path) {
            if d.wanted.as_ref().is_some_and(|w| w.sha256 == sha256) {
                d.holders = holders;
            }
        }
    }

    /// The holders last heard of for the version wanted at `path`.
    pub fn holders(&self, path: &RelPath) -> &[String] {
        self.paths.get(path).map_or(&[], |d| &d.holders)
    }

    /// Schedules the wanted version of `path` again after a backoff that
    /// doubles per failure; returns it (`None` if nothing is wanted there).
    pub fn retry_later(&mut self, path: &RelPath, now: Instant) -> Option<Duration> {
        let d = self.paths.get_mut(path)?;
        d.wanted.as_ref()?;
        let backoff = d
            .backoff
            .map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
        d.backoff = Some(backoff);
        if matches!(d.state, State::Active(..)) {
            // The worker's result decides; it comes back here if it fails.
            return Some(backoff);
        }
        unlist(&mut self.queue, &mut self.waiting, &d.state, path);
        d.state = State::Waiting(now + backoff);
        self.waiting.insert((now + backoff, path.clone()));
        Some(backoff)
    }

    /// The next download to hand a worker, if one is free and one is queued.
    pub fn next_job(&mut self) -> Option<FileEntry> {
        while self.active < self.slots {
            let path = self.queue.pop_front()?;
            let Some(d) = self.paths.get_mut(&path) else {
                continue;
            };
            let (State::Queued, Some(w)) = (&d.state, &d.wanted) else {
                continue;
            };
            let cost = match crate::transfer::batchable(w) {
                true => 1,
                false => self.batch,
            };
            d.state = State::Active(w.version.clone(), cost);
            self.active += cost;
            return Some(w.clone());
        }
        None
    }

    /// A worker finished `path`; returns the version wanted for it now, for
    /// [`decide::plan_done`]. The path is idle until the engine queues it
    /// again, schedules a retry, or settles it.
    pub fn done(&mut self, path: &RelPath) -> Option<VersionVector> {
        let d = self.paths.get_mut(path)?;
        if let State::Active(_, cost) = d.state {
            self.active -= cost;
            d.state = State::Idle;
        }
        d.wanted.as_ref().map(|w| w.version.clone())
    }

    /// Queues `path` again at once (a newer version was wanted meanwhile).
    pub fn again(&mut self, path: &RelPath) {
        if let Some(d) = self.paths.get_mut(path) {
            if d.wanted.is_some() && d.state == State::Idle {
                d.state = State::Queued;
                self.queue.insert(path.clone());
            }
        }
    }

    /// `path` holds what it should (or its version is gone): nothing is
    /// wanted there any more. A worker that still has it reports back;
    /// else the version that was wanted is returned.
    pub fn finish(&mut self, path: &RelPath) -> Option<FileEntry> {
        let d = self.paths.get_mut(path)?;
        if matches!(d.state, State::Active(..)) {
            d.wanted = None;
            d.backoff = None;
            return None;
        }
        unlist(&mut self.queue, &mut self.waiting, &d.state, path);
        self.paths.remove(path).and_then(|d| d.wanted)
    }

    /// After the engine decided on a finished download: a path left idle
    /// (kept, superseded, deferred) is no longer a download.
    pub fn settle(&mut self, path: &RelPath) {
        if self.paths.get(path).is_some_and(|d| d.state == State::Idle) {
            self.paths.remove(path);
        }
    }

    /// Queues every path whose backoff is over.
    pub fn wake_due(&mut self, now: Instant) {
        while let Some((at, path)) = self.waiting.first().cloned() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            if let Some(d) = self.paths.get_mut(&path) {
                if d.state == State::Waiting(at) {
                    d.state = State::Queued;
                    self.queue.insert(path);
                }
            }
        }
    }

    /// Ends every backoff now (a new holder joined).
    pub fn wake_all(&mut self, now: Instant) {
        for (at, path) in std::mem::take(&mut self.waiting) {
            if let Some(d) = self.paths.get_mut(&path) {
                if d.state == State::Waiting(at) {
                    d.state = State::Waiting(now);
                    self.waiting.insert((now, path));
                }
            }
        }
    }

    /// When the next backoff ends.
    pub fn next_wake(&self) -> Option<Instant> {
        self.waiting.first().map(|(at, _)| *at)
    }

    /// Slots taken by downloads on workers now (a large file takes
    /// `batch`, a small one one).
    pub fn active(&self) -> usize {
        self.active
    }
}

/// Takes `path` off the queue or the backoff list, whichever `state` puts
/// it on.
fn unlist(
    queue: &mut LinkedHashSet<RelPath>,
    waiting: &mut BTreeSet<(Instant, RelPath)>,
    state: &State,
    path: &RelPath,
) {
    match state {
        State::Queued => {
            queue.remove(path);
        }
        State::Waiting(at) => {
            waiting.remove(&(*at, path.clone()));
        }
        State::Active(..) | State::Idle => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(path: &str, n: u64) -> FileEntry {
        let mut version = VersionVector::new();
        version.bump_at("them@1", n);
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size: 1,
            mtime_ns: n as i64,
            sha256: Hash::of(&n.to_le_bytes()),
            blocks: vec![Hash::of(&n.to_le_bytes())],
            version,
            deleted: false,
            modified_by: "them".into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn downloads_waiting_out_a_backoff_are_not_in_progress() {
        let mut d = Downloads::new(1, 1);
        let now = Instant::now();
        for name in ["a", "b", "c"] {
            d.want(v(name, 1));
        }
        assert_eq!((d.len(), d.in_progress()), (3, 3));
        let job = d.next_job().unwrap();
        d.done(&job.path);
        d.retry_later(&job.path, now);
        assert_eq!((d.len(), d.in_progress()), (3, 2), "a failed one waits");
        d.wake_due(now + MAX_BACKOFF);
        assert_eq!(d.in_progress(), 3, "and counts again once due");
    }

    #[test]
    fn a_version_dropped_while_no_worker_has_it_is_handed_back_for_its_partial() {
        let mut d = Downloads::new(1, 1);
        let now = Instant::now();
        assert_eq!(d.want(v("a", 1)), None);
        assert_eq!(d.next_job().unwrap().path, p("a"));
        // A newer version arrives mid-download: the worker's result decides.
        assert_eq!(d.want(v("a", 2)), None, "a worker has it");
        d.done(&p("a"));
        d.retry_later(&p("a"), now);
        // Waiting for a retry: replaced by other content, or finished.
        assert_eq!(d.want(v("a", 3)), Some(v("a", 2)));
        assert_eq!(d.finish(&p("a")), Some(v("a", 3)));
        assert_eq!(d.finish(&p("a")), None, "nothing left");
        // While a worker has it, finishing hands nothing back.
        d.want(v("b", 1));
        d.next_job().unwrap();
        assert_eq!(d.finish(&p("b")), None);
    }

    #[test]
    fn jobs_go_out_in_arrival_order_and_no_more_than_the_workers() {
        let mut d = Downloads::new(2, 1);
        for name in ["a", "b", "c"] {
            d.want(v(name, 1));
        }
        assert_eq!(d.next_job().unwrap().path, p("a"));
        assert_eq!(d.next_job().unwrap().path, p("b"));
        assert!(d.next_job().is_none(), "both workers busy");
        assert_eq!(d.active(), 2);
        d.done(&p("a"));
        d.finish(&p("a"));
        assert_eq!(d.next_job().unwrap().path, p("c"));
    }

    #[test]
    fn small_files_share_a_workers_slot_and_a_large_one_takes_it_whole() {
        let mut d = Downloads::new(1, 3);
        let mut large = v("large", 1);
        large.size = 10 * zync_proto::BLOCK_SIZE;
        large.blocks = vec![Hash::default(); 10];
        for name in ["a", "b", "c", "d"] {
            d.want(v(name, 1));
        }
        d.want(large);
        for name in ["a", "b", "c"] {
            assert_eq!(d.next_job().unwrap().path, p(name));
        }
        assert!(d.next_job().is_none(), "one worker's worth of small files");
        d.done(&p("a"));
        assert_eq!(d.next_job().unwrap().path, p("d"));
        for name in ["b", "c", "d"] {
            d.done(&p(name));
        }
        assert_eq!(d.next_job().unwrap().path, p("large"));
        assert_eq!(d.active(), 3, "a large file takes the whole worker");
        assert!(d.next_job().is_none());
        d.done(&p("large"));
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn a_newer_version_replaces_the_wanted_one_and_an_older_one_is_ignored() {
        let mut d = Downloads::new(1, 1);
        d.want(v("a", 2));
        d.want(v("a", 1));
        assert_eq!(d.wanted(&p("a")).unwrap().version, v("a", 2).version);
        d.want(v("a", 3));
        let job = d.next_job().unwrap();
        assert_eq!(job.version, v("a", 3).version);
        assert!(d.next_job().is_none(), "queued once");
    }

    #[test]
    fn a_version_wanted_during_its_download_is_fetched_after_it() {
        let mut d = Downloads::new(4, 1);
        d.want(v("a", 1));
        let job = d.next_job().unwrap();
        d.want(v("a", 2));
        assert!(d.next_job().is_none(), "not twice at once");
        let now = d.done(&p("a")).unwrap();
        assert_ne!(now, job.version);
        d.again(&p("a"));
        assert_eq!(d.next_job().unwrap().version, v("a", 2).version);
    }

    #[test]
    fn failures_back_off_doubling_to_thirty_seconds() {
        let mut d = Downloads::new(1, 1);
        let t = Instant::now();
        d.want(v("a", 1));
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert!(d.next_job().is_some());
            d.done(&p("a"));
            waits.push(d.retry_later(&p("a"), t).unwrap().as_secs());
            assert!(d.next_job().is_none(), "waiting");
            assert_eq!(
                d.next_wake(),
                Some(t + Duration::from_secs(*waits.last().unwrap()))
            );
            d.wake_due(t + Duration::from_secs(60));
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn a_new_holder_ends_every_backoff() {
        let mut d = Downloads::new(1, 1);
        let t = Instant::now();
        d.want(v("a", 1));
        d.next_job();
        d.done(&p("a"));
        d.retry_later(&p("a"), t);
        d.wake_due(t);
        assert!(d.next_job().is_none());
        d.wake_all(t);
        d.wake_due(t);
        assert!(d.next_job().is_some());
    }

    #[test]
    fn a_path_finished_while_a_worker_has_it_is_forgotten_when_it_returns() {
        let mut d = Downloads::new(1, 1);
        d.want(v("a", 1));
        d.next_job();
        d.finish(&p("a"));
        assert!(d.wanted(&p("a")).is_none());
        assert_eq!(d.active(), 1, "the worker still counts");
        assert_eq!(d.done(&p("a")), None);
        d.settle(&p("a"));
        assert_eq!(d.active(), 0);
        assert!(d.next_wake().is_none() && d.next_job().is_none());
    }

    #[test]
    fn a_download_decided_on_and_not_requeued_is_no_longer_tracked() {
        let mut d = Downloads::new(1, 1);
        d.want(v("a", 1));
        d.next_job();
        d.done(&p("a"));
        d.settle(&p("a"));
        assert!(d.wanted(&p("a")).is_none());
        // A later notification of the same version is wanted afresh.
        d.want(v("a", 1));
        assert!(d.next_job().is_some());
    }

    #[test]
    fn wanting_again_while_waiting_queues_at_once_and_keeps_the_backoff() {
        let mut d = Downloads::new(1, 1);
        let t = Instant::now();
        assert_eq!(d.want_later(v("a", 1), t), Duration::from_secs(1));
        assert!(d.next_job().is_none());
        d.want(v("a", 2));
        assert!(d.next_job().is_some());
        d.done(&p("a"));
        assert_eq!(d.retry_later(&p("a"), t), Some(Duration::from_secs(2)));
    }

    #[test]
    fn backoffs_end_in_order_and_a_path_dropped_meanwhile_never_wakes() {
        let mut d = Downloads::new(3, 1);
        let t = Instant::now();
        d.want_later(v("a", 1), t);
        d.want_later(v("b", 1), t);
        d.retry_later(&p("b"), t); // b waits 2 s, a 1 s
        d.want_later(v("c", 1), t);
        assert_eq!(d.next_wake(), Some(t + FIRST_BACKOFF));
        d.finish(&p("a"));
        d.finish(&p("c"));
        assert_eq!(
            d.next_wake(),
            Some(t + 2 * FIRST_BACKOFF),
            "a and c are gone"
        );
        d.wake_due(t + FIRST_BACKOFF);
        assert!(d.next_job().is_none(), "b's backoff is not over");
        d.wake_due(t + 2 * FIRST_BACKOFF);
        assert_eq!(d.next_job().map(|e| e.path), Some(p("b")));
        assert!(d.next_job().is_none() && d.next_wake().is_none());
    }

    #[test]
    fn holders_heard_of_go_with_the_version_they_hold() {
        let mut d = Downloads::new(1, 1);
        d.want(v("a", 1));
        d.held_by(&p("a"), v("a", 2).sha256, vec!["x".into()]);
        assert!(d.holders(&p("a")).is_empty(), "another version's holders");
        d.held_by(&p("a"), v("a", 1).sha256, vec!["x".into()]);
        assert_eq!(d.holders(&p("a")), ["x"]);
        d.want(v("a", 2));
        assert!(d.holders(&p("a")).is_empty(), "a new version forgets them");
        assert!(d.holders(&p("b")).is_empty());
    }
}
