//! Kept versions: what a remote change replaced or deleted, in
//! `.zync/versions/` (inside the state folder, so never synced).
//!
//! - **Keeping** costs no copy. Before a remote version is renamed over our
//!   file, the file gets a second name in the versions area (a hard link),
//!   so the path is never missing, not even for an instant; a remote delete
//!   moves the file there (a rename). Only [`crate::folder::Folder`], the
//!   owner of every change to the folder, calls these.
//! - **Names**: a kept file is `versions/<folder path>/<name>~<UTC stamp>`,
//!   with a sidecar `…~<stamp>.json` ([`Kept`]: path, time, size, SHA-256,
//!   the peer whose change replaced it, why). A person can find a version
//!   with `ls`; a program reads the sidecar.
//! - **Pruning** ([`Versions::prune`]) removes what is older than the
//!   keeping time, and reports what is kept.
//! - **Restoring** ([`Versions::restore`]) copies a kept version back (the
//!   kept one stays), checked against its SHA-256, as a new local change:
//!   a running peer's watcher sees it and syncs it to everyone like any
//!   edit. It is done by the CLI, beside a running peer or without one.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zync_proto::{FileEntry, Hash, RelPath};

use crate::fsops::Root;

/// The versions area's name inside the state folder.
pub const DIR_NAME: &str = "versions";

/// The default keeping time: 30 days.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest stem of a kept file's name (the stamp follows it), so that a long
/// synced name still fits a file system's 255-byte limit. The sidecar has
/// the full path.
const MAX_STEM: usize = 200;

/// Why a version was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A remote change replaced the content.
    Replaced,
    /// A remote change deleted the file.
    Deleted,
    /// A restore put an older version in its place.
    RestoredOver,
}

/// One kept version, as its sidecar records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kept {
    /// The file's path in the folder.
    pub path: String,
    /// When it was kept, nanoseconds since the Unix epoch.
    pub kept_at_ns: i64,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content (hex).
    pub sha256: String,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The peer whose change replaced or deleted it.
    pub replaced_by: String,
    /// Why it was kept.
    pub reason: Reason,
    /// The kept file.
    #[serde(skip)]
    pub file: PathBuf,
}

impl Kept {
    /// When it was kept.
    pub fn kept_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.kept_at_ns.max(0) as u64)
    }
}

/// What a prune pass did and left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Versions removed.
    pub removed: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Versions kept.
    pub kept: u64,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Why a version could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No kept version matches.
    #[error("{0}")]
    NoVersion(String),
    /// The kept file no longer has the content its sidecar names.
    #[error("the kept version of {path} at {file} is damaged (its SHA-256 is not the recorded one); nothing was restored")]
    Damaged {
        /// The synced path.
        path: String,
        /// The kept file.
        file: String,
    },
    /// A path of the folder cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// What was being written or read.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The versions area of one folder.
#[derive(Clone, Debug)]
pub struct Versions {
    dir: PathBuf,
    keep: Duration,
    /// What this process kept, by content: a download of the same content
    /// (a file renamed on another peer, whose deletion arrived first) is
    /// copied from here instead of fetched. Bounded by [`MAX_RECENT`].
    recent: Arc<Mutex<HashMap<Hash, PathBuf>>>,
}

/// Most kept versions remembered by content.
const MAX_RECENT: usize = 4096;

impl Versions {
    /// The versions area of the folder at `root`, keeping versions for
    /// `keep` (zero: keep nothing).
    pub fn new(root: &Root, keep: Duration) -> Versions {
        Versions {
            dir: root.state().join(DIR_NAME),
            keep,
            recent: Arc::default(),
        }
    }

    /// A version kept by this process with content `sha256`, if its file
    /// is still there. What is read from it must still be verified.
    pub fn find(&self, sha256: &Hash) -> Option<PathBuf> {
        let file = self.recent.lock().ok()?.get(sha256).cloned()?;
        file.is_file().then_some(file)
    }

    /// How long versions are kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Whether versions are kept at all.
    pub fn enabled(&self) -> bool {
        !self.keep.is_zero()
    }

    /// The area on disk.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Gives our file at `rel` (whose content is `old`) a second name in
    /// the versions area, before a remote version replaces it. Returns the
    /// kept file, to [`Versions::forget`] if the replacement fails.
    pub fn keep_linked(
        &self,
        root: &Root,
        old: &FileEntry,
        by: &str,
        reason: Reason,
    ) -> io::Result<PathBuf> {
        self.keep_with(old, by, reason, |target| root.link_out(&old.path, target))
    }

    /// Moves our file at `rel` (whose content is `old`) into the versions
    /// area, for a remote delete.
    pub fn keep_moved(
        &self,
        root: &Root,
        old: &FileEntry,
        by: &str,
        reason: Reason,
    ) -> io::Result<PathBuf> {
        self.keep_with(old, by, reason, |target| root.move_out(&old.path, target))
    }

    fn keep_with(
        &self,
        old: &FileEntry,
        by: &str,
        reason: Reason,
        put: impl Fn(&Path) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let (parent, name) = match old.path.as_str().rsplit_once('/') {
            Some((p, n)) => (self.dir.join(p), n),
            None => (self.dir.clone(), old.path.as_str()),
        };
        std::fs::create_dir_all(&parent)?;
        let mut stem = name;
        while stem.len() > MAX_STEM {
            let mut cut = MAX_STEM;
            while !stem.is_char_boundary(cut) {
                cut -= 1;
            }
            stem = &stem[..cut];
        }
        let mut at = now_ns();
        // Two versions of one path in the same nanosecond: the next one.
        let file = loop {
            let file = parent.join(format!("{stem}~{}", stamp(at)));
            match put(&file) {
                Ok(()) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => at += 1,
                Err(e) => return Err(e),
            }
        };
        let kept = Kept {
            path: old.path.as_str().to_owned(),
            kept_at_ns: at,
            size: old.size,
            sha256: old.sha256.to_hex(),
            mtime_ns: old.mtime_ns,
            replaced_by: by.to_owned(),
            reason,
            file: file.clone(),
        };
        // The sidecar appears whole or not at all; without it the version
        // is not listed, and a prune removes it in time.
        let side = sidecar(&file);
        let mut tmp = tempfile::NamedTempFile::new_in(&parent)?;
        serde_json::to_writer(&mut tmp, &kept).map_err(io::Error::other)?;
        tmp.persist(&side).map_err(|e| e.error)?;
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= MAX_RECENT {
                recent.clear();
            }
            recent.insert(old.sha256, file.clone());
        }
        Ok(file)
    }

    /// Removes a version kept by a change that then failed.
    pub fn forget(&self, file: &Path) {
        let _ = std::fs::remove_file(sidecar(file));
        let _ = std::fs::remove_file(file);
    }

    /// Every kept version of `under` (a file or folder path; everything for
    /// `None`), oldest first.
    pub fn list(&self, under: Option<&str>) -> io::Result<Vec<Kept>> {
        let under = under
            .map(|u| u.trim_matches('/'))
            .filter(|u| !u.is_empty() && *u != ".");
        // A folder: everything below it. A file: its own folder, not deeper.
        let (start, depth) = match under {
            Some(u) => {
                // A synced path, or nothing: `..` or an absolute path would
                // walk outside the versions area.
                let rel = RelPath::new(u).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{u}: {e}"))
                })?;
                let d = self.dir.join(rel.as_str());
                if d.is_dir() {
                    (d, usize::MAX)
                } else {
                    let parent = d.parent().map(Path::to_path_buf);
                    (parent.unwrap_or_else(|| self.dir.clone()), 1)
                }
            }
            None => (self.dir.clone(), usize::MAX),
        };
        let mut out = Vec::new();
        if !start.is_dir() {
            return Ok(out);
        }
        let walk = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .max_depth(depth);
        for item in walk {
            let item = match item {
                Ok(i) => i,
                Err(e)
                    if e.io_error()
                        .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(io::Error::other(e)),
            };
            let p = item.path();
            if !item.file_type().is_file() || p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Some(file) = version_of_sidecar(p) else {
                continue;
            };
            let Ok(text) = std::fs::read(p) else { continue };
            let Ok(mut kept) = serde_json::from_slice::<Kept>(&text) else {
                tracing::warn!(sidecar = %p.display(), "unreadable version record; skipped");
                continue;
            };
            let wanted = match under {
                None => true,
                Some(u) => {
                    kept.path == u
                        || kept
                            .path
                            .strip_prefix(u)
                            .is_some_and(|r| r.starts_with('/'))
                }
            };
            if wanted && file.is_file() {
                kept.file = file;
                out.push(kept);
            }
        }
        out.sort_by(|a, b| (a.kept_at_ns, &a.path).cmp(&(b.kept_at_ns, &b.path)));
        Ok(out)
    }

    /// Removes versions kept longer than the keeping time (and leftovers
    /// without a record), then the folders left empty; reports the rest.
    pub fn prune(&self, now: SystemTime) -> io::Result<Pruned> {
        let mut r = Pruned::default();
        if !self.dir.is_dir() {
            return Ok(r);
        }
        let cutoff = now
            .checked_sub(self.keep)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
        let mut dirs = Vec::new();
        for item in walkdir::WalkDir::new(&self.dir)
            .follow_links(false)
            .into_iter()
            .flatten()
        {
            let p = item.path();
            if item.file_type().is_dir() {
                dirs.push(p.to_path_buf());
                continue;
            }
            let name = item.file_name().to_string_lossy();
            let Some(at) = stamp_of(&name) else {
                // A sidecar, handled with its version; or a stray temp file.
                if version_of_sidecar(p).is_none_or(|v| !v.exists()) && old_enough(&item, self.keep)
                {
                    let _ = std::fs::remove_file(p);
                }
                continue;
            };
            let size = item.metadata().map_or(0, |m| m.len());
            if at < cutoff || self.keep.is_zero() {
                if std::fs::remove_file(p).is_ok() {
                    let _ = std::fs::remove_file(sidecar(p));
                    r.removed += 1;
                    r.removed_bytes += size;
                }
            } else {
                r.kept += 1;
                r.kept_bytes += size;
            }
        }
        // Deepest first, so a folder emptied by its children goes too.
        for d in dirs.iter().rev().filter(|d| **d != self.dir) {
            let _ = std::fs::remove_dir(d);
        }
        Ok(r)
    }

    /// Copies the kept version `k` back: into the folder at its own path as
    /// a new local change (what is there now is kept first, as
    /// [`Reason::RestoredOver`]), or into `elsewhere` (a folder outside,
    /// under the version's path). Checked against its SHA-256 before it
    /// takes the path. Returns where it was written.
    pub fn restore(
        &self,
        root: &Root,
        k: &Kept,
        elsewhere: Option<&Path>,
    ) -> Result<PathBuf, RestoreError> {
        let io_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| RestoreError::Io { path, source }
        };
        let rel = RelPath::new(k.path.clone()).map_err(|e| RestoreError::Io {
            path: k.path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
        let (target, staging) = match elsewhere {
            Some(dir) => {
                let t = dir.join(rel.as_str());
                let parent = t.parent().unwrap_or(dir).to_path_buf();
                std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
                (t, parent)
            }
            None => {
                let t = root.file(&rel);
                root.prepare_parent(&rel).map_err(io_err(&t))?;
                let staging = root.state().join("tmp");
                std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
                (t, staging)
            }
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&staging).map_err(io_err(&staging))?;
        let mut src = std::fs::File::open(&k.file).map_err(io_err(&k.file))?;
        let (got, _) = copy_hashing(&mut src, tmp.as_file_mut()).map_err(io_err(&k.file))?;
        if got != k.sha256 {
            return Err(RestoreError::Damaged {
                path: k.path.clone(),
                file: k.file.display().to_string(),
            });
        }
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        let mtime = filetime::FileTime::from_unix_time(
            k.mtime_ns.div_euclid(1_000_000_000),
            k.mtime_ns.rem_euclid(1_000_000_000) as u32,
        );
        filetime::set_file_mtime(tmp.path(), mtime).map_err(io_err(tmp.path()))?;
        let here = match elsewhere {
            None => root.look(&rel).map_err(io_err(&target))?,
            Some(_) => crate::fsops::Found::Missing,
        };
        if let crate::fsops::Found::File(stat) = here {
            // What is there now is the user's own; keep it before it goes.
            let mut current = root.open(&rel).map_err(io_err(&target))?;
            let (sha256, _) =
                copy_hashing(&mut current, &mut io::sink()).map_err(io_err(&target))?;
            if sha256 == got {
                return Ok(target); // already this content
            }
            let now = FileEntry {
                path: rel.clone(),
                size: stat.size,
                mtime_ns: stat.mtime_ns,
                sha256: zync_proto::Hash::from_hex(&sha256).unwrap_or_default(),
                blocks: Vec::new(),
                version: Default::default(),
                deleted: false,
                modified_by: String::new(),
                lengths: Vec::new(),
                mode: None,
            };
            self.keep_linked(root, &now, "restore", Reason::RestoredOver)
                .map_err(io_err(&target))?;
        }
        match elsewhere {
            None => root
                .place(tmp.into_temp_path(), &rel)
                .map(drop)
                .map_err(io_err(&target))?,
            Some(_) => tmp
                .persist(&target)
                .map(drop)
                .map_err(|e| RestoreError::Io {
                    path: target.display().to_string(),
                    source: e.error,
                })?,
        }
        Ok(target)
    }
}

/// Copies `from` to `to`, streaming; returns the SHA-256 (hex) and length.
fn copy_hashing(from: &mut impl Read, to: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// Which kept version of one path a restore takes: the newest, or with
/// `at`, the content the path had at that time (the first version kept
/// after it).
pub fn pick<'a>(versions: &'a [Kept], path: &str, at: Option<SystemTime>) -> Option<&'a Kept> {
    let of_path = versions.iter().filter(|k| k.path == path);
    match at {
        None => of_path.max_by_key(|k| k.kept_at_ns),
        Some(t) => of_path
            .filter(|k| k.kept_at() > t)
            .min_by_key(|k| k.kept_at_ns),
    }
}

fn sidecar(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

fn version_of_sidecar(side: &Path) -> Option<PathBuf> {
    let s = side.to_str()?.strip_suffix(".json")?;
    let name = Path::new(s).file_name()?.to_str()?;
    stamp_of(name).map(|_| PathBuf::from(s))
}

fn old_enough(item: &walkdir::DirEntry, keep: Duration) -> bool {
    item.metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > keep.max(Duration::from_secs(3600)))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// `20261202T132042.123456789Z`: UTC, sortable, to the nanosecond (the
/// conflict copies' [`crate::fsops::stamp`], with a `T` and the fraction).
fn stamp(ns: i64) -> String {
    format!(
        "{}.{:09}Z",
        crate::fsops::stamp(ns).replace('-', "T"),
        ns.rem_euclid(1_000_000_000)
    )
}

/// The time in a kept file's name (`…~<stamp>`), if it is one.
fn stamp_of(name: &str) -> Option<i64> {
    let s = name.rsplit_once('~')?.1;
    let b = s.as_bytes();
    if b.len() != 26 || b[8] != b'T' || b[15] != b'.' || b[25] != b'Z' {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    let t = humantime::parse_rfc3339(&rfc).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let nanos: i64 = s[16..25].parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is a failure report
mod tests {
    use super::*;

    fn entry(path: &str, content: &[u8]) -> FileEntry {
        FileEntry {
            path: RelPath::new(path.to_owned()).unwrap(),
            size: content.len() as u64,
            mtime_ns: 1_700_000_000_123_456_789,
            sha256: Hash::of(content),
            blocks: Vec::new(),
            version: Default::default(),
            deleted: false,
            modified_by: String::new(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn folder() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path().canonicalize().unwrap()).unwrap();
        std::fs::create_dir_all(root.state()).unwrap();
        (d, root)
    }

    #[test]
    fn stamps_read_back_to_the_nanosecond_and_sort_as_time() {
        for ns in [0, 1_700_000_000_123_456_789, 1_800_000_000_000_000_001] {
            assert_eq!(stamp_of(&format!("a~b.txt~{}", stamp(ns))), Some(ns));
        }
        assert!(stamp(1_700_000_000_000_000_000) < stamp(1_700_000_000_000_000_001));
        for not in [
            "a.txt",
            "a~",
            "a~2026",
            "a~20261202T132042.123456789Zx",
            "a~20261302T132042.123456789Z",
        ] {
            assert_eq!(stamp_of(not), None, "{not}");
        }
    }

    #[test]
    fn a_kept_version_is_listed_restored_and_pruned() {
        let (_d, root) = folder();
        let v = Versions::new(&root, Duration::from_secs(3600));
        std::fs::create_dir_all(root.dir().join("docs")).unwrap();
        let file = root.dir().join("docs/a~weird name.txt");
        std::fs::write(&file, b"first").unwrap();
        let old = entry("docs/a~weird name.txt", b"first");
        let kept = v
            .keep_linked(&root, &old, "peer9", Reason::Replaced)
            .unwrap();
        // The replacement renames new content over the path; the kept name
        // still has the old.
        std::fs::write(root.dir().join("new"), b"second").unwrap();
        std::fs::rename(root.dir().join("new"), &file).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"first");

        let all = v.list(None).unwrap();
        assert_eq!(all.len(), 1);
        let k = &all[0];
        assert_eq!(
            (k.path.as_str(), k.size, k.replaced_by.as_str(), k.reason),
            ("docs/a~weird name.txt", 5, "peer9", Reason::Replaced)
        );
        assert_eq!(v.list(Some("docs")).unwrap().len(), 1);
        assert_eq!(v.list(Some("docs/a~weird name.txt")).unwrap().len(), 1);
        assert_eq!(
            v.list(Some("doc")).unwrap().len(),
            0,
            "a prefix is a folder, not a string"
        );

        // In place: what is there now is kept first.
        v.restore(&root, k, None).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"first");
        let all = v.list(None).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all
            .iter()
            .any(|k| k.reason == Reason::RestoredOver && k.sha256 == Hash::of(b"second").to_hex()));
        // Elsewhere: the folder is not touched.
        let out = tempfile::tempdir().unwrap();
        let to = v
            .restore(
                &root,
                pick(&all, "docs/a~weird name.txt", None).unwrap(),
                Some(out.path()),
            )
            .unwrap();
        assert_eq!(std::fs::read(to).unwrap(), b"second");

        // A damaged kept file is refused.
        std::fs::write(&all[0].file, b"bit rot").unwrap();
        assert!(matches!(
            v.restore(&root, &all[0], None),
            Err(RestoreError::Damaged { .. })
        ));

        let later = SystemTime::now() + Duration::from_secs(7200);
        let p = v.prune(SystemTime::now()).unwrap();
        assert_eq!((p.removed, p.kept), (0, 2));
        let p = v.prune(later).unwrap();
        assert_eq!((p.removed, p.kept), (2, 0));
        assert!(v.list(None).unwrap().is_empty());
        assert!(!v.dir().join("docs").exists(), "emptied folders go too");
    }

    #[test]
    fn a_delete_moves_the_file_and_at_picks_the_content_of_that_time() {
        let (_d, root) = folder();
        let v = Versions::new(&root, DEFAULT_KEEP);
        let p = root.dir().join("x.bin");
        let mut times = Vec::new();
        for content in [&b"one"[..], b"two", b"three"] {
            std::fs::write(&p, content).unwrap();
            times.push(SystemTime::now());
            std::thread::sleep(Duration::from_millis(5));
            v.keep_moved(&root, &entry("x.bin", content), "p2", Reason::Deleted)
                .unwrap();
            assert!(!p.exists());
        }
        let all = v.list(None).unwrap();
        let content = |k: Option<&Kept>| std::fs::read(&k.unwrap().file).unwrap();
        assert_eq!(content(pick(&all, "x.bin", None)), b"three");
        assert_eq!(content(pick(&all, "x.bin", Some(times[1]))), b"two");
        assert_eq!(content(pick(&all, "x.bin", Some(UNIX_EPOCH))), b"one");
        assert!(pick(&all, "x.bin", Some(SystemTime::now())).is_none());
        assert!(pick(&all, "y.bin", None).is_none());
    }

    #[test]
    fn a_long_name_still_fits() {
        let (_d, root) = folder();
        let v = Versions::new(&root, DEFAULT_KEEP);
        let name = "é".repeat(120); // 240 bytes
        std::fs::write(root.dir().join(&name), b"long").unwrap();
        v.keep_moved(&root, &entry(&name, b"long"), "p", Reason::Deleted)
            .unwrap();
        assert_eq!(v.list(None).unwrap()[0].path, name);
    }
}
