//! Hashing local files in one streaming pass: whole-file SHA-256, the cut
//! into content-defined chunks ([`next_cut`]: FastCDC, 64 KiB / 256 KiB /
//! 1 MiB) and one SHA-256 per chunk. A file under [`PARALLEL_FROM`] bytes is
//! read whole into one buffer and done on the calling thread; a larger one
//! streams through a few recycled buffers, cut on the reading thread while
//! the chunk hashes and the whole-file hash run on two more, so on two
//! cores the three passes over a large file take about the time of one
//! SHA-256 pass and a half.
//!
//! [`Hashers`] run that off the engine's thread: a small pool that hashes
//! what it is sent and hands each result back, so a large file being hashed
//! never holds up a sync decision.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
#[cfg(test)]
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsops::{Found, Root};
use zync_proto::{FileEntry, Hash, RelPath, BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, MODE_BITS};

/// What the file system says about a file, enough to notice it changed
/// without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Inode number (a file replaced by rename has a new one).
    pub ino: u64,
    /// Permission bits ([`MODE_BITS`]); `None` in a stat recorded before
    /// modes were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl Stat {
    /// From file metadata.
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ino: m.ino(),
            mode: Some(m.mode() & MODE_BITS),
        }
    }

    /// The same content as far as a stat can tell (size, modification time
    /// and inode), whatever the mode.
    pub fn same_content(&self, other: &Stat) -> bool {
        (self.size, self.mtime_ns, self.ino) == (other.size, other.mtime_ns, other.ino)
    }
}

/// A hashed file.
#[derive(Clone, Debug)]
pub struct Hashed {
    /// The file's stat before and after hashing (they were equal).
    pub stat: Stat,
    /// Whole-content hash.
    pub sha256: Hash,
    /// Per-chunk hashes.
    pub blocks: Vec<Hash>,
    /// Per-chunk lengths, in [`FileEntry::canonical_lengths`] form (none
    /// when the chunks fall on the fixed block boundaries).
    pub lengths: Vec<u32>,
}

/// Why hashing did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file changed while it was being read; try again later.
    #[error("file changed while hashing")]
    Unstable,
}

/// Files at least this large are streamed and hashed on three threads;
/// smaller ones are read whole, into one buffer.
pub const PARALLEL_FROM: u64 = 8 * BLOCK_SIZE;

/// The length of the chunk `data` starts with: FastCDC's 2020 cutter
/// (normalization level 1) with chunks of [`MIN_BLOCK_SIZE`] to
/// [`MAX_BLOCK_SIZE`] bytes, [`BLOCK_SIZE`] on average. `data` must hold at
/// least [`MAX_BLOCK_SIZE`] bytes unless it is the rest of the file; cut
/// points then depend only on the content, so an insertion moves one or two
/// of them and every other chunk keeps its hash.
pub fn next_cut(data: &[u8]) -> usize {
    use fastcdc::v2020::{cut, MASKS};
    // log2(BLOCK_SIZE) = 18; level 1 takes one bit either side.
    const BITS: usize = BLOCK_SIZE.trailing_zeros() as usize;
    let (small, large) = (MASKS[BITS + 1], MASKS[BITS - 1]);
    let (_, n) = cut(
        data,
        MIN_BLOCK_SIZE as usize,
        BLOCK_SIZE as usize,
        MAX_BLOCK_SIZE as usize,
        small,
        large,
        small << 1,
        large << 1,
    );
    n
}

/// The chunk hashes and (canonical) lengths of `data`, a whole file's content.
pub fn chunks_of(data: &[u8]) -> (Vec<Hash>, Vec<u32>) {
    let (mut blocks, mut lengths) = (Vec::new(), Vec::new());
    let mut at = 0;
    while at < data.len() {
        let n = next_cut(&data[at..]);
        blocks.push(Hash::of(&data[at..at + n]));
        lengths.push(n as u32);
        at += n;
    }
    (
        blocks,
        FileEntry::canonical_lengths(data.len() as u64, lengths),
    )
}

/// A file modified this shortly before it is hashed is not hashed yet (see
/// [`hash_file`]): more than the coarse clock tick file times are kept in
/// (1-10 ms), much less than the watcher's debounce.
pub const RACY: std::time::Duration = std::time::Duration::from_millis(20);

/// Hashes the file at `rel` in the folder at `root`, streaming, reached as
/// [`Root::open`] reaches it (no symlink followed). Fails with
/// [`HashError::Unstable`] (look again shortly) if its size, mtime or inode
/// changed while reading, or if it was modified within [`RACY`] of the
/// start: file times have a coarse tick, so a write during hashing that
/// lands in the same tick as the last one would leave the stat unchanged,
/// and a torn read would become a version ("racy git"). A modification time
/// in the future is not such a write, and does not count.
pub fn hash_in(root: &Root, rel: &RelPath) -> Result<Hashed, HashError> {
    hash_open(root.open(rel)?, || match root.look(rel)? {
        Found::File(st) => Ok(st),
        _ => Err(io::ErrorKind::NotFound.into()),
    })
}

/// [`hash_in`] for a file outside any folder (tests).
#[cfg(test)]
pub fn hash_file(path: &Path) -> Result<Hashed, HashError> {
    hash_open(File::open(path)?, || {
        Ok(Stat::of(&std::fs::metadata(path)?))
    })
}

/// Hashes the open file `f`; `again` stats it by its name once read.
fn hash_open(mut f: File, again: impl FnOnce() -> io::Result<Stat>) -> Result<Hashed, HashError> {
    let before = Stat::of(&f.metadata()?);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let age_ns = now_ns.saturating_sub(before.mtime_ns);
    if (0..RACY.as_nanos() as i64).contains(&age_ns) {
        return Err(HashError::Unstable);
    }
    let (sha256, blocks, lengths, total) = if before.size >= PARALLEL_FROM {
        hash_parallel(&mut f)?
    } else {
        hash_inline(&mut f, before.size)?
    };
    let after = again()?;
    if after != before || total != before.size {
        return Err(HashError::Unstable);
    }
    Ok(Hashed {
        stat: before,
        sha256,
        blocks,
        lengths: FileEntry::canonical_lengths(total, lengths),
    })
}

/// Chunk hashes, chunk lengths, the whole hash, and bytes read.
type Cut = (Hash, Vec<Hash>, Vec<u32>, u64);

/// A small file, whole in one buffer, on this thread.
fn hash_inline(f: &mut File, size: u64) -> io::Result<Cut> {
    // One byte more than the stat said, to see a file that grew.
    let mut buf = vec![0u8; size as usize + 1];
    let n = read_full(f, &mut buf)?;
    let data = &buf[..n];
    let (blocks, lengths) = chunks_of(data);
    Ok((Hash::of(data), blocks, lengths, n as u64))
}

/// Bytes read from the file per buffer, past the uncut tail of the last.
const READ: usize = 2 * 1024 * 1024;

/// A buffer shared by the two hashing threads; the last to let go of it
/// hands it back to the reader.
struct Shared {
    buf: Vec<u8>,
    free: crossbeam_channel::Sender<Vec<u8>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.free.send(std::mem::take(&mut self.buf));
    }
}

/// A large file, streamed: this thread reads and cuts, one scoped thread
/// hashes the chunks and another the whole content, with a few buffers
/// going round. The bytes after a buffer's last cut (less than one chunk)
/// start the next buffer.
fn hash_parallel(f: &mut File) -> io::Result<Cut> {
    const BUFFERS: usize = 4;
    let cap = READ + MAX_BLOCK_SIZE as usize;
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(BUFFERS);
    let (chunks_tx, chunks_rx) =
        crossbeam_channel::bounded::<(Arc<Shared>, Vec<(usize, usize)>)>(2);
    let (whole_tx, whole_rx) = crossbeam_channel::bounded::<(Arc<Shared>, usize)>(2);
    for _ in 0..BUFFERS {
        let _ = free_tx.send(vec![0u8; cap]);
    }
    std::thread::scope(|s| {
        let whole = s.spawn(move || {
            let mut h = Sha256::new();
            for (shared, end) in whole_rx {
                h.update(&shared.buf[..end]);
            }
            Hash::from(h)
        });
        let chunks = s.spawn(move || {
            let (mut blocks, mut lengths) = (Vec::new(), Vec::new());
            for (shared, spans) in chunks_rx {
                for (at, len) in spans {
                    blocks.push(Hash::of(&shared.buf[at..at + len]));
                    lengths.push(len as u32);
                }
            }
            (blocks, lengths)
        });
        let mut total = 0u64;
        let read = (|| {
            let mut prev: Option<(Arc<Shared>, usize, usize)> = None;
            while let Ok(mut buf) = free_rx.recv() {
                let tail = match prev.take() {
                    Some((shared, from, to)) => {
                        buf[..to - from].copy_from_slice(&shared.buf[from..to]);
                        to - from
                    }
                    None => 0,
                };
                let got = read_full(f, &mut buf[tail..tail + READ])?;
                total += got as u64;
                let (n, end_of_file) = (tail + got, got < READ);
                let mut spans = Vec::with_capacity(n / BLOCK_SIZE as usize + 1);
                let mut at = 0;
                while at < n && (end_of_file || n - at >= MAX_BLOCK_SIZE as usize) {
                    let len = next_cut(&buf[at..n]);
                    spans.push((at, len));
                    at += len;
                }
                let shared = Arc::new(Shared {
                    buf,
                    free: free_tx.clone(),
                });
                let sent = chunks_tx.send((shared.clone(), spans)).is_ok()
                    && whole_tx.send((shared.clone(), at)).is_ok();
                if !sent || end_of_file {
                    break;
                }
                prev = Some((shared, at, n));
            }
            Ok(())
        })();
        drop((chunks_tx, whole_tx)); // ends the hashing threads
        let panicked = || io::Error::other("hashing thread panicked");
        let whole = whole.join().map_err(|_| panicked())?;
        let (blocks, lengths) = chunks.join().map_err(|_| panicked())?;
        read.map(|()| (whole, blocks, lengths, total))
    })
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A pool of hashing threads. Dropping it ends them once they have hashed
/// what they were sent.
pub struct Hashers<K> {
    jobs: crossbeam_channel::Sender<(K, RelPath)>,
}

impl<K: Send + 'static> Hashers<K> {
    /// `n` threads (at least one), each handing `(key, result)` to `done`;
    /// a thread ends when `done` returns false.
    pub fn spawn<F>(n: usize, root: &Root, done: F) -> io::Result<Hashers<K>>
    where
        F: Fn(K, Result<Hashed, HashError>) -> bool + Clone + Send + 'static,
    {
        let (jobs, rx) = crossbeam_channel::unbounded::<(K, RelPath)>();
        for i in 0..n.max(1) {
            let (rx, done, root) = (rx.clone(), done.clone(), root.clone());
            std::thread::Builder::new()
                .name(format!("zync-hash-{i}"))
                .spawn(move || {
                    for (key, rel) in rx {
                        if !done(key, hash_in(&root, &rel)) {
                            return;
                        }
                    }
                })?;
        }
        Ok(Hashers { jobs })
    }

    /// Queues the file at `rel` to be hashed (unbounded: the engine never
    /// waits on hashing).
    pub fn hash(&self, key: K, rel: RelPath) {
        // The threads end only when this sender is dropped, or when the
        // receiver of the results is gone (the engine stopping).
        let _ = self.jobs.send((key, rel));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_interesting_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let b = BLOCK_SIZE as usize;
        let p = PARALLEL_FROM as usize;
        for size in [
            0,
            1,
            b - 1,
            b,
            b + 1,
            3 * b + 7,
            p - 1,
            p,
            p + 1,
            3 * p + b / 2,
            READ + MAX_BLOCK_SIZE as usize,
        ] {
            let data = noise(size);
            let p = dir.path().join(format!("f{size}"));
            std::fs::write(&p, &data).unwrap();
            settle(&p);
            let h = hash_file(&p).unwrap();
            assert_eq!(h.sha256, Hash::of(&data), "size {size}");
            assert_eq!(h.stat.size, size as u64);
            let (blocks, lengths) = chunks_of(&data);
            assert_eq!(h.blocks, blocks, "size {size}");
            assert_eq!(h.lengths, lengths, "size {size}");
            let whole: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::new(
                &data,
                MIN_BLOCK_SIZE as u32,
                BLOCK_SIZE as u32,
                MAX_BLOCK_SIZE as u32,
            )
            .map(|c| (c.offset, c.length))
            .collect();
            let ours: Vec<(usize, usize)> = entry_of(&h)
                .spans()
                .map(|(o, n)| (o as usize, n as usize))
                .collect();
            assert_eq!(ours, whole, "the crate's own cut of size {size}");
        }
        // Content with no cut point (zeros) is cut at the largest chunk.
        let zeros = vec![0u8; 3 * MAX_BLOCK_SIZE as usize + 5];
        let p = dir.path().join("zeros");
        std::fs::write(&p, &zeros).unwrap();
        settle(&p);
        let h = hash_file(&p).unwrap();
        let m = MAX_BLOCK_SIZE as u32;
        assert_eq!(h.lengths, [m, m, m, 5]);
        assert_eq!(entry_of(&h).spans().count(), 4);
    }

    /// Incompressible bytes, the same for the same size.
    fn noise(size: usize) -> Vec<u8> {
        zync_testkit::data(size, size as u64)
    }

    fn entry_of(h: &Hashed) -> FileEntry {
        FileEntry {
            path: zync_proto::RelPath::new("f").unwrap(),
            size: h.stat.size,
            mtime_ns: h.stat.mtime_ns,
            sha256: h.sha256,
            blocks: h.blocks.clone(),
            version: Default::default(),
            deleted: false,
            modified_by: String::new(),
            lengths: h.lengths.clone(),
            mode: None,
        }
    }

    #[test]
    fn an_insertion_keeps_every_chunk_but_one_or_two() {
        let old = noise(8 << 20);
        let mut new = old[..3 << 20].to_vec();
        new.extend_from_slice(b"inserted");
        new.extend_from_slice(&old[3 << 20..]);
        let (a, _) = chunks_of(&old);
        let (b, _) = chunks_of(&new);
        let kept = b.iter().filter(|h| a.contains(h)).count();
        assert!(kept + 2 >= b.len(), "{kept} of {} chunks kept", b.len());
        assert!(b.len() > 8, "cut into chunks: {}", b.len());
    }

    /// Moves a file's mtime a second back, as if it was written a while ago.
    fn settle(p: &Path) {
        let t = filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 1, 0);
        filetime::set_file_mtime(p, t).unwrap();
    }

    #[test]
    fn a_file_modified_within_the_coarse_clock_tick_is_not_hashed_yet() {
        // A write during hashing in the same tick as the last one would not
        // change the stat: such a file is looked at again later instead.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"just written").unwrap();
        assert!(matches!(hash_file(&p), Err(HashError::Unstable)));
        std::thread::sleep(RACY + std::time::Duration::from_millis(5));
        assert_eq!(hash_file(&p).unwrap().sha256, Hash::of(b"just written"));
        // A modification time in the future is not a write happening now.
        let later =
            filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() + 3600, 0);
        filetime::set_file_mtime(&p, later).unwrap();
        assert!(hash_file(&p).is_ok());
    }

    #[test]
    fn hashers_hand_back_every_result_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        let mut want = std::collections::BTreeMap::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        let hashers = Hashers::spawn(2, &root, move |k: usize, r| tx.send((k, r)).is_ok()).unwrap();
        for k in 0..20usize {
            let rel = RelPath::new(format!("f{k}")).unwrap();
            let p = root.file(&rel);
            let content = vec![k as u8; k * 1000];
            std::fs::write(&p, &content).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(then)
                .unwrap();
            want.insert(k, Hash::of(&content));
            hashers.hash(k, rel);
        }
        hashers.hash(99, RelPath::new("missing").unwrap());
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..21 {
            let (k, r) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            match r {
                Ok(h) => {
                    got.insert(k, h.sha256);
                }
                Err(HashError::Io(e)) => {
                    assert_eq!((k, e.kind()), (99, io::ErrorKind::NotFound));
                }
                Err(e) => panic!("{k}: {e}"),
            }
        }
        assert_eq!(got, want);
    }
}
