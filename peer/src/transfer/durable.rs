//! Making many downloaded files durable at once.
//!
//! A fetched file is fsynced before it is renamed into place (so a file
//! under its real name is complete even after a power cut). One
//! `fdatasync` per file is a data write, an inode write and a disk cache
//! flush, each a round trip to the disk; for a folder of small files
//! those, not the bytes, set the pace. A `syncfs` of their file system
//! makes any number of files durable with one write-out of everything
//! dirty on it and one flush. So fetch workers hand their finished files
//! over in [`SyncGroup`]s, and one thread ([`sync_groups`]) makes every
//! group waiting at that moment durable with one `syncfs`: the group
//! commit of databases. The more files arrive while a `syncfs` runs, the
//! more the next one covers; a lone file waits for no other.
//!
//! That is only as sound as the errors it reports. `syncfs` reports a
//! write-back error (since Linux 5.8) that happened on the file system
//! after the descriptor it is called on was opened; so each group opens
//! the staging folder *before* the first file of the group is written, and
//! the `syncfs` is called on the descriptor opened first among the groups
//! it covers. Any write-back error from then on — ours or another file's —
//! makes them fall back to an `fdatasync` of each file, which says exactly
//! which file failed. Because `syncfs` also writes out other programs'
//! dirty data, it is used only while little of it is waiting (`Dirty` +
//! `Writeback` in `/proc/meminfo`); otherwise, on older kernels and
//! elsewhere than Linux, each file is synced on its own (many at once).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FetchError, Fetched, Written};

/// Fewest files synced with one `syncfs`.
const MIN_FILES: usize = 4;

/// Most bytes waiting to be written back on the machine for a `syncfs`,
/// which writes out everything on the file system: it should not wait
/// long for other programs' data. Not much less, though: a machine with
/// memory to spare keeps hundreds of megabytes dirty for up to 30 s as a
/// matter of course (175–220 MB on the 24 GiB benchmark machine while a
/// late joiner fetched 200,000 small files: inode updates of the files
/// just read and written). With the limit at 32 MB every file of that
/// join was synced on its own, and it took 30 s instead of 24 s.
const MAX_DIRTY: u64 = 512 * 1024 * 1024;

/// Files synced one by one at once, when they cannot be synced together.
const ONE_BY_ONE: usize = 16;

/// Orders the groups' descriptors by when they were opened.
static OPENED: AtomicU64 = AtomicU64::new(0);

/// Downloads to be made durable together with whatever else is waiting;
/// open it before the first of them is written.
pub struct SyncGroup {
    /// The staging folder, opened before the group's first write (`None`:
    /// each file is synced on its own), and when, in opening order.
    dir: Option<(u64, std::fs::File)>,
}

impl SyncGroup {
    /// A group for files about to be written in `staging`.
    pub fn open(staging: &Path) -> SyncGroup {
        let dir = syncfs_reports_errors()
            .then(|| std::fs::File::open(staging).ok())
            .flatten()
            .map(|f| (OPENED.fetch_add(1, Ordering::Relaxed), f));
        SyncGroup { dir }
    }
}

/// Sets each file's modification time and makes every file of `groups`
/// durable: with one `syncfs` when there are enough of them and every
/// group had the staging folder open before its first write, otherwise
/// each on its own. Returns each file's result, in order.
pub fn sync_groups(groups: Vec<(SyncGroup, Vec<Written>)>) -> Vec<Result<Fetched, FetchError>> {
    let (dirs, files): (Vec<_>, Vec<_>) = groups.into_iter().map(|(g, w)| (g.dir, w)).unzip();
    // The descriptor opened first: its `syncfs` reports an error of any
    // write made since, so of every file here (if every group had one).
    let first = dirs
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .and_then(|dirs| dirs.into_iter().min_by_key(|(n, _)| *n));
    let mut batch: Vec<Written> = files.into_iter().flatten().collect();
    let together = batch.len() >= MIN_FILES && dirty_bytes().is_some_and(|d| d <= MAX_DIRTY);
    if let (true, Some((_, dir))) = (together, first) {
        let finished = batch.iter_mut().all(|w| w.finish().is_ok());
        if finished && syncfs(&dir).is_ok() {
            return batch.into_iter().map(|w| Ok(w.fetched)).collect();
        }
    }
    one_by_one(batch)
}

/// Each file synced on its own, [`ONE_BY_ONE`] at a time.
fn one_by_one(batch: Vec<Written>) -> Vec<Result<Fetched, FetchError>> {
    if batch.len() <= 1 {
        return batch.into_iter().map(Written::sync).collect();
    }
    let per = batch.len().div_ceil(ONE_BY_ONE);
    let mut chunks: Vec<Vec<Written>> = Vec::new();
    let mut rest = batch.into_iter();
    loop {
        let chunk: Vec<Written> = rest.by_ref().take(per).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    std::thread::scope(|s| {
        let running: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(Written::sync).collect::<Vec<_>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(target_os = "linux")]
fn syncfs(dir: &std::fs::File) -> std::io::Result<()> {
    Ok(rustix::fs::syncfs(dir)?)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::other("no syncfs here"))
}

/// Whether `syncfs` reports write-back errors here: Linux 5.8 or later.
fn syncfs_reports_errors() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            let uname = rustix::system::uname();
            let release = uname.release().to_string_lossy();
            at_least(&release, (5, 8))
        }
        #[cfg(not(target_os = "linux"))]
        false
    })
}

/// Whether a kernel release such as `6.1.0-18-amd64` is `min` or later.
fn at_least(release: &str, min: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

/// Bytes waiting to be written back on this machine (`Dirty` plus
/// `Writeback` in `/proc/meminfo`), where the system says.
fn dirty_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let n = line[name.len()..].trim().trim_end_matches("kB").trim();
        n.parse().ok()
    };
    Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(at_least("5.8.0", (5, 8)));
        assert!(at_least("6.1.0-18-amd64", (5, 8)));
        assert!(at_least("5.10.16.3-microsoft-standard-WSL2", (5, 8)));
        assert!(!at_least("5.4.0-150-generic", (5, 8)));
        assert!(!at_least("4.19.0", (5, 8)));
        assert!(!at_least("garbage", (5, 8)));
    }

    /// Files `from..from + n` written after their group was opened, as a
    /// worker writes them.
    fn written(staging: &Path, from: usize, n: usize) -> Vec<Written> {
        (from..from + n)
            .map(|i| {
                let path = staging.join(format!("f{i}.part"));
                std::fs::write(&path, [i as u8; 100]).unwrap();
                Written {
                    handle: std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
                    mtime: std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_000_000 + i as u64),
                    mode: 0o640,
                    fetched: Fetched {
                        file: tempfile::TempPath::try_from_path(&path).unwrap(),
                        from: Vec::new(),
                        fetched: 100,
                        reused: 0,
                        resumed: 0,
                        stat: None,
                    },
                }
            })
            .collect()
    }

    #[test]
    fn groups_of_any_size_come_back_whole_with_their_mtimes_modes_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        // Below the minimum for a `syncfs` (one by one) and above it
        // (together), in one group and in several.
        for sizes in [
            vec![1],
            vec![MIN_FILES - 1],
            vec![MIN_FILES],
            vec![3, 1, 2 * MIN_FILES],
        ] {
            let mut groups = Vec::new();
            let mut at = 0;
            for &n in &sizes {
                let group = SyncGroup::open(dir.path());
                groups.push((group, written(dir.path(), at, n)));
                at += n;
            }
            let results = sync_groups(groups);
            assert_eq!(results.len(), at, "{sizes:?}");
            for (i, r) in results.into_iter().enumerate() {
                let f = r.unwrap();
                let m = std::fs::metadata(&f.file).unwrap();
                let want =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
                assert_eq!(m.modified().unwrap(), want, "file {i} of {sizes:?}");
                assert_eq!(std::fs::read(&f.file).unwrap(), vec![i as u8; 100]);
                // The mode it is installed with, and the stat the engine
                // records for it without looking it up again.
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    m.permissions().mode() & 0o777,
                    0o640,
                    "file {i} of {sizes:?}"
                );
                let lstat = crate::hashing::Stat::of(&std::fs::symlink_metadata(&f.file).unwrap());
                assert_eq!(f.stat, Some(lstat), "file {i} of {sizes:?}");
            }
        }
    }

    #[test]
    fn files_synced_one_by_one_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * ONE_BY_ONE + 3;
        let results = one_by_one(written(dir.path(), 0, n));
        assert_eq!(results.len(), n);
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(std::fs::read(&r.unwrap().file).unwrap(), vec![i as u8; 100]);
        }
    }

    #[test]
    fn dirty_bytes_are_read_where_linux_says() {
        if cfg!(target_os = "linux") {
            assert!(dirty_bytes().is_some());
        }
    }
}
