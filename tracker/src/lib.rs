//! The Zync tracker: knows who is alive and which file versions exist.
//!
//! It owns the cluster index: for every path, the newest version any peer has
//! reported (tombstones included), and for every live peer, the entries it
//! holds. It never sees file bytes.
//!
//! One thread, two sockets:
//! - a ROUTER that answers [`TrackerRequest`](zync_proto::TrackerRequest)s from plain REQ clients
//!   (register, heartbeat, update, unregister, list, locate, peers);
//! - a PUB that publishes every index change as a [`Notification`](zync_proto::Notification) carrying
//!   the tracker's random epoch and a sequence number that grows by one per
//!   change, plus a periodic `Hugz` so subscribers notice a lost message or a
//!   restart (the ZeroMQ guide's Clone pattern; `List` is the snapshot).
//!
//! Peers silent for three heartbeat intervals are dropped, and a deletion
//! every live holder has applied is forgotten after
//! [`Config::forget_deleted_after`].
//!
//! Started with [`Config::backup_of`], it is a primary's backup (the
//! guide's Binary Star): it keeps a live copy of the primary's index and
//! serves only when the primary is lost and a client comes.
//!
//! One job per file: `index` holds the cluster index and the queries on
//! it, `handle` turns one request into one reply and the notifications it
//! causes, `mirror` applies a primary's snapshot and notifications to a
//! copy (none of the three does I/O, so each is tested alone), `backup`
//! follows the primary and decides when to serve, and `server` is the
//! socket loop, [`Tracker`].

mod backup;
mod handle;
mod index;
mod metrics;
mod mirror;
mod server;

use std::time::Duration;

pub use server::Tracker;

/// Errors that stop the tracker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be created, bound or used.
    #[error("{what}: {source}")]
    Zmq {
        /// What was being done.
        what: String,
        /// The libzmq error.
        source: zync_net::Error,
    },
}

pub(crate) fn zerr(what: impl Into<String>) -> impl FnOnce(zync_net::Error) -> Error {
    let what = what.into();
    move |source| Error::Zmq { what, source }
}

/// New versions from one message logged one line each at info level; a
/// peer registering a large folder (or re-registering after a tracker
/// restart) gets one summary line for the rest, since each peer logs its own
/// changes and syncs anyway.
pub(crate) const LOGGED_PER_BATCH: usize = 16;

/// Tracker settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Heartbeat interval peers are told to use; a peer silent for three of
    /// them is dropped. Also the Hugz interval.
    pub heartbeat: Duration,
    /// Run as the backup of the tracker at this request endpoint
    /// (`HOST:PORT`): keep a copy of its index, and serve only when it is
    /// lost and a client comes (Binary Star).
    pub backup_of: Option<String>,
    /// A deletion every live peer reporting its path has applied is
    /// forgotten (cluster-wide) once it is this old.
    pub forget_deleted_after: Duration,
    /// Most bytes of entries in one page of the index a peer is sent
    /// (at most [`zync_proto::PAGE_BYTES`]): a late joiner asks for the
    /// next page only when it has room for it.
    pub page_bytes: usize,
}

/// How long a deletion is remembered at least, by default: 90 days. A peer
/// away longer than that, that comes back with the file, brings it back.
pub const DEFAULT_FORGET_DELETED_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat: Duration::from_secs(1),
            backup_of: None,
            forget_deleted_after: DEFAULT_FORGET_DELETED_AFTER,
            page_bytes: zync_proto::PAGE_BYTES,
        }
    }
}
