//! Making many downloaded files durable at once.
//!
//! A fetched file is fsynced before it is renamed into place (so a file
//! under its real name is complete even after a power cut). One
//! `fdatasync` per file is a data write, an inode write and a disk cache
//! flush, each a round trip to the disk; for a folder of small files
//! those, not the bytes, set the pace. A [`SyncGroup`] makes a batch of
//! files durable with one `syncfs` of their file system instead: one
//! write-out of everything dirty on it and one flush.
//!
//! That is only as sound as the errors it reports. `syncfs` reports a
//! write-back error (since Linux 5.8) that happened on the file system
//! after the descriptor it is called on was opened; so the group opens the
//! staging folder *before* the first file of the batch is written, and any
//! write-back error from then on — ours or another file's — makes the
//! group fall back to an `fdatasync` of each file, which says exactly
//! which file failed. Because `syncfs` also writes out other programs'
//! dirty data, the group is used only while little of it is waiting
//! (`Dirty` + `Writeback` in `/proc/meminfo`); otherwise, on older kernels
//! and elsewhere than Linux, each file is synced on its own.

use std::path::Path;

use super::{FetchError, Fetched, Written};

/// Fewest files synced with one `syncfs`.
const MIN_FILES: usize = 4;

/// Most bytes waiting to be written back on the machine for a `syncfs`,
/// which writes out everything on the file system: it should cost about
/// what it saves.
const MAX_DIRTY: u64 = 32 * 1024 * 1024;

/// A batch of downloads to be made durable together; open it before the
/// first of them is written.
pub struct SyncGroup {
    /// The staging folder, opened before the batch's first write (`None`:
    /// each file is synced on its own).
    dir: Option<std::fs::File>,
}

impl SyncGroup {
    /// A group for `files` files about to be written in `staging` (too
    /// few of them, and each will be synced on its own).
    pub fn open(staging: &Path, files: usize) -> SyncGroup {
        let dir = (files >= MIN_FILES && syncfs_reports_errors())
            .then(|| std::fs::File::open(staging).ok())
            .flatten();
        SyncGroup { dir }
    }

    /// Sets each file's modification time and makes them all durable;
    /// returns each one's result, in order.
    pub fn sync(self, batch: Vec<Written>) -> Vec<Result<Fetched, FetchError>> {
        let together = batch.len() >= MIN_FILES && dirty_bytes().is_some_and(|d| d <= MAX_DIRTY);
        if let (true, Some(dir)) = (together, &self.dir) {
            let timed = batch.iter().all(|w| w.handle.set_modified(w.mtime).is_ok());
            if timed && syncfs(dir).is_ok() {
                return batch.into_iter().map(|w| Ok(w.fetched)).collect();
            }
        }
        batch.into_iter().map(Written::sync).collect()
    }
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

    /// Files written after the group was opened, as a worker writes them.
    fn written(staging: &Path, n: usize) -> Vec<Written> {
        (0..n)
            .map(|i| {
                let path = staging.join(format!("f{i}.part"));
                std::fs::write(&path, [i as u8; 100]).unwrap();
                Written {
                    handle: std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
                    mtime: std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_000_000 + i as u64),
                    fetched: Fetched {
                        file: tempfile::TempPath::try_from_path(&path).unwrap(),
                        from: Vec::new(),
                        fetched: 100,
                        reused: 0,
                        resumed: 0,
                    },
                }
            })
            .collect()
    }

    #[test]
    fn a_group_of_any_size_comes_back_whole_with_its_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        // Below the group's minimum (one by one) and above it (together).
        for n in [1, MIN_FILES - 1, MIN_FILES, 3 * MIN_FILES] {
            let group = SyncGroup::open(dir.path(), n);
            let results = group.sync(written(dir.path(), n));
            assert_eq!(results.len(), n);
            for (i, r) in results.into_iter().enumerate() {
                let f = r.unwrap();
                let m = std::fs::metadata(&f.file).unwrap();
                let want =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
                assert_eq!(m.modified().unwrap(), want, "file {i} of {n}");
                assert_eq!(std::fs::read(&f.file).unwrap(), vec![i as u8; 100]);
            }
        }
    }

    #[test]
    fn dirty_bytes_are_read_where_linux_says() {
        if cfg!(target_os = "linux") {
            assert!(dirty_bytes().is_some());
        }
    }
}
