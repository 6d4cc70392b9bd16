//! Pulling one file version from the peers that hold it.
//!
//! Credit-based, as in the ZeroMQ guide's file transfer: up to
//! [`Fetcher::window`] block requests are in flight to one holder, each block
//! is checked against its SHA-256 as it arrives, blocks are written in order
//! into a temp file in the staging folder while the whole-file hash is
//! computed, and the finished file is checked against the entry's SHA-256,
//! fsynced, and given the entry's modification time. Memory is bounded by the
//! window, whatever the file size. A holder that times out, refuses, or sends
//! a bad block is dropped and the next one continues from the first block
//! not yet verified.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use zync_proto::{
    block_len, decode, encode, FileEntry, Hash, PeerInfo, PeerReply, PeerRequest, RelPath,
    TrackerReply, TrackerRequest,
};

use crate::net::{self, NetError, TrackerClient};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The tracker knows no such path.
    #[error("{0}: no such file in the cluster")]
    NotFound(RelPath),
    /// The path exists only as a deletion.
    #[error("{0}: deleted")]
    Deleted(RelPath),
    /// No live peer holds this content.
    #[error("{path}: no live peer holds version {}", sha256.short())]
    NoHolder {
        /// The file.
        path: RelPath,
        /// The content wanted.
        sha256: Hash,
    },
    /// Every holder was tried and failed.
    #[error("{path}: every holder failed (last: {last})")]
    AllHoldersFailed {
        /// The file.
        path: RelPath,
        /// The last holder's failure.
        last: String,
    },
    /// The assembled file does not hash to the entry's SHA-256.
    #[error("{path}: content hash mismatch (got {got}, want {want})")]
    HashMismatch {
        /// The file.
        path: RelPath,
        /// What the bytes hash to.
        got: Hash,
        /// What the entry says.
        want: Hash,
    },
    /// The entry's block list does not fit its size.
    #[error("{0}: inconsistent metadata from the tracker")]
    Inconsistent(RelPath),
    /// Talking to the tracker failed.
    #[error(transparent)]
    Tracker(#[from] NetError),
    /// Local I/O failed (staging folder, disk full…).
    #[error("local I/O: {0}")]
    Io(#[from] io::Error),
}

/// A finished, verified download, not yet in place.
pub struct Fetched {
    /// The temp file, with the entry's content and mtime, fsynced.
    pub file: tempfile::TempPath,
    /// The holder it came from (empty for an empty file).
    pub from: String,
}

/// Downloads file versions; owns its sockets (one thread).
pub struct Fetcher {
    ctx: zmq::Context,
    tracker: TrackerClient,
    exclude: Option<String>,
    /// Block requests in flight per holder.
    pub window: usize,
    /// How long a holder may stay silent before it is given up.
    pub stall_timeout: Duration,
    next_id: u64,
}

enum Attempt {
    Done,
    Failed(String),
}

impl Fetcher {
    /// A fetcher that asks the tracker at `tracker` who holds what, skipping
    /// the peer named `exclude` (ourselves).
    pub fn new(ctx: &zmq::Context, tracker: &str, exclude: Option<String>) -> Fetcher {
        Fetcher {
            ctx: ctx.clone(),
            tracker: TrackerClient::new(ctx, tracker, Duration::from_secs(3)),
            exclude,
            window: 16,
            stall_timeout: Duration::from_secs(5),
            next_id: 1,
        }
    }

    /// The current entry of `path` (tombstones included), from the tracker.
    pub fn lookup(&mut self, path: &RelPath) -> Result<FileEntry, FetchError> {
        match self.tracker.request(&TrackerRequest::Locate {
            path: path.clone(),
            sha256: Hash::default(),
        })? {
            TrackerReply::Holders { entry: Some(e), .. } => Ok(e),
            TrackerReply::Holders { entry: None, .. } => Err(FetchError::NotFound(path.clone())),
            _ => Err(NetError::Unexpected(self.tracker.endpoint().to_owned()).into()),
        }
    }

    /// Live holders of `entry`'s content, other than ourselves.
    pub fn holders(&mut self, entry: &FileEntry) -> Result<Vec<PeerInfo>, FetchError> {
        let req = TrackerRequest::Locate {
            path: entry.path.clone(),
            sha256: entry.sha256,
        };
        match self.tracker.request(&req)? {
            TrackerReply::Holders { holders, .. } => Ok(holders
                .into_iter()
                .filter(|h| Some(&h.name) != self.exclude.as_ref())
                .collect()),
            _ => Err(NetError::Unexpected(self.tracker.endpoint().to_owned()).into()),
        }
    }

    /// Downloads `entry` into a new temp file in `staging`, calling
    /// `progress(bytes)` as verified bytes are written.
    pub fn fetch(
        &mut self,
        entry: &FileEntry,
        staging: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Fetched, FetchError> {
        if entry.deleted {
            return Err(FetchError::Deleted(entry.path.clone()));
        }
        if !entry.is_consistent() {
            return Err(FetchError::Inconsistent(entry.path.clone()));
        }
        let mut out = Assembly {
            file: tempfile::NamedTempFile::new_in(staging)?,
            hasher: Sha256::new(),
            next_write: 0,
            pending: BTreeMap::new(),
        };
        let total = entry.blocks.len() as u64;
        let mut from = String::new();
        if total > 0 {
            let holders = self.holders(entry)?;
            if holders.is_empty() {
                return Err(FetchError::NoHolder {
                    path: entry.path.clone(),
                    sha256: entry.sha256,
                });
            }
            let mut last = String::new();
            for h in &holders {
                match self.pull_from(entry, h, &mut out, progress)? {
                    Attempt::Done => {
                        from = h.name.clone();
                        break;
                    }
                    Attempt::Failed(why) => {
                        warn!(event = %"holder_failed", path = %entry.path, peer = %h.name, reason = %why,
                              "skipping holder");
                        last = format!("{}: {why}", h.name);
                    }
                }
            }
            if out.next_write < total {
                return Err(FetchError::AllHoldersFailed {
                    path: entry.path.clone(),
                    last,
                });
            }
        }
        let got: Hash = out.hasher.into();
        if got != entry.sha256 {
            return Err(FetchError::HashMismatch {
                path: entry.path.clone(),
                got,
                want: entry.sha256,
            });
        }
        let file = out.file.as_file();
        file.sync_data()?;
        let mtime = UNIX_EPOCH + Duration::from_nanos(entry.mtime_ns.max(0) as u64);
        file.set_modified(mtime)?;
        Ok(Fetched {
            file: out.file.into_temp_path(),
            from,
        })
    }

    fn pull_from(
        &mut self,
        entry: &FileEntry,
        holder: &PeerInfo,
        out: &mut Assembly,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Attempt, FetchError> {
        let total = entry.blocks.len() as u64;
        let Some(endpoint) = net::pick_endpoint(&holder.endpoint) else {
            return Ok(Attempt::Failed(format!(
                "no resolvable endpoint in {:?}",
                holder.endpoint
            )));
        };
        let sock = net::socket(&self.ctx, zmq::DEALER).map_err(NetError::from)?;
        sock.connect(&endpoint).map_err(NetError::from)?;
        // Ids of this attempt start here; replies to an older attempt are ignored.
        let first_id = self.next_id;
        let mut next_req = out.next_write;
        let mut in_flight = 0usize;
        while out.next_write < total {
            while in_flight < self.window && next_req < total {
                if !out.pending.contains_key(&next_req) {
                    let req = PeerRequest::GetBlock {
                        id: self.next_id,
                        path: entry.path.clone(),
                        sha256: entry.sha256,
                        index: next_req,
                    };
                    self.next_id += 1;
                    sock.send_multipart([Vec::new(), encode(&req)], 0)
                        .map_err(NetError::from)?;
                    in_flight += 1;
                }
                next_req += 1;
            }
            if !net::wait_readable(&sock, self.stall_timeout).map_err(NetError::from)? {
                return Ok(Attempt::Failed(format!(
                    "silent for {}",
                    humantime::format_duration(self.stall_timeout)
                )));
            }
            let frames = sock.recv_multipart(0).map_err(NetError::from)?;
            let Some(body) = frames.last() else { continue };
            match decode::<PeerReply>(body) {
                Ok(PeerReply::Block { id, index, data }) if id >= first_id => {
                    in_flight = in_flight.saturating_sub(1);
                    let want = entry.blocks.get(index as usize);
                    if index < out.next_write || out.pending.contains_key(&index) {
                        debug!(index, "duplicate block ignored");
                        continue;
                    }
                    let len_ok = data.len() as u64 == block_len(entry.size, index);
                    if want.is_none() || !len_ok || Hash::of(&data) != *want.unwrap_or(&Hash::EMPTY)
                    {
                        return Ok(Attempt::Failed(format!(
                            "block {index} failed verification"
                        )));
                    }
                    progress(out.accept(index, data)?);
                }
                Ok(PeerReply::Block { .. }) => {}
                Ok(PeerReply::Error { kind, message, .. }) => {
                    return Ok(Attempt::Failed(format!("{message} ({kind:?})")));
                }
                Ok(PeerReply::Pong) => {}
                Err(e) => return Ok(Attempt::Failed(format!("bad reply: {e}"))),
            }
        }
        Ok(Attempt::Done)
    }
}

/// The file being assembled: blocks are written strictly in order (so the
/// whole-file hash is computed on the way), early arrivals wait in `pending`
/// (at most one window's worth).
struct Assembly {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    next_write: u64,
    pending: BTreeMap<u64, Vec<u8>>,
}

impl Assembly {
    /// Takes a verified block; returns how many bytes were written.
    fn accept(&mut self, index: u64, data: Vec<u8>) -> io::Result<u64> {
        self.pending.insert(index, data);
        let mut written = 0;
        while let Some(data) = self.pending.remove(&self.next_write) {
            self.file.write_all(&data)?;
            self.hasher.update(&data);
            written += data.len() as u64;
            self.next_write += 1;
        }
        Ok(written)
    }
}
