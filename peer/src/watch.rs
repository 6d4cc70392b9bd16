//! The folder watcher: raw OS events (inotify on Linux, via `notify`),
//! turned into "look at these paths again" for the engine.
//!
//! A watcher event is only a hint. Nothing here decides whether a change
//! happened: the engine re-stats every path it is told about and compares
//! with its index. So events are never merged, paired or cancelled (a
//! merging debouncer once took "created, then removed within 50 ms" for
//! "nothing happened" and dropped a user's delete right after an install).
//! The only debounce is per path: a path is handed over once it has been
//! quiet for `quiet`, or at the latest [`MAX_DELAY`] after its first event
//! (a file written without pause is still looked at; the engine retries a
//! file that changes while it is hashed). A path whose writer is done —
//! the file was closed after a write, renamed into place, or removed — is
//! handed over [`SETTLE`] after that event, without waiting out `quiet`.
//!
//! When the OS says events were lost (queue overflow) or the watcher
//! fails, the engine is told to rescan the whole folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError};
use notify::{RecursiveMode, Watcher as _};
use tracing::warn;

/// Longest a path with a steady stream of events waits before it is looked at.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// How soon a finished file (closed after a write, renamed into place) or
/// a removal is handed over: just past the time within which a file is
/// too fresh to hash ([`crate::hashing::RACY`]: file times have a coarse
/// tick), so the engine can hash it at once.
pub const SETTLE: Duration = Duration::from_millis(22);

/// Most distinct paths waiting at once; past it, the folder is rescanned
/// instead (a rescan costs one stat per file, nothing like re-hashing).
const MAX_PENDING: usize = 100_000;

/// What the watcher tells the engine.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Look at these paths again (files or directories, present or not).
    Paths(Vec<PathBuf>),
    /// Events were lost: look at everything.
    Rescan,
}

/// A running watcher; dropping it stops watching.
pub struct FolderWatcher {
    _inner: notify::RecommendedWatcher,
}

/// Watches `root` recursively (leaving out everything under `skip`, the
/// state folder) and sends what it sees on `out`, debounced per path.
pub fn watch(
    root: &Path,
    skip: PathBuf,
    quiet: Duration,
    out: impl Fn(Seen) -> bool + Send + 'static,
) -> Result<FolderWatcher, notify::Error> {
    // Bounded: if the engine falls behind, the callback blocks, the kernel's
    // queue overflows, and that becomes a rescan. Nothing grows unbounded.
    let (tx, rx) = bounded::<notify::Result<notify::Event>>(16_384);
    // A symlinked folder inside is not watched through: what it points to
    // is outside the folder, and never synced.
    let mut inner = notify::RecommendedWatcher::new(
        move |ev| {
            let _ = tx.send(ev);
        },
        notify::Config::default().with_follow_symlinks(false),
    )?;
    inner.watch(root, RecursiveMode::Recursive)?;
    // The state folder is written for every download (temp files, the
    // journal, kept versions): its events would cost the watcher's threads
    // work per file only to be dropped below, so the kernel is not even
    // asked for them. Folders made in it later are not watched either, as
    // their parent is not. (It may be missing in a watcher's unit tests.)
    if skip.starts_with(root) && skip.is_dir() {
        if let Err(e) = inner.unwatch(&skip) {
            // Only a cost: its events are dropped below all the same.
            warn!(error = %e, "cannot stop watching the state folder");
        }
    }
    std::thread::Builder::new()
        .name("zync-watch".into())
        .spawn(move || {
            let mut d = Debounce::new(quiet);
            loop {
                let wait = d
                    .next_due()
                    .map(|t| t.saturating_duration_since(Instant::now()));
                let first = match wait {
                    Some(w) => rx.recv_timeout(w),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                let got = match first {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let now = Instant::now();
                for ev in got.into_iter().chain(rx.try_iter()) {
                    match ev {
                        Ok(ev) => d.event(&ev, &skip, now),
                        Err(e) => {
                            warn!(error = %e, "watcher error; rescanning");
                            d.lost();
                        }
                    }
                }
                if let Some(seen) = d.due(Instant::now()) {
                    if !out(seen) {
                        return;
                    }
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(FolderWatcher { _inner: inner })
}

/// When one pending path is due.
#[derive(Clone, Copy)]
struct Due {
    first: Instant,
    last: Instant,
    /// Set when its writer is done: due then, quiet or not.
    settled: Option<Instant>,
}

impl Due {
    fn at(&self, quiet: Duration) -> Instant {
        let at = (self.last + quiet).min(self.first + MAX_DELAY);
        self.settled.map_or(at, |s| at.min(s))
    }
}

/// The per-path debounce, apart from threads and the OS so it can be tested.
struct Debounce {
    quiet: Duration,
    /// Path -> when it is due since it was last handed over.
    pending: HashMap<PathBuf, Due>,
    /// No later than the earliest time a pending path is due.
    next: Option<Instant>,
    rescan: bool,
}

impl Debounce {
    fn new(quiet: Duration) -> Debounce {
        Debounce {
            quiet,
            pending: HashMap::new(),
            next: None,
            rescan: false,
        }
    }

    fn event(&mut self, ev: &notify::Event, skip: &Path, now: Instant) {
        if ev.need_rescan() {
            return self.lost();
        }
        if !is_change(&ev.kind) {
            return;
        }
        let settled = is_finished(&ev.kind).then_some(now + SETTLE);
        for p in &ev.paths {
            if p.starts_with(skip) {
                continue;
            }
            let due = self
                .pending
                .entry(p.clone())
                .and_modify(|d| {
                    d.last = now;
                    // A write after the close: wait for quiet again.
                    d.settled = settled;
                })
                .or_insert(Due {
                    first: now,
                    last: now,
                    settled,
                });
            let at = due.at(self.quiet);
            self.next = Some(self.next.map_or(at, |n| n.min(at)));
        }
        if self.pending.len() > MAX_PENDING {
            self.lost();
        }
    }

    fn lost(&mut self) {
        self.rescan = true;
        self.pending.clear();
        self.next = Some(Instant::now());
    }

    fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// What is due at `now`, if anything.
    fn due(&mut self, now: Instant) -> Option<Seen> {
        if self.rescan {
            self.rescan = false;
            self.next = None;
            return Some(Seen::Rescan);
        }
        if self.next.is_none_or(|n| n > now) {
            return None;
        }
        let (quiet, mut paths, mut next) = (self.quiet, Vec::new(), None::<Instant>);
        self.pending.retain(|p, due| {
            let at = due.at(quiet);
            if at <= now {
                paths.push(p.clone());
                false
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
                true
            }
        });
        self.next = next;
        if paths.is_empty() {
            return None;
        }
        paths.sort();
        Some(Seen::Paths(paths))
    }
}

/// True for events after which the file is complete: closed after a write,
/// renamed into place, removed.
fn is_finished(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            | EventKind::Remove(_)
    )
}

/// True for events that may mean content changed; false for reads.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    const Q: Duration = Duration::from_millis(50);

    #[test]
    fn a_closed_file_is_handed_over_without_waiting_for_quiet() {
        use notify::event::{AccessKind, AccessMode};
        let mut d = Debounce::new(Q);
        let skip = Path::new("/r/.zync");
        let t = Instant::now();
        d.event(&ev(EventKind::Modify(ModifyKind::Any), &["/r/f"]), skip, t);
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        d.event(&ev(close, &["/r/f"]), skip, t + Duration::from_millis(1));
        assert_eq!(
            d.due(t + Duration::from_millis(10)),
            None,
            "too fresh to hash"
        );
        assert_eq!(
            d.due(t + Duration::from_millis(1) + SETTLE),
            Some(Seen::Paths(vec!["/r/f".into()])),
            "due at close + SETTLE, before the {Q:?} quiet"
        );
        // Written again after the close: back to waiting for quiet.
        d.event(&ev(close, &["/r/g"]), skip, t);
        d.event(
            &ev(EventKind::Modify(ModifyKind::Any), &["/r/g"]),
            skip,
            t + Duration::from_millis(2),
        );
        assert_eq!(d.due(t + SETTLE + Duration::from_millis(5)), None);
        assert_eq!(
            d.due(t + Duration::from_millis(2) + Q),
            Some(Seen::Paths(vec!["/r/g".into()]))
        );
    }

    #[test]
    fn created_then_removed_is_still_reported() {
        // The case a merging debouncer dropped: both halves cancel out there.
        let mut d = Debounce::new(Q);
        let t = Instant::now();
        d.event(
            &ev(EventKind::Create(CreateKind::File), &["/r/f"]),
            Path::new("/r/.zync"),
            t,
        );
        d.event(
            &ev(EventKind::Remove(RemoveKind::File), &["/r/f"]),
            Path::new("/r/.zync"),
            t + Duration::from_millis(10),
        );
        assert_eq!(d.due(t + Duration::from_millis(20)), None, "not quiet yet");
        assert_eq!(
            d.due(t + Duration::from_millis(70)),
            Some(Seen::Paths(vec!["/r/f".into()]))
        );
        assert_eq!(d.due(t + Duration::from_secs(5)), None, "handed over once");
    }

    #[test]
    fn a_rename_reports_both_names_and_staging_is_left_out() {
        let mut d = Debounce::new(Q);
        let t = Instant::now();
        let skip = Path::new("/r/.zync");
        d.event(
            &ev(EventKind::Create(CreateKind::File), &["/r/.zync/tmp/x"]),
            skip,
            t,
        );
        d.event(
            &ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/r/.zync/tmp/x", "/r/a"],
            ),
            skip,
            t,
        );
        d.event(
            &ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/r/a", "/r/d/b"],
            ),
            skip,
            t,
        );
        assert_eq!(
            d.due(t + Q),
            Some(Seen::Paths(vec!["/r/a".into(), "/r/d/b".into()]))
        );
    }

    #[test]
    fn reads_are_not_changes_and_a_steady_writer_is_looked_at_anyway() {
        use notify::event::{AccessKind, AccessMode};
        let mut d = Debounce::new(Q);
        let t = Instant::now();
        let skip = Path::new("/r/.zync");
        d.event(
            &ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["/r/f"],
            ),
            skip,
            t,
        );
        assert_eq!(d.next_due(), None);
        let mut now = t;
        while now < t + MAX_DELAY {
            d.event(
                &ev(EventKind::Modify(ModifyKind::Any), &["/r/f"]),
                skip,
                now,
            );
            assert_eq!(d.due(now), None);
            now += Duration::from_millis(20);
        }
        assert_eq!(d.due(now), Some(Seen::Paths(vec!["/r/f".into()])));
    }

    #[test]
    fn lost_events_become_one_rescan() {
        let mut d = Debounce::new(Q);
        let t = Instant::now();
        let skip = Path::new("/r/.zync");
        d.event(&ev(EventKind::Create(CreateKind::File), &["/r/f"]), skip, t);
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        d.event(&overflow, skip, t);
        assert_eq!(d.due(t), Some(Seen::Rescan));
        assert_eq!(
            d.due(t + Duration::from_secs(1)),
            None,
            "the rescan covers f"
        );
    }

    /// The inodes every inotify instance of this process watches, as the
    /// kernel lists them in `/proc/self/fdinfo` (`inotify wd:… ino:HEX …`).
    fn watched_inodes() -> std::collections::HashSet<u64> {
        let mut out = std::collections::HashSet::new();
        let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
            return out;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
                let ino = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("ino:"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                out.extend(ino);
            }
        }
        out
    }

    fn ino(p: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
    }

    #[test]
    fn the_state_folder_is_not_watched_even_when_folders_appear_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let state = root.join(".zync");
        std::fs::create_dir_all(state.join("tmp")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let _w = watch(root, state.clone(), Q, |_| true).unwrap();
        let watched = watched_inodes();
        for p in [root.to_path_buf(), root.join("a"), root.join("a/b")] {
            assert!(watched.contains(&ino(&p)), "{} is watched", p.display());
        }
        for p in [state.clone(), state.join("tmp")] {
            assert!(
                !watched.contains(&ino(&p)),
                "{} is not watched",
                p.display()
            );
        }
        // Folders made later: in the folder they are watched, in the state
        // folder they are not (the watcher sees both creations in order).
        std::fs::create_dir_all(state.join("versions/x")).unwrap();
        std::fs::create_dir(root.join("c")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !watched_inodes().contains(&ino(&root.join("c"))) {
            assert!(Instant::now() < deadline, "a new folder was never watched");
            std::thread::sleep(Duration::from_millis(5));
        }
        let watched = watched_inodes();
        for p in [state.join("versions"), state.join("versions/x")] {
            assert!(
                !watched.contains(&ino(&p)),
                "{} is not watched",
                p.display()
            );
        }
    }
}
