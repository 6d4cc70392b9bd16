//! The cluster client other programs are built on (the CLI and zync-web):
//! list the cluster's files and peers, locate a file, download it verified
//! from its holders. An API boundary: zync-web uses this, not the engine.

use std::io;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use zync_net::{Context, NetError, TrackerClient};
use zync_proto::{FileEntry, PeerInfo, RelPath, TrackerReply, TrackerRequest};

pub use crate::transfer::{Block, BlockStream, FetchError, Fetched, Fetcher, HolderError};

/// A client of one cluster. Cheap to clone; each call opens what it needs.
#[derive(Clone)]
pub struct Client {
    ctx: Context,
    tracker: String,
}

pub use crate::transfer::TRACKER_TIMEOUT;

/// Why a client request failed; each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The tracker failed or did not answer.
    #[error("tracker: {0}")]
    Tracker(#[from] NetError),
    /// The download failed.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// The path is not a valid cluster path.
    #[error("{0}")]
    Path(#[from] zync_proto::PathError),
    /// Writing output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The tracker sent something unexpected.
    #[error("unexpected reply from the tracker")]
    Unexpected,
    /// The tracker restarted while the listing was being read; try again.
    #[error("the tracker restarted during the listing; try again")]
    TrackerRestarted,
    /// `status` was asked about a peer it cannot report on.
    #[error("{0}")]
    Status(crate::cli::StatusError),
}

/// One file in `ls --json`.
#[derive(Serialize)]
pub struct FileRow {
    /// Path in the folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Content hash (hex).
    pub sha256: String,
    /// Version vector.
    pub version: String,
    /// Who made this version.
    pub modified_by: String,
    /// Live peers holding it.
    pub holders: Vec<String>,
    /// For a conflict copy: the path it keeps a losing version of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict_of: Option<String>,
}

/// A live peer as `peers` prints it.
fn peer_row(p: PeerInfo) -> PeerRow {
    PeerRow {
        name: p.name,
        endpoint: p.endpoint,
        last_seen_ms: p.last_seen_ms,
        transfers: p.transfers.into_iter().map(TransferRow::from).collect(),
        failing: p.failing,
        errors: p.errors.into_iter().map(ErrorRow::from).collect(),
    }
}

/// One peer in `peers --json`.
#[derive(Serialize)]
pub struct PeerRow {
    /// Peer name.
    pub name: String,
    /// Transfer endpoint.
    pub endpoint: String,
    /// Milliseconds since the tracker last heard from it.
    pub last_seen_ms: u64,
    /// Its large downloads under way, as its last heartbeat said.
    pub transfers: Vec<TransferRow>,
    /// Its downloads waiting to be tried again after a failure.
    pub failing: u64,
    /// The latest of those failures.
    pub errors: Vec<ErrorRow>,
}

/// A failed download waiting to be tried again, in `peers --json` and
/// `status --json`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ErrorRow {
    /// The file.
    pub path: String,
    /// Why its last try failed.
    pub error: String,
}

impl From<zync_proto::Failure> for ErrorRow {
    fn from(f: zync_proto::Failure) -> ErrorRow {
        ErrorRow {
            path: f.path.as_str().to_owned(),
            error: f.error,
        }
    }
}

/// A download under way, in `peers --json` and `status --json`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct TransferRow {
    /// The file.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Bytes of it in place.
    pub done: u64,
    /// Bytes a second since it started.
    pub rate_bytes_per_s: u64,
    /// Seconds to go at that rate (`None` before any byte came).
    pub eta_s: Option<f64>,
}

impl From<zync_proto::Transfer> for TransferRow {
    fn from(t: zync_proto::Transfer) -> TransferRow {
        TransferRow {
            path: t.path.as_str().to_owned(),
            size: t.size,
            done: t.done,
            rate_bytes_per_s: t.rate,
            eta_s: (t.rate > 0).then(|| (t.size - t.done) as f64 / t.rate as f64),
        }
    }
}

fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64))
        .to_string()
}

impl Client {
    /// A client of the cluster whose trackers are at `tracker` (`HOST:PORT`,
    /// or several comma-separated, the first preferred; whichever answers
    /// is asked).
    pub fn new(ctx: &Context, tracker: &str) -> Client {
        Client {
            ctx: ctx.clone(),
            tracker: tracker.to_owned(),
        }
    }

    /// The cluster's live files (tombstones left out), sorted by path, read
    /// page by page.
    pub fn files(&self) -> Result<Vec<FileRow>, ClientError> {
        self.listing().map(|(files, _)| files)
    }

    /// [`Client::files`], and the live peers as of the same snapshot (its
    /// first page), so every holder named is among them.
    pub fn listing(&self) -> Result<(Vec<FileRow>, Vec<PeerRow>), ClientError> {
        let mut c = TrackerClient::new(&self.ctx, &self.tracker, TRACKER_TIMEOUT);
        let mut files = Vec::new();
        let mut live = None;
        // The first page from whichever tracker answers, the rest from it.
        let mut first = true;
        let mut after = None;
        let mut epoch = None;
        loop {
            let TrackerReply::Snapshot {
                epoch: e,
                files: page,
                peers,
                next,
                ..
            } = (match std::mem::take(&mut first) {
                true => c.request_any(&TrackerRequest::List { after })?,
                false => c.request(&TrackerRequest::List { after })?,
            })
            else {
                return Err(ClientError::Unexpected);
            };
            if epoch.is_some_and(|was| was != e) {
                return Err(ClientError::TrackerRestarted);
            }
            epoch = Some(e);
            live.get_or_insert(peers);
            files.extend(page.into_iter().filter(|f| !f.entry.deleted));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let peers = live.unwrap_or_default().into_iter().map(peer_row).collect();
        let files = files
            .into_iter()
            .map(|f| FileRow {
                conflict_of: f.entry.path.conflict_original().map(|(p, _)| p.to_string()),
                path: f.entry.path.to_string(),
                size: f.entry.size,
                mtime: rfc3339(f.entry.mtime_ns),
                mtime_ns: f.entry.mtime_ns,
                sha256: f.entry.sha256.to_hex(),
                version: f.entry.version.to_string(),
                modified_by: f.entry.modified_by,
                holders: f.holders,
            })
            .collect();
        Ok((files, peers))
    }

    /// The live peers.
    pub fn peers(&self) -> Result<Vec<PeerRow>, ClientError> {
        let mut c = TrackerClient::new(&self.ctx, &self.tracker, TRACKER_TIMEOUT);
        let TrackerReply::Peers { peers } = c.request_any(&TrackerRequest::Peers)? else {
            return Err(ClientError::Unexpected);
        };
        Ok(peers.into_iter().map(peer_row).collect())
    }

    /// The current entry of `path` (tombstones included).
    pub fn locate(&self, path: &RelPath) -> Result<FileEntry, FetchError> {
        self.fetcher().lookup(path)
    }

    /// A downloader of file versions from their holders (verified block by
    /// block): [`Fetcher::fetch`] to a file, [`Fetcher::stream`] as blocks.
    pub fn fetcher(&self) -> Fetcher {
        Fetcher::new(&self.ctx, &self.tracker)
    }
}
