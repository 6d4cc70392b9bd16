//! Pulling one file version from the peers that hold it.
//!
//! Credit-based, as in the ZeroMQ guide's file transfer: up to
//! [`Fetcher::window`] block requests are in flight to one holder, each block
//! is checked against its SHA-256 as it arrives, blocks are written in order
//! into a temp file in the staging folder while the whole-file hash is
//! computed (on a second thread, so receiving and verifying overlap with
//! writing and whole-file hashing), and the finished file is checked against
//! the entry's SHA-256, fsynced, and given the entry's modification time.
//! The temp file is written with `O_DIRECT` where the file system takes it
//! ([`BlockWriter`]): the file is fsynced before it is installed anyway, so
//! the page cache would only add a copy of every byte. Memory is bounded by the
//! window, whatever the file size. A holder that times out, refuses, or sends
//! a bad block is dropped and the next one continues from the first block
//! not yet verified.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tracing::debug;
use zync_proto::{
    block_len, DecodeError, ErrorKind, FileEntry, Hash, PeerInfo, RelPath, TrackerReply,
    TrackerRequest, BLOCK_SIZE,
};

use zync_net::{self as net, Choice, Context, NetError, Socket, TrackerClient};

use crate::fsops::Root;
use crate::hashing::Stat;

mod stream;

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

    /// The inode of the temp file, which it keeps when renamed into place.
    pub fn ino(&self) -> Option<u64> {
        std::fs::symlink_metadata(&self.file)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    }

    /// Renames it into place at `rel` (see [`Root::place`]); returns the
    /// stat it was renamed with. Only a [`crate::folder::Folder`] installs.
    pub(crate) fn install(self, root: &Root, rel: &RelPath) -> io::Result<Stat> {
        root.place(self.file, rel)
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
        })
    }

    /// Keeps it at `out`, outside any folder (`zync-peer get`).
    pub fn persist(self, out: &Path) -> io::Result<()> {
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
        self.stream_of(entry, (first..end).collect())
    }

    /// A stream of `entry`'s verified blocks `wanted` (ascending) from its
    /// live holders.
    fn stream_of(
        &mut self,
        entry: &FileEntry,
        wanted: Vec<u64>,
    ) -> Result<BlockStream, FetchError> {
        if entry.deleted {
            return Err(FetchError::Deleted(entry.path.clone()));
        }
        if !entry.is_consistent() {
            return Err(FetchError::Inconsistent(entry.path.clone()));
        }
        let holders = if wanted.is_empty() {
            Vec::new()
        } else {
            self.holders(entry)?
        };
        if !wanted.is_empty() && holders.is_empty() {
            return Err(FetchError::NoHolder {
                path: entry.path.clone(),
                sha256: entry.sha256,
            });
        }
        let sock = holders
            .first()
            .and_then(|h| net::pick_endpoint(&h.endpoint))
            .and_then(|ep| {
                let i = self.idle.iter().position(|(e, _)| *e == ep)?;
                Some(self.idle.swap_remove(i))
            });
        Ok(BlockStream {
            ctx: self.ctx.clone(),
            entry: entry.clone(),
            holders,
            current: 0,
            sock,
            window: self.window.max(1),
            stall: self.stall_timeout,
            wanted,
            next_req: 0,
            next_out: 0,
            in_flight: 0,
            next_id: self.next_id,
            first_id: self.next_id,
            pending: BTreeMap::new(),
            senders: Vec::new(),
            received: 0,
        })
    }

    /// Takes back a finished stream's connection if it is clean, and its
    /// request ids.
    fn reclaim(&mut self, stream: BlockStream) {
        self.next_id = self.next_id.max(stream.next_id);
        if stream.in_flight == 0 {
            if let Some(conn) = stream.sock {
                if self.idle.len() >= IDLE_SOCKETS {
                    self.idle.remove(0);
                }
                self.idle.push(conn);
            }
        }
    }

    /// From now on, blocks that local files (or versions this process
    /// kept) hold are copied from them instead of fetched.
    pub fn reuse(&mut self, local: LocalBlocks) {
        self.local = Some(local);
    }

    /// Downloads `entry` into a new temp file in `staging`, calling
    /// `progress(bytes)` as verified bytes are written. Blocks a local file
    /// holds are read from it (checked against their hash first); only the
    /// others are fetched.
    pub fn fetch(
        &mut self,
        entry: &FileEntry,
        staging: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Fetched, FetchError> {
        if !entry.is_consistent() {
            return Err(FetchError::Inconsistent(entry.path.clone()));
        }
        let mut local = LocalReader::default();
        let plan: Vec<Option<(PathBuf, u64)>> = match &self.local {
            Some(l) => l
                .plan(entry)
                .into_iter()
                .enumerate()
                // Checked now, so that only what no local file holds is asked for.
                .map(|(i, src)| {
                    src.filter(|(file, at)| {
                        local
                            .read(file, *at, block_len(entry.size, i as u64), &entry.blocks[i])
                            .is_some()
                    })
                })
                .collect(),
            None => vec![None; entry.blocks.len()],
        };
        let wanted: Vec<u64> = (0..entry.blocks.len() as u64)
            .filter(|&i| plan[i as usize].is_none())
            .collect();
        let mut stream = self.stream_of(entry, wanted)?;
        let mut file = tempfile::NamedTempFile::new_in(staging)?;
        // Verified blocks go to a writer thread that also computes the
        // whole-file hash; a few blocks queue between them (bounded memory).
        let (tx, rx) = crossbeam_channel::bounded::<Block>(4);
        let path = file.path().to_owned();
        let mut out = BlockWriter::new(&path, file.as_file_mut());
        let mut reused = 0u64;
        let got = std::thread::scope(|s| -> Result<Hash, FetchError> {
            let writer = s.spawn(move || -> io::Result<Hash> {
                let mut hasher = Sha256::new();
                for block in rx {
                    out.write(&block)?;
                    hasher.update(&block[..]);
                }
                out.finish()?;
                Ok(hasher.into())
            });
            let streamed = (|| {
                for (i, src) in plan.iter().enumerate() {
                    let block = match src {
                        Some((file, at)) => {
                            let len = block_len(entry.size, i as u64);
                            let b = local
                                .read(file, *at, len, &entry.blocks[i])
                                .ok_or_else(|| FetchError::LocalChanged(entry.path.clone()))?;
                            reused += len;
                            Block::from(b)
                        }
                        None => stream
                            .next_block()?
                            .ok_or_else(|| FetchError::Inconsistent(entry.path.clone()))?,
                    };
                    let n = block.len() as u64;
                    if tx.send(block).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    progress(n);
                }
                Ok::<(), FetchError>(())
            })();
            drop(tx);
            let written = writer
                .join()
                .map_err(|_| io::Error::other("writer thread panicked"))?;
            streamed?;
            Ok(written?)
        });
        let from = stream.senders().to_vec();
        let fetched = stream.received();
        self.reclaim(stream);
        let got = got?;
        if got != entry.sha256 {
            return Err(FetchError::HashMismatch {
                path: entry.path.clone(),
                got,
                want: entry.sha256,
            });
        }
        let f = file.as_file();
        f.sync_data()?;
        f.set_modified(UNIX_EPOCH + Duration::from_nanos(entry.mtime_ns.max(0) as u64))?;
        Ok(Fetched {
            file: file.into_temp_path(),
            from,
            fetched,
            reused,
        })
    }
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
    /// For each block of `entry`, a local file and offset that may hold it.
    fn plan(&self, entry: &FileEntry) -> Vec<Option<(PathBuf, u64)>> {
        let kept = self.versions.as_ref().and_then(|v| v.find(&entry.sha256));
        entry
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| match self.view.find_block(b) {
                Some((file, j)) => Some((file, j as u64 * BLOCK_SIZE)),
                None => kept.clone().map(|f| (f, i as u64 * BLOCK_SIZE)),
            })
            .collect()
    }
}

/// Reads blocks from local files, keeping a few open.
#[derive(Default)]
struct LocalReader {
    open: Vec<(PathBuf, std::fs::File)>,
}

impl LocalReader {
    /// The `len` bytes at `at` in `file`, if they hash to `want`.
    fn read(&mut self, file: &Path, at: u64, len: u64, want: &Hash) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let i = match self.open.iter().position(|(p, _)| p == file) {
            Some(i) => i,
            None => {
                if self.open.len() >= 8 {
                    self.open.remove(0);
                }
                self.open
                    .push((file.to_owned(), std::fs::File::open(file).ok()?));
                self.open.len() - 1
            }
        };
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.open[i].1.read_exact_at(&mut buf, at).ok()?;
        (Hash::of(&buf) == *want).then_some(buf)
    }
}

/// Alignment `O_DIRECT` needs for offsets, lengths and memory (the largest
/// logical block size in common use).
const DIRECT_ALIGN: usize = 4096;

/// Appends blocks to a new file, through `O_DIRECT` when the file system
/// supports it (Linux; not tmpfs, say), else through the page cache. Every
/// block but the last is [`zync_proto::BLOCK_SIZE`] long, so offsets stay
/// aligned; the last is padded with zeros and the file cut back to size.
pub struct BlockWriter<'a> {
    file: &'a mut std::fs::File,
    direct: Option<std::fs::File>,
    buf: Vec<u8>,
    len: u64,
}

impl<'a> BlockWriter<'a> {
    /// A writer for `file` (empty), which lives at `path`.
    pub fn new(path: &Path, file: &'a mut std::fs::File) -> BlockWriter<'a> {
        BlockWriter {
            file,
            direct: open_direct(path),
            buf: Vec::new(),
            len: 0,
        }
    }

    /// True while writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `block`.
    pub fn write(&mut self, block: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(d) = &self.direct {
            let padded = block.len().next_multiple_of(DIRECT_ALIGN);
            if self.buf.len() < padded + DIRECT_ALIGN {
                self.buf = vec![0u8; padded.max(zync_proto::BLOCK_SIZE as usize) + DIRECT_ALIGN];
            }
            let at = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
            let window = &mut self.buf[at..at + padded];
            window[..block.len()].copy_from_slice(block);
            window[block.len()..].fill(0);
            match d.write_all_at(window, self.len) {
                Ok(()) => {
                    self.len += block.len() as u64;
                    return Ok(());
                }
                // Some file systems refuse O_DIRECT only at the first write.
                Err(e)
                    if self.len == 0
                        && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    debug!(error = %e, "O_DIRECT refused; writing through the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(block, self.len)?;
        self.len += block.len() as u64;
        Ok(())
    }

    /// Cuts off the last block's padding.
    pub fn finish(self) -> io::Result<()> {
        if self.direct.is_some() {
            self.file.set_len(self.len)?;
        }
        Ok(())
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
        for block in data.chunks(BLOCK_SIZE as usize) {
            w.write(block).unwrap();
        }
        let direct = w.is_direct();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data, "size {size}");
        (data, direct)
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
        }
    }
}
