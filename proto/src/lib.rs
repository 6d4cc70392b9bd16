//! The Zync wire protocol: every type that crosses a socket, and nothing else.
//!
//! This crate owns
//! - the messages exchanged with the tracker ([`TrackerRequest`], [`TrackerReply`]),
//!   the tracker's published [`Notification`]s and the peer-to-peer transfer
//!   messages ([`PeerRequest`], [`PeerReply`]);
//! - the data model they carry: [`FileEntry`] with its [`Hash`]es and
//!   [`VersionVector`], and the deterministic conflict rule every node applies;
//! - framing ([`encode`] / [`decode`]): MessagePack with the protocol version in
//!   every message and a hard size bound checked before anything is allocated;
//! - path validation ([`RelPath`]): the only way a path from the network becomes
//!   a value, enforced at deserialization time, so a decoded message can never
//!   hold a path that escapes a folder.
//!
//! It does no I/O and knows nothing of sockets.

mod codec;
mod entry;
mod hash;
mod msg;
mod path;
mod version;

pub use codec::{block_reply_head, decode, encode, DecodeError};
pub use entry::{EntryError, FileEntry, PackedEntry, Resolution, Spans, MODE_BITS};
pub use hash::{Hash, HashParseError};
pub use msg::{
    ClusterFile, ErrorKind, Event, Failure, Notification, PeerInfo, PeerReply, PeerRequest,
    TrackerReply, TrackerRequest, Transfer, MAX_ERROR_LEN, MAX_TRANSFERS,
};
pub use path::{PathError, RelPath};
pub use version::{Causality, VersionVector, MAX_COUNTER_AHEAD};

/// Version of the wire protocol. Travels as the first element of every message;
/// a receiver rejects any other value with [`DecodeError::BadVersion`].
pub const PROTOCOL_VERSION: u16 = 2;

/// Size of a fixed block, and the average size of a content-defined chunk.
/// An entry whose `lengths` is empty has blocks of this many bytes (the last
/// may be shorter): every entry of protocol 1 and every file whose chunks
/// fall on these boundaries. See ARCHITECTURE.md for the choice.
pub const BLOCK_SIZE: u64 = 256 * 1024;

/// Smallest content-defined chunk (but the last of a file): FastCDC's
/// minimum, the cutter skips this many bytes after each cut.
pub const MIN_BLOCK_SIZE: u64 = 64 * 1024;

/// Largest block of any entry. A holder refuses to send more in one reply.
pub const MAX_BLOCK_SIZE: u64 = 1024 * 1024;

/// Largest message any Zync socket accepts, in bytes. Set as libzmq's
/// `ZMQ_MAXMSGSIZE` on every receiving socket and checked again by [`decode`].
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Most bytes of entries in one message that lists files (a registration or
/// update batch, a page of the cluster index), by [`FileEntry::size_hint`]:
/// an eighth of [`MAX_MESSAGE_SIZE`], so no index is too large to send.
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Largest request a peer's block server takes (a `GetBlock` names one
/// path of at most 4096 bytes). A connection that announces a larger frame
/// is closed at its header, before anything of it is buffered and before
/// its handshake: an outsider cannot make a peer hold 64 MiB per
/// connection.
pub const MAX_PEER_REQUEST: usize = 16 * 1024;

/// Name of the per-folder state directory (index, staging area). Reserved:
/// no path whose first component is this name is valid on the wire.
pub const STATE_DIR_NAME: &str = ".zync";
