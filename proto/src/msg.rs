//! Message families. Variant names are the tags on the wire, so removing a
//! variant never changes another's encoding; new fields are added with
//! `#[serde(default)]` so older messages still decode.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{FileEntry, Hash, RelPath};

/// A request to the tracker (REQ → ROUTER).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackerRequest {
    /// Join (or re-join) the cluster. `files` is the first batch of the
    /// peer's index; further batches follow as [`TrackerRequest::Update`].
    Register {
        /// Peer name, unique in the cluster.
        name: String,
        /// Random id of this peer's folder, stable across restarts; lets a
        /// restarted peer replace its old registration under the same name.
        device: u64,
        /// Where other peers reach this peer's transfer socket.
        endpoint: String,
        /// Entries the peer holds (including tombstones).
        files: Vec<FileEntry>,
    },
    /// I am alive.
    Heartbeat {
        /// Peer name.
        name: String,
        /// Device id given at registration.
        device: u64,
        /// Downloads under way, the largest first, at most
        /// [`MAX_TRANSFERS`] (empty: left out on the wire).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        transfers: Vec<Transfer>,
        /// Downloads waiting to be tried again after a failure (0: left out
        /// on the wire).
        #[serde(default, skip_serializing_if = "is_zero")]
        failing: u64,
        /// The latest of those failures, at most [`MAX_TRANSFERS`] (empty:
        /// left out on the wire).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<Failure>,
    },
    /// These entries changed on the peer (new versions it now holds).
    Update {
        /// Peer name.
        name: String,
        /// Device id given at registration.
        device: u64,
        /// Changed entries.
        files: Vec<FileEntry>,
    },
    /// Leaving the cluster cleanly.
    Unregister {
        /// Peer name.
        name: String,
        /// Device id given at registration.
        device: u64,
    },
    /// One page of the cluster's current index (a snapshot for the Clone
    /// pattern): the paths after `after`, in order, up to
    /// [`crate::PAGE_BYTES`]; the reply's `next` says where to go on.
    List {
        /// Start after this path (`None`: from the first).
        after: Option<RelPath>,
    },
    /// Which live peers hold `path` with content `sha256`.
    Locate {
        /// The file.
        path: RelPath,
        /// Its content hash.
        sha256: Hash,
    },
    /// The live peers.
    Peers,
    /// A current file with content `sha256`, preferring one with live
    /// holders, and its live holders (content-addressed lookup).
    Find {
        /// The content hash.
        sha256: Hash,
    },
    /// A backup tracker (`zync-tracker --backup-of`) asking its primary
    /// where it publishes, to keep a live copy of its index. Also the
    /// backup's heartbeat while it does not hear the primary.
    Follow,
}

impl TrackerRequest {
    /// The request's name as on the wire (`Register`, `List`, ...), for
    /// logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerRequest::Register { .. } => "Register",
            TrackerRequest::Heartbeat { .. } => "Heartbeat",
            TrackerRequest::Update { .. } => "Update",
            TrackerRequest::Unregister { .. } => "Unregister",
            TrackerRequest::List { .. } => "List",
            TrackerRequest::Locate { .. } => "Locate",
            TrackerRequest::Peers => "Peers",
            TrackerRequest::Find { .. } => "Find",
            TrackerRequest::Follow => "Follow",
        }
    }
}

/// The tracker's answer to a [`TrackerRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackerReply {
    /// Registration accepted.
    Registered {
        /// The tracker's epoch (random per start).
        epoch: u64,
        /// PUB endpoint to subscribe to, as the tracker sees it; a `*` or
        /// `0.0.0.0` host means "the host you reached me on".
        publish: String,
        /// Heartbeat interval the tracker expects, in milliseconds.
        heartbeat_ms: u64,
    },
    /// Done.
    Ok,
    /// The cluster index at notification `seq` of `epoch`.
    Snapshot {
        /// Tracker epoch.
        epoch: u64,
        /// Sequence number of the last notification reflected here.
        seq: u64,
        /// Current versions (tombstones included) and their holders, for
        /// the paths of this page.
        files: Vec<ClusterFile>,
        /// Live peers.
        peers: Vec<PeerInfo>,
        /// More paths follow: ask `List { after: next }`. A paged snapshot
        /// counts as of the *first* page's `seq`: changes made while paging
        /// are published too, and applying one twice is harmless.
        #[serde(default)]
        next: Option<RelPath>,
    },
    /// Answer to `Locate` and `Find`: the current entry, if any, and live
    /// holders of the requested content.
    Holders {
        /// Current entry of the path (may differ from the requested content).
        entry: Option<FileEntry>,
        /// Live peers holding exactly the requested content.
        holders: Vec<PeerInfo>,
    },
    /// Answer to `Peers`.
    Peers {
        /// Live peers.
        peers: Vec<PeerInfo>,
    },
    /// Answer to `Follow`: where and how often the tracker publishes.
    Following {
        /// The tracker's epoch (random per start).
        epoch: u64,
        /// Its last notification's sequence number.
        seq: u64,
        /// PUB endpoint, as in `Registered`.
        publish: String,
        /// Its heartbeat (and `Hugz`) interval, in milliseconds.
        heartbeat_ms: u64,
    },
    /// The request failed.
    Error {
        /// Machine-readable kind.
        kind: ErrorKind,
        /// Human-readable reason.
        message: String,
    },
}

/// A path's current version and which live peers hold it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The current version.
    pub entry: FileEntry,
    /// Names of live peers holding exactly this version's content.
    pub holders: Vec<String>,
}

/// A live peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Peer name.
    pub name: String,
    /// Transfer endpoint.
    pub endpoint: String,
    /// Milliseconds since the tracker last heard from it.
    pub last_seen_ms: u64,
    /// Its downloads under way, as its last heartbeat said (empty: left
    /// out on the wire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// Its downloads waiting to be tried again after a failure, as its
    /// last heartbeat said (0: left out on the wire).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failing: u64,
    /// The latest of those failures (empty: left out on the wire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Failure>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Longest error message a [`Failure`] carries, in bytes.
pub const MAX_ERROR_LEN: usize = 300;

/// A download that failed and waits to be tried again, as its peer
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The file.
    pub path: RelPath,
    /// Why the last try failed (at most [`MAX_ERROR_LEN`] bytes).
    pub error: String,
}

impl Failure {
    /// A failure of `path`, its message cut to [`MAX_ERROR_LEN`] bytes.
    pub fn new(path: RelPath, error: &str) -> Failure {
        let mut end = error.len().min(MAX_ERROR_LEN);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        Failure {
            path,
            error: error[..end].to_owned(),
        }
    }
}

/// Most downloads a heartbeat reports (the largest; a peer may have more
/// under way).
pub const MAX_TRANSFERS: usize = 16;

/// A download under way, as its peer reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The file.
    pub path: RelPath,
    /// Its size.
    pub size: u64,
    /// Bytes of it this peer has (verified, or taken from its own disk).
    pub done: u64,
    /// Bytes a second since the download started.
    pub rate: u64,
}

impl Transfer {
    /// Whether it can be what a peer reports: `done` within `size`.
    pub fn is_consistent(&self) -> bool {
        self.done <= self.size
    }
}

/// Kinds of error replies, shared by tracker and peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The message could not be decoded.
    Malformed,
    /// The message carries another protocol version.
    BadVersion,
    /// The message is larger than allowed.
    TooLarge,
    /// The sender is not registered (e.g. the tracker restarted).
    UnknownPeer,
    /// Another live peer already uses this name.
    NameTaken,
    /// No such file or block.
    NotFound,
    /// The request was well-formed but not acceptable.
    Invalid,
    /// The responder failed locally (I/O).
    Internal,
    /// A backup tracker whose primary is alive: ask the primary. A client
    /// with a list of trackers moves on to the next, as if this one had
    /// not answered.
    Standby,
}

/// A change published by the tracker on its PUB socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Tracker epoch (random per tracker start).
    pub epoch: u64,
    /// Grows by one per change; [`Event::Hugz`] repeats the last value.
    pub seq: u64,
    /// What happened.
    pub event: Event,
}

/// What a [`Notification`] reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A path's current version changed (added, modified or deleted).
    FileChanged {
        /// The new current version and its holders.
        file: ClusterFile,
    },
    /// A peer joined.
    PeerJoined {
        /// The peer.
        peer: PeerInfo,
    },
    /// A peer left or was dropped for silence.
    PeerLeft {
        /// Its name.
        name: String,
    },
    /// Nothing changed; sent periodically so subscribers can detect a lost
    /// last message or a new epoch.
    Hugz,
    /// A deletion every live peer that reported the path has applied,
    /// older than the tracker's `--forget-deleted-after`, is forgotten: the
    /// tracker no longer knows the path, and a peer whose record of it is
    /// this tombstone (or an older version) drops the record. A peer that
    /// comes back later with the file offers it as a new file.
    Forgotten {
        /// The tombstone forgotten.
        entry: FileEntry,
    },
}

/// A request to a peer's transfer socket (DEALER/REQ → ROUTER).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// The `len` bytes at `offset` (one block) of the file at `path` whose
    /// whole content hashes to `sha256`.
    GetBlock {
        /// Echoed in the reply so pipelined requests can be matched.
        id: u64,
        /// The file.
        path: RelPath,
        /// Content the requester expects; the holder refuses if it has other content.
        sha256: Hash,
        /// Block number, echoed in the reply.
        index: u64,
        /// Where the block starts in the file.
        offset: u64,
        /// Its length: 1 to [`crate::MAX_BLOCK_SIZE`], within the file.
        len: u64,
    },
    /// Liveness probe.
    Ping,
}

impl PeerRequest {
    /// The request's name as on the wire (`GetBlock`, ...), for logs and
    /// metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::GetBlock { .. } => "GetBlock",
            PeerRequest::Ping => "Ping",
        }
    }
}

/// A peer's answer to a [`PeerRequest`]. Decoded, a block's bytes borrow
/// from the received message instead of being copied out of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerReply<'a> {
    /// The requested block's bytes.
    Block {
        /// Echo of the request id.
        id: u64,
        /// Block number.
        index: u64,
        /// The bytes (to be checked against the block hash by the receiver).
        #[serde(borrow, with = "serde_bytes")]
        data: Cow<'a, [u8]>,
    },
    /// Answer to `Ping`.
    Pong,
    /// The request failed.
    Error {
        /// Echo of the request id (0 if it could not be read).
        id: u64,
        /// Machine-readable kind.
        kind: ErrorKind,
        /// Human-readable reason.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requests_kind_is_its_tag_on_the_wire() {
        let tagged =
            |bytes: Vec<u8>, kind: &str| bytes.windows(kind.len()).any(|w| w == kind.as_bytes());
        for r in [
            TrackerRequest::Peers,
            TrackerRequest::Follow,
            TrackerRequest::List { after: None },
        ] {
            assert!(tagged(crate::encode(&r), r.kind()), "{r:?}");
        }
        assert!(tagged(
            crate::encode(&PeerRequest::Ping),
            PeerRequest::Ping.kind()
        ));
    }
}
