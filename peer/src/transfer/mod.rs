//! Pulling one file version from the peers that hold it.
//!
//! Credit-based, as in the ZeroMQ guide's file transfer: up to
//! [`Fetcher::window`] block requests are in flight to one holder, each block
//! is checked against its SHA-256 as it arrives, blocks are written in order
//! into a temp file in the staging folder while the whole-file hash is
//! computed (a hashing and a writing thread, so receiving, hashing and
//! waiting for the disk overlap), and the finished file is checked against
//! the entry's SHA-256, fsynced, and given the entry's modification time.
//! A peer's first try of a download checks received blocks for length only
//! and reads blocks found in local files once, leaving their bytes to the
//! whole-file hash; when that fails, nothing is installed and a second try
//! checks each block of the partial file, and each block it fetches or
//! reads, against its own hash (and drops a holder that sent a bad one).
//! The temp file is written with `O_DIRECT` where the file system takes it
//! ([`BlockWriter`]): the file is fsynced before it is installed anyway, so
//! the page cache would only add a copy of every byte. Memory is bounded by the
//! window, whatever the file size. A holder that times out, refuses, or sends
//! a bad block is dropped and the next one continues from the first block
//! not yet verified.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tracing::debug;
use zync_proto::{
    DecodeError, ErrorKind, FileEntry, Hash, PeerInfo, RelPath, TrackerReply, TrackerRequest,
    BLOCK_SIZE,
};

use zync_net::{self as net, Choice, Context, NetError, Socket, TrackerClient};

use crate::fsops::Root;
use crate::hashing::Stat;

mod batch;
mod durable;
mod progress;
mod stream;

pub use batch::{batch_dir, batchable, Want, BATCH_FILES, SMALL_FILE};
pub use durable::{sync_groups, SyncGroup};
pub use progress::{Progress, Tracked};
pub use stream::{Block, BlockStream};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The tracker knows no such path.
    #[error("{0}: no such file in the cluster")]
    NotFound(RelPath),
    /// No current file in the cluster has this content.
    #[error("no file in the cluster has content {0}")]
    NoSuchContent(Hash),
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
    /// A local file that held some of the blocks changed while they were
    /// read; the next try looks again.
    #[error("{0}: a local file with some of its blocks changed during the download")]
    LocalChanged(RelPath),
    /// Blocks taken unchecked (the whole-file hash was to check them) did
    /// not add up to the content; the next try checks each.
    #[error("{0}: content did not hash right as a whole; checking it block by block")]
    Recheck(RelPath),
    /// Every holder was tried and failed.
    #[error("{path}: every holder failed (last: {peer}: {last})")]
    AllHoldersFailed {
        /// The file.
        path: RelPath,
        /// The last holder tried.
        peer: String,
        /// Why it failed.
        last: HolderError,
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

/// Why one holder was given up during a download (the next one is tried).
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// None of the endpoints it advertises resolves from here.
    #[error("no resolvable endpoint in {0:?}")]
    NoEndpoint(String),
    /// The connection could not be set up or used.
    #[error("connection: {0}")]
    Socket(#[from] net::Error),
    /// No reply for this long.
    #[error("silent for {}", humantime::format_duration(*.0))]
    Silent(Duration),
    /// A block's bytes did not match its hash or length.
    #[error("block {0} failed verification")]
    BadBlock(u64),
    /// It answered with an error.
    #[error("{message} ({kind:?})")]
    Refused {
        /// Error kind.
        kind: ErrorKind,
        /// Reason given.
        message: String,
    },
    /// Its reply could not be decoded.
    #[error("bad reply: {0}")]
    BadReply(#[from] DecodeError),
}

/// A finished, verified download, not yet in place: every block and the
/// whole content checked against the entry's hashes. Only the fetch code
/// here can make one (its fields are private), and [`Fetched::install`] is
/// how a remote version gets into a folder, so no unverified bytes can.
pub struct Fetched {
    /// The temp file, with the entry's content and mtime, fsynced.
    file: tempfile::TempPath,
    /// The holders that sent blocks (none when local files had them all).
    from: Vec<String>,
    /// Bytes received from holders.
    fetched: u64,
    /// Bytes taken from local files.
    reused: u64,
    /// Bytes already in place from an earlier, interrupted try.
    resumed: u64,
    /// The temp file's stat once it was final (mtime and mode set), taken
    /// through its descriptor off the engine's thread; `None` when not
    /// taken (then it is looked up when installed).
    stat: Option<Stat>,
}

impl Fetched {
    /// The holders that sent blocks, comma-separated (`-` when none did).
    pub fn from(&self) -> String {
        if self.from.is_empty() {
            "-".to_owned()
        } else {
            self.from.join(",")
        }
    }

    /// Bytes received from holders.
    pub fn fetched(&self) -> u64 {
        self.fetched
    }

    /// Bytes taken from local files instead.
    pub fn reused(&self) -> u64 {
        self.reused
    }

    /// Bytes already in place from an earlier, interrupted try.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// The figures of the whole download when an `earlier` try of it
    /// stopped short: every byte not fetched by either try, nor there from
    /// before them, came from local files.
    fn after(mut self, earlier: Option<Tally>, size: u64) -> Fetched {
        let Some(t) = earlier else { return self };
        self.fetched += t.fetched;
        self.resumed = t.resumed;
        self.reused = size.saturating_sub(self.fetched + self.resumed);
        // Who sent what ended in the file is known for the last try only;
        // when it needed nothing from holders, the earlier one's did.
        if self.from.is_empty() {
            self.from = t.from;
        }
        self
    }

    /// Whether its file is the partial download of `entry` in `staging`
    /// (the name a failed try would have left).
    pub fn is_partial_of(&self, staging: &Path, entry: &FileEntry) -> bool {
        self.file
            .file_name()
            .is_some_and(|n| n == partial_name(entry).as_str())
            && self.file.parent() == Some(staging)
    }

    /// The inode of the temp file, which it keeps when renamed into place.
    pub fn ino(&self) -> Option<u64> {
        self.stat.map(|s| s.ino).or_else(|| {
            std::fs::symlink_metadata(&self.file)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        })
    }

    /// Gives it permission bits `mode` and renames it into place at `rel`
    /// (see [`Root::place`]); returns the stat it was renamed with. Only a
    /// [`crate::folder::Folder`] installs.
    pub(crate) fn install(self, root: &Root, rel: &RelPath, mode: u32) -> io::Result<Stat> {
        use std::os::unix::fs::PermissionsExt;
        match self.stat {
            // The usual case: the sync gave it this mode already.
            Some(stat) if stat.mode == Some(mode & zync_proto::MODE_BITS) => {
                root.place_as(self.file, rel, stat)
            }
            _ => {
                std::fs::set_permissions(&self.file, std::fs::Permissions::from_mode(mode))?;
                root.place(self.file, rel)
            }
        }
    }

    /// A local temp file whose content is checked against `sha256` here, as
    /// a download's is: for the folder's unit tests, which have no holder.
    #[cfg(test)]
    pub(crate) fn check_local(file: tempfile::TempPath, sha256: Hash) -> Option<Fetched> {
        let h = crate::hashing::hash_file(&file).ok()?;
        (h.sha256 == sha256).then(|| Fetched {
            file,
            from: Vec::new(),
            fetched: 0,
            reused: 0,
            resumed: 0,
            stat: None,
        })
    }

    /// Keeps it at `out`, outside any folder (`zync-peer get`), with
    /// permission bits `mode`.
    pub fn persist(self, out: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.file, std::fs::Permissions::from_mode(mode))?;
        self.file.persist(out).map(|_| ()).map_err(|e| e.error)
    }
}

/// How long a fetcher, and any reading client, waits for the tracker's answer.
pub const TRACKER_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections to holders kept between downloads, per fetcher. Bounded.
const IDLE_SOCKETS: usize = 8;

/// Downloads file versions; owns its tracker socket (one thread).
pub struct Fetcher {
    ctx: Context,
    tracker: TrackerClient,
    /// Ask the other trackers when the one in use is silent (a reading
    /// client), rather than only the one a peer's engine registered with.
    fail_over: bool,
    exclude: Option<String>,
    /// Holder connections left clean by finished downloads (no request in
    /// flight), by endpoint: a folder of small files would otherwise cost a
    /// TCP and ZMTP handshake per file on both sides.
    idle: Vec<(String, Socket)>,
    /// Request ids go on across downloads, so no reply can be taken for
    /// another download's on a reused connection.
    next_id: u64,
    /// Where blocks may be found locally (a peer's folder).
    local: Option<LocalBlocks>,
    /// Block requests in flight per holder.
    pub window: usize,
    /// How long a holder may stay silent before it is given up.
    pub stall_timeout: Duration,
    /// What the last try got from holders and an earlier download.
    last_try: Tally,
    /// Where downloads of large files are tracked while under way.
    progress: Option<Progress>,
}

/// What one try of a download got, for the figures of the try after it.
#[derive(Default)]
struct Tally {
    fetched: u64,
    resumed: u64,
    from: Vec<String>,
}

impl Fetcher {
    /// A fetcher that asks the trackers `tracker` (comma-separated, the
    /// first preferred; whichever answers) who holds what.
    pub fn new(ctx: &Context, tracker: &str) -> Fetcher {
        Fetcher::with(
            ctx,
            TrackerClient::new(ctx, tracker, TRACKER_TIMEOUT),
            true,
            None,
        )
    }

    /// A peer's fetcher: it asks the tracker `choice` says (the one its
    /// engine registered with) and skips the peer named `me` (ourselves).
    pub fn following(ctx: &Context, tracker: &str, choice: Choice, me: String) -> Fetcher {
        let client = TrackerClient::following(ctx, tracker, TRACKER_TIMEOUT, choice);
        Fetcher::with(ctx, client, false, Some(me))
    }

    fn with(
        ctx: &Context,
        tracker: TrackerClient,
        fail_over: bool,
        exclude: Option<String>,
    ) -> Fetcher {
        Fetcher {
            ctx: ctx.clone(),
            tracker,
            fail_over,
            exclude,
            idle: Vec::new(),
            local: None,
            last_try: Tally::default(),
            progress: None,
            next_id: 1,
            window: 16,
            stall_timeout: Duration::from_secs(5),
        }
    }

    fn ask(&mut self, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        match self.fail_over {
            true => self.tracker.request_any(req),
            false => self.tracker.request(req),
        }
    }

    /// The current entry of `path` (tombstones included), from the tracker.
    pub fn lookup(&mut self, path: &RelPath) -> Result<FileEntry, FetchError> {
        let req = TrackerRequest::Locate {
            path: path.clone(),
            sha256: Hash::default(),
        };
        match self.ask(&req)? {
            TrackerReply::Holders { entry: Some(e), .. } => Ok(e),
            TrackerReply::Holders { entry: None, .. } => Err(FetchError::NotFound(path.clone())),
            _ => Err(NetError::Unexpected(self.tracker.endpoint().to_owned()).into()),
        }
    }

    /// A current entry with content `sha256` (one with live holders if there
    /// is one), from the tracker.
    pub fn find(&mut self, sha256: Hash) -> Result<FileEntry, FetchError> {
        match self.ask(&TrackerRequest::Find { sha256 })? {
            TrackerReply::Holders { entry: Some(e), .. } => Ok(e),
            TrackerReply::Holders { entry: None, .. } => Err(FetchError::NoSuchContent(sha256)),
            _ => Err(NetError::Unexpected(self.tracker.endpoint().to_owned()).into()),
        }
    }

    /// Live holders of `entry`'s content, other than ourselves.
    pub fn holders(&mut self, entry: &FileEntry) -> Result<Vec<PeerInfo>, FetchError> {
        let req = TrackerRequest::Locate {
            path: entry.path.clone(),
            sha256: entry.sha256,
        };
        match self.ask(&req)? {
            TrackerReply::Holders { holders, .. } => Ok(holders
                .into_iter()
                .filter(|h| Some(&h.name) != self.exclude.as_ref())
                .collect()),
            _ => Err(NetError::Unexpected(self.tracker.endpoint().to_owned()).into()),
        }
    }

    /// A stream of `entry`'s verified blocks `first..end` from its live
    /// holders. Fails with [`FetchError::NoHolder`] if there are none.
    pub fn stream(
        &mut self,
        entry: &FileEntry,
        first: u64,
        end: u64,
    ) -> Result<BlockStream, FetchError> {
        let end = end.min(entry.blocks.len() as u64);
        self.stream_of(entry, (first..end).collect(), None)
    }

    /// A stream of `entry`'s verified blocks `wanted` (ascending) from
    /// `holders`, or from the live holders the tracker names.
    fn stream_of(
        &mut self,
        entry: &FileEntry,
        wanted: Vec<u64>,
        holders: Option<&[PeerInfo]>,
    ) -> Result<BlockStream, FetchError> {
        if entry.deleted {
            return Err(FetchError::Deleted(entry.path.clone()));
        }
        if !entry.is_consistent() {
            return Err(FetchError::Inconsistent(entry.path.clone()));
        }
        let holders = match holders {
            _ if wanted.is_empty() => Vec::new(),
            Some(h) => h.to_vec(),
            None => self.holders(entry)?,
        };
        if !wanted.is_empty() && holders.is_empty() {
            return Err(FetchError::NoHolder {
                path: entry.path.clone(),
                sha256: entry.sha256,
            });
        }
        Ok(BlockStream::new(
            self.ctx.clone(),
            entry.clone(),
            holders,
            std::mem::take(&mut self.idle),
            self.window,
            self.stall_timeout,
            wanted,
            self.next_id,
        ))
    }

    /// Takes back a finished stream's clean connections, and its request ids.
    fn reclaim(&mut self, stream: BlockStream) {
        let (idle, next_id) = stream.finish();
        self.next_id = self.next_id.max(next_id);
        self.idle = idle;
        while self.idle.len() > IDLE_SOCKETS {
            self.idle.remove(0);
        }
    }

    /// From now on, blocks that local files (or versions this process
    /// kept) hold are copied from them instead of fetched.
    pub fn reuse(&mut self, local: LocalBlocks) {
        self.local = Some(local);
    }

    /// From now on, the downloads [`Fetcher::fetch_many`] makes one by one
    /// (large files) are tracked in `progress` while under way.
    pub fn track(&mut self, progress: Progress) {
        self.progress = Some(progress);
    }

    /// Downloads `entry` into a temp file in `staging`, calling
    /// `progress(bytes)` as verified bytes are written. Blocks a local file
    /// holds are read from it (checked against their hash first); only the
    /// others are fetched. A peer's download (one with [`Fetcher::reuse`])
    /// is resumable: it goes to a partial file named after the version,
    /// kept when the download fails, and a later try takes every block of
    /// it that still checks out instead of fetching it again.
    pub fn fetch(
        &mut self,
        entry: &FileEntry,
        staging: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Fetched, FetchError> {
        self.fetch_from(entry, &[], staging, progress)?.sync()
    }

    /// [`Fetcher::fetch`], trying `holders` first when the file fits in one
    /// window (so it would come from one holder anyway): the notification
    /// that announced a version names who holds it, and a folder of small
    /// files then costs no tracker round trip per file. If they all fail,
    /// the tracker is asked who else holds it. A larger file always asks
    /// the tracker, whose answer names every holder for the swarm.
    ///
    /// What it returns is verified but not yet durable: [`Written::sync`]
    /// makes it so, on whichever thread the caller likes (a worker goes on
    /// to its next download meanwhile).
    pub fn fetch_from(
        &mut self,
        entry: &FileEntry,
        holders: &[PeerInfo],
        staging: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Written, FetchError> {
        let mine = |h: &&PeerInfo| Some(&h.name) != self.exclude.as_ref();
        let hinted: Vec<PeerInfo> = holders.iter().filter(mine).cloned().collect();
        let one_window = entry.blocks.len() <= self.window;
        let mut hint = (!hinted.is_empty() && one_window).then_some(hinted.as_slice());
        let mut look_again = true;
        let mut earlier: Option<Tally> = None;
        loop {
            match self.fetch_with(entry, hint, staging, progress) {
                Err(FetchError::AllHoldersFailed { .. }) if hint.is_some() => {
                    debug!(path = %entry.path, "the holders heard of failed; asking the tracker");
                    hint = None;
                }
                // The partial file is there now, so this try checks every
                // block it takes from it or from a local file first.
                Err(FetchError::LocalChanged(_) | FetchError::Recheck(_))
                    if std::mem::take(&mut look_again) =>
                {
                    debug!(path = %entry.path, "the first try did not add up; again, checking each block");
                    earlier = Some(std::mem::take(&mut self.last_try));
                }
                done => {
                    return done.map(|mut w| {
                        w.fetched = w.fetched.after(earlier, entry.size);
                        w
                    })
                }
            }
        }
    }

    fn fetch_with(
        &mut self,
        entry: &FileEntry,
        holders: Option<&[PeerInfo]>,
        staging: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Written, FetchError> {
        if !entry.is_consistent() {
            return Err(FetchError::Inconsistent(entry.path.clone()));
        }
        let n = entry.blocks.len();
        let mut local = LocalReader::new(self.local.as_ref().map(|l| l.view.clone()));
        let partial = self
            .local
            .is_some()
            .then(|| staging.join(partial_name(entry)));
        let resumable = partial
            .as_ref()
            .filter(|p| p.is_file())
            .map(|p| LocalFile::Own(p.clone()));
        // A first try takes the index's word for where local blocks are and
        // reads each once, into the whole-file hash (an edit of a large file
        // then costs one pass over the old copy, not three); if the result
        // does not hash right, the partial file stays and the next try
        // (a resumed one) checks each block against its own hash first.
        let careful = resumable.is_some();
        let spans: Vec<(u64, u64)> = entry.spans().collect();
        let plan: Vec<Src> = (0..n)
            .map(|i| {
                let (at, len) = spans[i];
                let want = &entry.blocks[i];
                // Checked now, so that only what is not here is asked for.
                if let Some(p) = &resumable {
                    if local.read(p, at, len, want).is_some() {
                        return Src::Partial;
                    }
                }
                match self.local.as_ref().and_then(|l| l.find(entry, i, at)) {
                    Some((file, off))
                        if !careful || local.read(&file, off, len, want).is_some() =>
                    {
                        Src::Local(file, off)
                    }
                    _ => Src::Net,
                }
            })
            .collect();
        let wanted: Vec<u64> = (0..n as u64)
            .filter(|&i| matches!(plan[i as usize], Src::Net))
            .collect();
        let mut stream = self.stream_of(entry, wanted, holders)?;
        // Received blocks too are left to the whole-file hash on a first
        // try of a peer's download (there is a partial file to recheck).
        let check_net = careful || partial.is_none();
        if !check_net {
            stream.unchecked();
        }
        let (mut file, temp) = match &partial {
            Some(p) => (
                crate::fsops::private_file()
                    .read(true)
                    .truncate(false)
                    .open(p)?,
                None,
            ),
            None => {
                let (f, t) = tempfile::NamedTempFile::new_in(staging)?.into_parts();
                (f, Some(t))
            }
        };
        let path = partial
            .clone()
            .or_else(|| temp.as_ref().map(|t| t.to_path_buf()))
            .unwrap_or_default();
        let size = entry.size;
        let out = if size <= INLINE_WRITE {
            // Not worth a second open: the page cache takes a few blocks.
            BlockWriter::buffered(&mut file)
        } else {
            BlockWriter::new(&path, &mut file)
        };
        let (mut reused, mut resumed, mut unchecked) = (0u64, 0u64, false);
        // Hands each block, in order, to `emit` (with whether it must be
        // written); stops early if `emit` says so.
        let mut produce = |emit: &mut dyn FnMut(Block, bool) -> bool| -> Result<(), FetchError> {
            for (i, src) in plan.iter().enumerate() {
                let (at, len) = spans[i];
                let changed = || FetchError::LocalChanged(entry.path.clone());
                let (block, write) = match src {
                    Src::Partial => {
                        let p = resumable.as_ref().ok_or_else(changed)?;
                        let b = local
                            .read(p, at, len, &entry.blocks[i])
                            .ok_or_else(changed)?;
                        resumed += len;
                        (Block::from(b), false)
                    }
                    Src::Local(file, off) => {
                        let want = careful.then_some(&entry.blocks[i]);
                        let b = local.read_as(file, *off, len, want).ok_or_else(changed)?;
                        unchecked |= !careful;
                        reused += len;
                        (Block::from(b), true)
                    }
                    Src::Net => {
                        let b = stream
                            .next_block()?
                            .ok_or_else(|| FetchError::Inconsistent(entry.path.clone()))?;
                        unchecked |= !check_net;
                        (b, true)
                    }
                };
                if !emit(block, write) {
                    break; // the writer failed; its error is reported by the caller
                }
                progress(len);
            }
            Ok(())
        };
        let got = if size <= INLINE_WRITE {
            // A small file: writing on this thread costs less than a thread.
            let mut sink = Sink::new(out);
            let mut failed = None;
            let streamed = produce(&mut |b, write| match sink.take(&b, write) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            });
            match failed {
                Some(e) => Err(FetchError::Io(e)),
                None => streamed.and_then(|()| Ok(sink.finish(size)?)),
            }
        } else {
            // Blocks go, in order, to a thread that computes the
            // whole-file hash, and on to one that writes those not already in
            // place, so hashing overlaps with waiting for the disk; a few
            // blocks queue between them (bounded memory).
            let (to_hash, hash_rx) = crossbeam_channel::bounded::<(Block, bool)>(4);
            let (to_write, write_rx) = crossbeam_channel::bounded::<(u64, Block)>(4);
            std::thread::scope(|s| -> Result<Hash, FetchError> {
                let hasher = s.spawn(move || {
                    let (mut h, mut at) = (Sha256::new(), 0u64);
                    for (block, write) in hash_rx {
                        h.update(&*block);
                        let len = block.len() as u64;
                        if write && to_write.send((at, block)).is_err() {
                            break; // the writer failed; it says why
                        }
                        at += len;
                    }
                    Hash::from(h)
                });
                let writer = s.spawn(move || -> io::Result<()> {
                    let mut out = out;
                    for (at, block) in write_rx {
                        out.write_at(at, &block)?;
                    }
                    out.finish(size)
                });
                let streamed = produce(&mut |b, write| to_hash.send((b, write)).is_ok());
                drop(to_hash);
                let panicked = |what| io::Error::other(format!("{what} thread panicked"));
                let hash = hasher.join().map_err(|_| panicked("hashing"))?;
                let written = writer.join().map_err(|_| panicked("writer"))?;
                written?;
                streamed?;
                Ok(hash)
            })
        };
        let from = stream.senders().to_vec();
        let fetched = stream.received();
        self.reclaim(stream);
        self.last_try = Tally {
            fetched,
            resumed,
            from: from.clone(),
        };
        let got = got.inspect_err(|_| {
            // A try that got no block leaves no partial file behind.
            if let Some(p) = &partial {
                if std::fs::metadata(p).is_ok_and(|m| m.len() == 0) {
                    let _ = std::fs::remove_file(p);
                }
            }
        })?;
        if got != entry.sha256 && unchecked {
            return Err(FetchError::Recheck(entry.path.clone()));
        }
        if got != entry.sha256 {
            if let Some(p) = &partial {
                let _ = std::fs::remove_file(p);
            }
            return Err(FetchError::HashMismatch {
                path: entry.path.clone(),
                got,
                want: entry.sha256,
            });
        }
        let temp = match temp {
            Some(t) => t,
            None => tempfile::TempPath::try_from_path(path)?,
        };
        Ok(Written::new(
            file,
            entry,
            Fetched {
                file: temp,
                from,
                fetched,
                reused,
                resumed,
                stat: None,
            },
        ))
    }
}

/// A verified download whose bytes may still be in the page cache:
/// [`Written::sync`] gives it its mtime and mode and makes it durable, and
/// only then is it a [`Fetched`] that can be installed.
pub struct Written {
    handle: std::fs::File,
    mtime: std::time::SystemTime,
    /// The permission bits it is installed with.
    mode: u32,
    fetched: Fetched,
}

impl Written {
    /// The download of `entry`, written through `handle`.
    fn new(handle: std::fs::File, entry: &FileEntry, fetched: Fetched) -> Written {
        Written {
            handle,
            mtime: UNIX_EPOCH + Duration::from_nanos(entry.mtime_ns.max(0) as u64),
            mode: crate::fsops::mode_for(entry.mode),
            fetched,
        }
    }

    /// Gives it the entry's modification time and mode and takes its
    /// stat, all through the descriptor: the engine, which installs it,
    /// then needs no lookup of the temp file by name.
    fn finish(&mut self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.handle.set_modified(self.mtime)?;
        self.handle
            .set_permissions(std::fs::Permissions::from_mode(self.mode))?;
        self.fetched.stat = Some(Stat::of(&self.handle.metadata()?));
        Ok(())
    }

    /// [`Written::finish`], then waits until the content is on disk.
    pub fn sync(mut self) -> Result<Fetched, FetchError> {
        self.finish()?;
        self.handle.sync_data()?;
        Ok(self.fetched)
    }
}

/// Files up to this size are written on the fetching thread.
const INLINE_WRITE: u64 = 4 * BLOCK_SIZE;

/// Writes blocks in order (those not already in place) and computes the
/// whole-file hash.
struct Sink<'a> {
    out: BlockWriter<'a>,
    hasher: Sha256,
    at: u64,
}

impl<'a> Sink<'a> {
    fn new(out: BlockWriter<'a>) -> Sink<'a> {
        Sink {
            out,
            hasher: Sha256::new(),
            at: 0,
        }
    }

    fn take(&mut self, block: &[u8], write: bool) -> io::Result<()> {
        if write {
            self.out.write_at(self.at, block)?;
        }
        self.hasher.update(block);
        self.at += block.len() as u64;
        Ok(())
    }

    fn finish(self, size: u64) -> io::Result<Hash> {
        self.out.finish(size)?;
        Ok(self.hasher.into())
    }
}

/// Where each block of a download comes from.
enum Src {
    /// Already in place in the partial file of an earlier try.
    Partial,
    /// A local file, at this offset.
    Local(LocalFile, u64),
    /// The holders.
    Net,
}

/// How long a partial download is kept for a later try to resume.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The partial file of a download of `entry`: one per path and content.
fn partial_name(entry: &FileEntry) -> String {
    let path = Hash::of(entry.path.as_str().as_bytes()).to_hex();
    format!("{}-{}.part", entry.sha256.to_hex(), &path[..16])
}

/// Removes the partial file of a download of `entry`, if a failed try
/// left one: for content no longer wanted.
pub fn drop_partial(staging: &Path, entry: &FileEntry) {
    match std::fs::remove_file(staging.join(partial_name(entry))) {
        Ok(()) => {
            tracing::debug!(path = %entry.path, "dropped the partial download of a version no longer wanted")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %entry.path, error = %e, "cannot remove a partial download")
        }
    }
}

/// Cleans the staging folder: partial downloads untouched for
/// [`PARTIAL_MAX_AGE`] and anything else (a temp file of an interrupted
/// upload or restore, a fetch worker's [`batch_dir`] and what it held) go;
/// recent partial downloads stay to be resumed.
/// Returns how many files went.
pub fn clean_staging(staging: &Path, max_age: Duration, everything_else: bool) -> usize {
    let Ok(dir) = std::fs::read_dir(staging) else {
        return 0;
    };
    let mut removed = 0;
    for item in dir.flatten() {
        let p = item.path();
        let part = p.extension().is_some_and(|x| x == "part");
        let stale = item
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if (part && stale) || (!part && everything_else) {
            let gone = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed += usize::from(gone.is_ok());
        }
    }
    removed
}

/// Where a download may find the blocks it needs on this machine: the
/// folder's served files (by block hash), and the versions this process
/// kept (by whole content: a rename whose deletion arrived first).
#[derive(Clone)]
pub struct LocalBlocks {
    /// The folder's served files.
    pub view: crate::folder::ServedView,
    /// Its kept versions.
    pub versions: Option<crate::versions::Versions>,
}

impl LocalBlocks {
    /// A local file and offset that may hold block `i` of `entry`, which
    /// starts at `at`.
    fn find(&self, entry: &FileEntry, i: usize, at: u64) -> Option<(LocalFile, u64)> {
        if let Some((rel, off)) = self.view.find_block(entry.blocks.get(i)?) {
            return Some((LocalFile::Folder(rel), off));
        }
        // A kept copy of the same content holds it at the same offset.
        let kept = self.versions.as_ref()?.find(&entry.sha256)?;
        Some((LocalFile::Own(kept), at))
    }
}

/// A local file a block may be read from.
#[derive(Clone, Debug, PartialEq)]
enum LocalFile {
    /// A file of the folder, reached as the block server reaches it.
    Folder(RelPath),
    /// A file of the state folder: a partial download, a kept version.
    Own(PathBuf),
}

/// Reads blocks from local files, keeping a few open.
struct LocalReader {
    view: Option<crate::folder::ServedView>,
    open: Vec<(LocalFile, std::fs::File)>,
}

impl LocalReader {
    /// A reader of the state folder's files, and of the folder's through
    /// `view`.
    fn new(view: Option<crate::folder::ServedView>) -> LocalReader {
        LocalReader {
            view,
            open: Vec::new(),
        }
    }

    /// The `len` bytes at `at` in `file`, if they hash to `want`.
    fn read(&mut self, file: &LocalFile, at: u64, len: u64, want: &Hash) -> Option<Vec<u8>> {
        self.read_as(file, at, len, Some(want))
    }

    /// The `len` bytes at `at` in `file`, if they hash to `want` (not
    /// checked without one: the whole-file hash will be).
    fn read_as(
        &mut self,
        file: &LocalFile,
        at: u64,
        len: u64,
        want: Option<&Hash>,
    ) -> Option<Vec<u8>> {
        use std::io::{Read, Seek};
        let i = match self.open.iter().position(|(p, _)| p == file) {
            Some(i) => i,
            None => {
                if self.open.len() >= 8 {
                    self.open.remove(0);
                }
                let f = match file {
                    LocalFile::Folder(rel) => self.view.as_ref()?.open(rel).ok()?,
                    LocalFile::Own(p) => std::fs::File::open(p).ok()?,
                };
                self.open.push((file.clone(), f));
                self.open.len() - 1
            }
        };
        // Read into fresh capacity: `read_to_end` does not zero it first.
        let mut buf = Vec::with_capacity(usize::try_from(len).ok()?);
        let mut f = &self.open[i].1;
        f.seek(io::SeekFrom::Start(at)).ok()?;
        f.take(len).read_to_end(&mut buf).ok()?;
        let whole = buf.len() as u64 == len;
        (whole && want.is_none_or(|w| Hash::of(&buf) == *w)).then_some(buf)
    }
}

/// Alignment `O_DIRECT` needs for offsets, lengths and memory (the largest
/// logical block size in common use).
const DIRECT_ALIGN: usize = 4096;

/// Bytes a [`BlockWriter`] gathers before an `O_DIRECT` write.
const STAGE: usize = 1024 * 1024;

/// Writes blocks into a file at their offsets, through `O_DIRECT` when the
/// file system supports it (Linux; not tmpfs, say), else through the page
/// cache. Blocks come in file order, perhaps with gaps (blocks already in
/// place), and at any offset (chunks are not aligned): each run of
/// contiguous bytes is gathered into an aligned buffer and written
/// [`STAGE`] bytes at a time, and only the pieces of it that do not cover
/// a whole aligned page (its first and last few bytes) go through the page
/// cache.
pub struct BlockWriter<'a> {
    file: &'a mut std::fs::File,
    direct: Option<std::fs::File>,
    buf: Vec<u8>,
    /// Where the aligned part of `buf` starts.
    base: usize,
    /// Bytes gathered in it.
    fill: usize,
    /// Where in the file they go (a multiple of [`DIRECT_ALIGN`]).
    run_at: u64,
    /// A direct write has succeeded.
    direct_ok: bool,
}

impl<'a> BlockWriter<'a> {
    /// A writer for `file` (empty), which lives at `path`.
    pub fn new(path: &Path, file: &'a mut std::fs::File) -> BlockWriter<'a> {
        let direct = open_direct(path);
        let buf = if direct.is_some() {
            vec![0u8; STAGE + DIRECT_ALIGN]
        } else {
            Vec::new()
        };
        let base = buf.as_ptr().align_offset(DIRECT_ALIGN).min(buf.len());
        BlockWriter {
            file,
            direct,
            buf,
            base,
            fill: 0,
            run_at: 0,
            direct_ok: false,
        }
    }

    /// A writer for `file` (empty) through the page cache.
    pub fn buffered(file: &'a mut std::fs::File) -> BlockWriter<'a> {
        BlockWriter {
            file,
            direct: None,
            buf: Vec::new(),
            base: 0,
            fill: 0,
            run_at: 0,
            direct_ok: false,
        }
    }

    /// True while writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes `block` at `at`, past every block written before.
    pub fn write_at(&mut self, mut at: u64, mut block: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.direct.is_none() {
            return self.file.write_all_at(block, at);
        }
        if at != self.run_at + self.fill as u64 || self.fill == 0 {
            // A new run: what comes before the next aligned offset goes
            // through the page cache.
            self.flush()?;
            let into_page = (at % DIRECT_ALIGN as u64) as usize;
            if into_page != 0 {
                let head = (DIRECT_ALIGN - into_page).min(block.len());
                self.file.write_all_at(&block[..head], at)?;
                (at, block) = (at + head as u64, &block[head..]);
            }
            self.run_at = at;
        }
        while !block.is_empty() {
            let n = (STAGE - self.fill).min(block.len());
            let from = self.base + self.fill;
            self.buf[from..from + n].copy_from_slice(&block[..n]);
            self.fill += n;
            block = &block[n..];
            if self.fill == STAGE {
                self.put(STAGE)?;
            }
        }
        Ok(())
    }

    /// Writes the first `n` gathered bytes (a multiple of
    /// [`DIRECT_ALIGN`]) directly and keeps the rest.
    fn put(&mut self, n: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let bytes = &self.buf[self.base..self.base + n];
        let wrote = match &self.direct {
            Some(d) => d.write_all_at(bytes, self.run_at),
            None => self.file.write_all_at(bytes, self.run_at),
        };
        match wrote {
            Ok(()) => self.direct_ok |= self.direct.is_some(),
            // Some file systems refuse O_DIRECT only at the first write.
            Err(e)
                if self.direct.is_some()
                    && !self.direct_ok
                    && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                debug!(error = %e, "O_DIRECT refused; writing through the page cache");
                self.direct = None;
                self.file.write_all_at(bytes, self.run_at)?;
            }
            Err(e) => return Err(e),
        }
        self.buf
            .copy_within(self.base + n..self.base + self.fill, self.base);
        self.run_at += n as u64;
        self.fill -= n;
        Ok(())
    }

    /// Writes what is gathered: the whole pages directly, the rest
    /// through the page cache.
    fn flush(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let whole = self.fill / DIRECT_ALIGN * DIRECT_ALIGN;
        if whole > 0 {
            self.put(whole)?;
        }
        if self.fill > 0 {
            let rest = &self.buf[self.base..self.base + self.fill];
            self.file.write_all_at(rest, self.run_at)?;
            self.run_at += self.fill as u64;
            self.fill = 0;
        }
        Ok(())
    }

    /// Writes what is left and sets the file's length to `size` (cutting
    /// off whatever an earlier, longer try left).
    pub fn finish(mut self, size: u64) -> io::Result<()> {
        self.flush()?;
        self.file.set_len(size)
    }
}

/// A second, `O_DIRECT` handle on `path`, if the platform and file system allow.
fn open_direct(path: &Path) -> Option<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{open, Mode, OFlags};
        match open(
            path,
            OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(std::fs::File::from(fd)),
            Err(e) => {
                debug!(error = %e, "no O_DIRECT here; writing through the page cache");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zync_proto::BLOCK_SIZE;

    fn write_blocks(dir: &Path, size: usize) -> (Vec<u8>, bool) {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
        let path = tmp.path().to_owned();
        let mut w = BlockWriter::new(&path, tmp.as_file_mut());
        for (i, block) in data.chunks(BLOCK_SIZE as usize).enumerate() {
            w.write_at(i as u64 * BLOCK_SIZE, block).unwrap();
        }
        let direct = w.is_direct();
        w.finish(size as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data, "size {size}");
        (data, direct)
    }

    #[test]
    fn staging_keeps_recent_partial_downloads_only() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("abc-def.part");
        let other = dir.path().join(".tmpXYZ");
        std::fs::write(&part, b"p").unwrap();
        std::fs::write(&other, b"o").unwrap();
        // A worker's folder of small files, and one a crash left there.
        let batch = batch_dir(dir.path(), 0);
        std::fs::create_dir(&batch).unwrap();
        std::fs::write(batch.join("abc-def.part"), b"s").unwrap();
        assert_eq!(clean_staging(dir.path(), PARTIAL_MAX_AGE, false), 0);
        assert!(batch.exists(), "a running worker's folder stays");
        assert_eq!(clean_staging(dir.path(), PARTIAL_MAX_AGE, true), 2);
        assert!(part.exists() && !other.exists(), "a recent partial stays");
        assert!(!batch.exists(), "what a batch left is not resumed");
        assert_eq!(clean_staging(dir.path(), PARTIAL_MAX_AGE, false), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            clean_staging(dir.path(), Duration::from_millis(10), false),
            1
        );
        assert!(!part.exists(), "an abandoned partial goes");
    }

    #[test]
    fn block_writer_writes_interesting_sizes_exactly() {
        let b = BLOCK_SIZE as usize;
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = vec![dir.path().to_owned()];
        // tmpfs refuses O_DIRECT: the fallback must give the same bytes.
        if Path::new("/dev/shm").is_dir() {
            dirs.push("/dev/shm".into());
        }
        for d in &dirs {
            for size in [0, 1, 4095, 4096, 4097, b - 1, b, b + 1, 3 * b + 7] {
                write_blocks(d, size);
            }
            unaligned_runs_with_gaps(d);
        }
    }

    /// Chunks of any length, some of them already in place (a resumed
    /// download), come out exactly.
    fn unaligned_runs_with_gaps(dir: &Path) {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut cuts = Vec::new();
        let (mut at, mut k) = (0usize, 0usize);
        while at < data.len() {
            let n =
                [70_001, 300_017, 65_536, 1_048_576, 4_096, 123_457][k % 6].min(data.len() - at);
            cuts.push((at, n, k % 4 == 1));
            at += n;
            k += 1;
        }
        // The file holds the blocks in place already, and zeros elsewhere.
        let mut before = vec![0u8; data.len()];
        for &(at, n, in_place) in &cuts {
            if in_place {
                before[at..at + n].copy_from_slice(&data[at..at + n]);
            }
        }
        let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
        std::fs::write(tmp.path(), &before).unwrap();
        let path = tmp.path().to_owned();
        let mut w = BlockWriter::new(&path, tmp.as_file_mut());
        for &(at, n, in_place) in &cuts {
            if !in_place {
                w.write_at(at as u64, &data[at..at + n]).unwrap();
            }
        }
        w.finish(data.len() as u64).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == data,
            "in {}",
            dir.display()
        );
    }
}
