//! The state every face of zync-web shares, and its limits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Knobs with sensible defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A connection silent this long is closed.
    pub read_timeout: Duration,
    /// A client that does not take data for this long is dropped.
    pub write_timeout: Duration,
    /// A request head must arrive whole within this long of its first byte.
    pub head_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// Largest accepted upload, bytes.
    pub max_upload: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(30),
            head_timeout: Duration::from_secs(20),
            max_connections: 4096,
            max_upload: 1 << 30,
        }
    }
}

/// What every face shares: the static root, the limits, the hit counts.
pub struct State {
    /// Canonical static root, if any.
    pub root: Option<PathBuf>,
    /// The root, open as a directory, for `openat2(RESOLVE_BENEATH)`.
    pub root_fd: Option<std::os::fd::OwnedFd>,
    /// Directory listings on.
    pub listing: bool,
    /// Limits.
    pub limits: Limits,
    hits: Mutex<HashMap<String, u64>>,
}

impl State {
    /// New state.
    pub fn new(root: Option<PathBuf>, listing: bool, limits: Limits) -> State {
        let root_fd = root.as_ref().and_then(|r| {
            use rustix::fs::{open, Mode, OFlags};
            open(
                r,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
        });
        State {
            root,
            root_fd,
            listing,
            limits,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a hit on `path`; returns the running total.
    pub fn hit(&self, path: &str) -> u64 {
        let Ok(mut m) = self.hits.lock() else {
            return 0;
        };
        let n = m.entry(path.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    /// Hits so far, per path.
    pub fn hits(&self) -> HashMap<String, u64> {
        self.hits.lock().map(|m| m.clone()).unwrap_or_default()
    }
}
