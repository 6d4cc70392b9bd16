//! Downloads under way on this peer, as its heartbeats report them to the
//! tracker (and `status` and the dashboard show them): each large file's
//! size, bytes done so far and rate. Small files travel in batches and
//! are done before a heartbeat could tell of them; they are not tracked.
//! Also the downloads that failed and wait to be tried again, which the
//! engine sets once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use zync_proto::{Failure, FileEntry, RelPath, Transfer, MAX_TRANSFERS};

/// The downloads under way; clones share them.
#[derive(Clone, Default)]
pub struct Progress {
    live: Arc<Mutex<HashMap<RelPath, Live>>>,
    failures: Arc<Mutex<(u64, Vec<Failure>)>>,
}

struct Live {
    size: u64,
    done: u64,
    started: Instant,
}

/// One download being tracked; it stops being reported when dropped.
pub struct Tracked {
    progress: Progress,
    path: RelPath,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, HashMap<RelPath, Live>> {
        // A panic elsewhere while holding it left a map still worth reading.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the downloads waiting after a failure: how many, and the
    /// latest failures (at most [`MAX_TRANSFERS`] are kept).
    pub fn set_failures(&self, failing: u64, mut latest: Vec<Failure>) {
        latest.truncate(MAX_TRANSFERS);
        *self.failures.lock().unwrap_or_else(|p| p.into_inner()) = (failing, latest);
    }

    /// What [`Progress::set_failures`] last set.
    pub fn failures(&self) -> (u64, Vec<Failure>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts tracking the download of `entry`.
    pub fn track(&self, entry: &FileEntry) -> Tracked {
        self.lock().insert(
            entry.path.clone(),
            Live {
                size: entry.size,
                done: 0,
                started: Instant::now(),
            },
        );
        Tracked {
            progress: self.clone(),
            path: entry.path.clone(),
        }
    }

    /// The downloads under way, the largest first, at most
    /// [`MAX_TRANSFERS`].
    pub fn report(&self) -> Vec<Transfer> {
        let now = Instant::now();
        let mut all: Vec<Transfer> = self
            .lock()
            .iter()
            .map(|(path, l)| {
                let secs = now.duration_since(l.started).as_secs_f64();
                Transfer {
                    path: path.clone(),
                    size: l.size,
                    done: l.done,
                    rate: if secs > 0.0 {
                        (l.done as f64 / secs) as u64
                    } else {
                        0
                    },
                }
            })
            .collect();
        all.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
        all.truncate(MAX_TRANSFERS);
        all
    }
}

impl Tracked {
    /// `n` more bytes of it are in place (never counted past its size: a
    /// second try counts its blocks again).
    pub fn advance(&self, n: u64) {
        if let Some(l) = self.progress.lock().get_mut(&self.path) {
            l.done = l.done.saturating_add(n).min(l.size);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.progress.lock().remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size,
            mtime_ns: 0,
            sha256: zync_proto::Hash::of(b""),
            blocks: vec![],
            version: Default::default(),
            deleted: false,
            modified_by: "p".into(),
            lengths: vec![],
            mode: None,
        }
    }

    #[test]
    fn a_download_is_reported_while_tracked_largest_first_and_within_its_size() {
        let p = Progress::default();
        let small = p.track(&entry("a", 10));
        let big = p.track(&entry("b", 1000));
        big.advance(600);
        big.advance(600);
        small.advance(3);
        let r = p.report();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].path.as_str(), r[0].done, r[0].size),
            ("b", 1000, 1000)
        );
        assert_eq!((r[1].path.as_str(), r[1].done), ("a", 3));
        drop(big);
        assert_eq!(p.report().len(), 1);
        drop(small);
        assert!(p.report().is_empty());
    }

    #[test]
    fn failures_are_kept_as_last_set_and_bounded() {
        let p = Progress::default();
        assert_eq!(p.failures(), (0, vec![]));
        let f = |i: usize| Failure::new(RelPath::new(format!("f{i}")).unwrap(), "no holder");
        p.set_failures(40, (0..40).map(f).collect());
        let (n, latest) = p.failures();
        assert_eq!((n, latest.len()), (40, MAX_TRANSFERS));
        p.set_failures(0, vec![]);
        assert_eq!(p.failures(), (0, vec![]));
    }

    #[test]
    fn at_most_the_largest_few_are_reported() {
        let p = Progress::default();
        let all: Vec<Tracked> = (0..MAX_TRANSFERS as u64 + 5)
            .map(|i| p.track(&entry(&format!("f{i}"), i)))
            .collect();
        let r = p.report();
        assert_eq!(r.len(), MAX_TRANSFERS);
        assert_eq!(r[0].size, MAX_TRANSFERS as u64 + 4);
        drop(all);
    }
}
