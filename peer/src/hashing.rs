//! Hashing local files in one streaming pass: whole-file SHA-256 and one
//! SHA-256 per [`BLOCK_SIZE`] block. Small files use one reused buffer; from
//! [`PARALLEL_FROM`] bytes the whole-file hash runs on a second thread fed
//! the same buffers (a few, recycled), so the two SHA-256 passes over a large
//! file take about half the wall time on two cores.
//!
//! [`Hashers`] run that off the engine's thread: a small pool that hashes
//! what it is sent and hands each result back, so a large file being hashed
//! never holds up a sync decision.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zync_proto::{Hash, BLOCK_SIZE};

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
}

impl Stat {
    /// From file metadata.
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ino: m.ino(),
        }
    }
}

/// A hashed file.
#[derive(Clone, Debug)]
pub struct Hashed {
    /// The file's stat before and after hashing (they were equal).
    pub stat: Stat,
    /// Whole-content hash.
    pub sha256: Hash,
    /// Per-block hashes.
    pub blocks: Vec<Hash>,
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

/// Files at least this large are hashed on two threads.
pub const PARALLEL_FROM: u64 = 8 * BLOCK_SIZE;

/// A file modified this shortly before it is hashed is not hashed yet (see
/// [`hash_file`]): more than the coarse clock tick file times are kept in
/// (1-10 ms), much less than the watcher's debounce.
pub const RACY: std::time::Duration = std::time::Duration::from_millis(20);

/// Hashes the file at `path`, streaming. Fails with [`HashError::Unstable`]
/// (look again shortly) if its size, mtime or inode changed while reading,
/// or if it was modified within [`RACY`] of the start: file times have a
/// coarse tick, so a write during hashing that lands in the same tick as
/// the last one would leave the stat unchanged, and a torn read would
/// become a version ("racy git"). A modification time in the future is not
/// such a write, and does not count.
pub fn hash_file(path: &Path) -> Result<Hashed, HashError> {
    let mut f = File::open(path)?;
    let before = Stat::of(&f.metadata()?);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let age_ns = now_ns.saturating_sub(before.mtime_ns);
    if (0..RACY.as_nanos() as i64).contains(&age_ns) {
        return Err(HashError::Unstable);
    }
    let mut blocks = Vec::with_capacity(before.size.div_ceil(BLOCK_SIZE).min(1 << 20) as usize);
    let (sha256, total) = if before.size >= PARALLEL_FROM {
        hash_parallel(&mut f, &mut blocks)?
    } else {
        hash_inline(&mut f, &mut blocks)?
    };
    let after = Stat::of(&std::fs::metadata(path)?);
    if after != before || total != before.size {
        return Err(HashError::Unstable);
    }
    Ok(Hashed {
        stat: before,
        sha256,
        blocks,
    })
}

/// Both hashes on this thread, one buffer. Returns (whole hash, bytes read).
fn hash_inline(f: &mut File, blocks: &mut Vec<Hash>) -> io::Result<(Hash, u64)> {
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    let mut total = 0u64;
    loop {
        let n = read_full(f, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        whole.update(&buf[..n]);
        blocks.push(Hash::of(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    Ok((whole.into(), total))
}

/// Block hashes here, the whole-file hash on a scoped second thread; four
/// buffers go round between them.
fn hash_parallel(f: &mut File, blocks: &mut Vec<Hash>) -> io::Result<(Hash, u64)> {
    const BUFFERS: usize = 4;
    let (full_tx, full_rx) = crossbeam_channel::bounded::<(Vec<u8>, usize)>(BUFFERS);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = free_tx.send(vec![0u8; BLOCK_SIZE as usize]);
    }
    std::thread::scope(|s| {
        let whole = s.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                let _ = free_tx.send(buf);
            }
            Hash::from(h)
        });
        let mut total = 0u64;
        let read = (|| {
            while let Ok(mut buf) = free_rx.recv() {
                let n = read_full(f, &mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                blocks.push(Hash::of(&buf[..n]));
                let last = n < buf.len();
                if full_tx.send((buf, n)).is_err() || last {
                    break;
                }
            }
            Ok(())
        })();
        drop(full_tx); // ends the hashing thread
        let whole = whole
            .join()
            .map_err(|_| io::Error::other("hashing thread panicked"))?;
        read.map(|()| (whole, total))
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
    jobs: crossbeam_channel::Sender<(K, PathBuf)>,
}

impl<K: Send + 'static> Hashers<K> {
    /// `n` threads (at least one), each handing `(key, result)` to `done`;
    /// a thread ends when `done` returns false.
    pub fn spawn<F>(n: usize, done: F) -> io::Result<Hashers<K>>
    where
        F: Fn(K, Result<Hashed, HashError>) -> bool + Clone + Send + 'static,
    {
        let (jobs, rx) = crossbeam_channel::unbounded::<(K, PathBuf)>();
        for i in 0..n.max(1) {
            let (rx, done) = (rx.clone(), done.clone());
            std::thread::Builder::new()
                .name(format!("zync-hash-{i}"))
                .spawn(move || {
                    for (key, path) in rx {
                        if !done(key, hash_file(&path)) {
                            return;
                        }
                    }
                })?;
        }
        Ok(Hashers { jobs })
    }

    /// Queues the file at `path` to be hashed (unbounded: the engine never
    /// waits on hashing).
    pub fn hash(&self, key: K, path: PathBuf) {
        // The threads end only when this sender is dropped, or when the
        // receiver of the results is gone (the engine stopping).
        let _ = self.jobs.send((key, path));
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
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            std::fs::write(&p, &data).unwrap();
            settle(&p);
            let h = hash_file(&p).unwrap();
            assert_eq!(h.sha256, Hash::of(&data), "size {size}");
            assert_eq!(h.stat.size, size as u64);
            let want: Vec<Hash> = data.chunks(b).map(Hash::of).collect();
            assert_eq!(h.blocks, want, "size {size}");
        }
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
        let hashers = Hashers::spawn(2, move |k: usize, r| tx.send((k, r)).is_ok()).unwrap();
        for k in 0..20usize {
            let p = dir.path().join(format!("f{k}"));
            let content = vec![k as u8; k * 1000];
            std::fs::write(&p, &content).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(then)
                .unwrap();
            want.insert(k, Hash::of(&content));
            hashers.hash(k, p);
        }
        hashers.hash(99, dir.path().join("missing"));
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
