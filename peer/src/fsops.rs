//! File-system operations on a synced folder, all addressed by [`RelPath`]
//! through one type, [`Root`]: the only place a `RelPath` reaches the disk.
//! It resolves every path from the folder's descriptor without following
//! any symlink (`openat2`), so a path can only land inside the folder; it
//! reads, stats, installs a
//! finished temp file, removes a file and the folders it leaves empty, and
//! walks the folder (never into its state folder).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use tracing::warn;
use zync_proto::{PathError, RelPath, MODE_BITS, STATE_DIR_NAME};

use crate::hashing::Stat;

/// The permission bits a file gets here for a version whose origin gave it
/// `mode`: the origin's bits, or those of any new file when unknown
/// (`0o666`), masked by this process's umask.
pub fn mode_for(mode: Option<u32>) -> u32 {
    mode.unwrap_or(0o666) & MODE_BITS & !umask()
}

/// This process's umask, read once from `/proc/self/status` (umask(2)
/// reads it only by setting it, which races every thread creating a file
/// meanwhile); `0o022` where that cannot be read.
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find_map(|l| l.strip_prefix("Umask:"))?;
                u32::from_str_radix(line.trim(), 8).ok()
            })
            .unwrap_or(0o022)
            & MODE_BITS
    })
}

/// Makes `dir` (and its missing parents) and gives it mode 0700, whatever
/// it had: a folder of this user's alone, such as the state folder, whose
/// index, journal, staged downloads and kept versions would tell other
/// local users every path, size and hash, and show private files' content.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Options that create a file 0600 if it is not there: a file of the state
/// folder. The caller adds how it writes (append, truncate, read too).
pub fn private_file() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).mode(0o600);
    o
}

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Missing,
    /// A regular file.
    File(Stat),
    /// A directory.
    Dir,
    /// A symlink or special file: never synced.
    Other,
}

/// A synced folder's root (canonical): every path of the folder on disk is
/// reached here, from a [`RelPath`], and only here.
///
/// Every access resolves the path from a descriptor of the folder opened at
/// start, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a symlink
/// anywhere on the way (a symlinked folder inside the synced one, or one
/// swapped in while the peer works) is never followed, so a path from the
/// network or the index can only name something inside the folder. Changes
/// (rename, unlink, link) are made relative to the parent folder's
/// descriptor, opened the same way.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
    state: PathBuf,
    fd: Arc<OwnedFd>,
}

/// How every path below the root is resolved: inside it, no link followed.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    /// The folder at `dir`, which must be canonical (no symlink, absolute),
    /// so that a path inside it can be recognised by its prefix. Opens it.
    pub fn new(dir: PathBuf) -> io::Result<Root> {
        let fd = rustix::fs::open(
            &dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e.into(), &dir))?;
        let state = dir.join(STATE_DIR_NAME);
        Ok(Root {
            dir,
            state,
            fd: Arc::new(fd),
        })
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state folder inside it (index, journal, staging), never synced.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// `rel` on disk, for messages and tests. Never open it: a symlinked
    /// folder on the way would be followed; use the methods of `Root`.
    pub fn file(&self, rel: &RelPath) -> PathBuf {
        self.dir.join(rel.as_str())
    }

    /// The synced path of `p`, a path inside the folder.
    pub fn rel(&self, p: &Path) -> Result<RelPath, PathError> {
        RelPath::from_local(&self.dir, p)
    }

    /// Whether `p` is the state folder or inside it.
    pub fn is_state(&self, p: &Path) -> bool {
        p.starts_with(&self.state)
    }

    /// Opens `path` (relative, `.` for the folder) below the root with
    /// `flags`, following no link.
    fn beneath(&self, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &*self.fd,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                BENEATH,
            ) {
                // The kernel could not rule out an escape because of a
                // concurrent rename: try again, a few times.
                Err(Errno::AGAIN) if tries < 8 => tries += 1,
                r => return r,
            }
        }
    }

    /// Opens `rel` for reading: a regular file inside the folder, reached
    /// without following any link.
    pub fn open(&self, rel: &RelPath) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let f = File::from(
            self.beneath(rel.as_str(), flags)
                .map_err(|e| self.error(e, rel))?,
        );
        if !f.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", self.file(rel).display()),
            ));
        }
        Ok(f)
    }

    /// An error of a path below the root, saying which, and what a link on
    /// the way means.
    fn error(&self, e: Errno, rel: &RelPath) -> io::Error {
        let path = self.file(rel);
        match e {
            Errno::LOOP | Errno::XDEV => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: a symlink on the way (never followed)", path.display()),
            ),
            Errno::NOTDIR => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain directory on the way", path.display()),
            ),
            e => with_path(e.into(), &path),
        }
    }

    /// Every syncable file at or under `dir` (a path inside the folder), as
    /// the walk finds them, skipping the state folder and never going
    /// through a symlink; a name that cannot be synced is logged and left
    /// out. An iterator that owns its state, so a long walk can be taken a
    /// step at a time.
    pub fn files(&self, dir: &Path) -> Box<dyn Iterator<Item = RelPath> + Send> {
        let root = self.clone();
        let walk = walkdir::WalkDir::new(dir).follow_links(false).into_iter();
        let files = walk
            .filter_entry({
                let root = root.clone();
                move |e| !root.is_state(e.path())
            })
            .filter_map(move |item| match item {
                Ok(e) if e.file_type().is_file() => match root.rel(e.path()) {
                    Ok(p) => Some(p),
                    Err(err) => {
                        warn!(path = %e.path().display(), error = %err, "not synced");
                        None
                    }
                },
                Ok(_) => None,
                Err(e) => {
                    warn!(error = %e, "cannot read part of the folder");
                    None
                }
            });
        Box::new(files)
    }

    /// Looks at `rel` without following any symlink: one on the way, or
    /// at the path itself, is [`Found::Other`] (never synced, never
    /// followed).
    pub fn look(&self, rel: &RelPath) -> io::Result<Found> {
        let fd = match self.beneath(rel.as_str(), OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Found::Missing),
            Err(Errno::LOOP | Errno::XDEV) => return Ok(Found::Other),
            Err(e) => return Err(self.error(e, rel)),
        };
        let m = File::from(fd).metadata()?;
        Ok(if m.file_type().is_file() {
            Found::File(Stat::of(&m))
        } else if m.file_type().is_dir() {
            Found::Dir
        } else {
            Found::Other
        })
    }

    /// The folder holding `rel`, opened below the root (created, with its
    /// missing ancestors, if `create`), and `rel`'s name in it. An
    /// ancestor that is a symlink or not a directory is an error.
    fn parent<'a>(&self, rel: &'a RelPath, create: bool) -> io::Result<(OwnedFd, &'a str)> {
        let s = rel.as_str();
        let (dir, name) = s.rsplit_once('/').unwrap_or((".", s));
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        match self.beneath(dir, flags) {
            Ok(fd) => return Ok((fd, name)),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(self.error(e, rel)),
        }
        // Made one folder at a time, each opened from the one before.
        let mut cur = self.beneath(".", flags).map_err(|e| self.error(e, rel))?;
        for c in dir.split('/') {
            match rustix::fs::mkdirat(&cur, c, Mode::from_bits_truncate(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(self.error(e, rel)),
            }
            cur = rustix::fs::openat2(&cur, c, flags | OFlags::CLOEXEC, Mode::empty(), BENEATH)
                .map_err(|e| self.error(e, rel))?;
        }
        Ok((cur, name))
    }

    /// Creates the missing folders on the way to `rel`, checking that no
    /// existing one is a symlink or not a directory.
    pub fn prepare_parent(&self, rel: &RelPath) -> io::Result<()> {
        self.parent(rel, true).map(drop)
    }

    /// Moves a finished temp file to `rel` atomically (same file system):
    /// a verified download (only through `transfer::Fetched::install`), or an
    /// upload, which is a local write like any user's.
    ///
    /// Returns the stat of what was renamed into place, taken *before* the
    /// rename (a rename keeps size, mtime and inode). Taken after, it could
    /// fail (the folder renamed away that instant) although the file was
    /// installed, or take in a user's write made right after the rename and so
    /// pass that write off as ours.
    pub fn place(&self, tmp: tempfile::TempPath, rel: &RelPath) -> io::Result<Stat> {
        let stat = Stat::of(&std::fs::symlink_metadata(&tmp)?);
        self.place_as(tmp, rel, stat)
    }

    /// [`Root::place`] for a temp file whose `stat` was taken through its
    /// descriptor once it was final (nothing writes a staged download after
    /// that): no lookup of it by name.
    pub fn place_as(&self, tmp: tempfile::TempPath, rel: &RelPath, stat: Stat) -> io::Result<Stat> {
        let (parent, name) = self.parent(rel, true)?;
        // A directory at the target stays: renaming a file onto one fails
        // (EISDIR), empty or not.
        match rustix::fs::renameat(CWD, &*tmp, &parent, name) {
            Ok(()) => {}
            Err(Errno::ISDIR) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a directory", self.file(rel).display()),
                ))
            }
            Err(e) => return Err(self.error(e, rel)),
        }
        // Renamed: the temp path is gone and must not be removed.
        let _ = tmp.keep();
        Ok(stat)
    }

    /// Gives the file at `rel` the permission bits `mode`, through a handle
    /// opened without following any symlink. A file with other hard links
    /// is left alone (returns false): one of them may be outside the
    /// folder, and the cluster must not change a file there.
    pub fn set_mode(&self, rel: &RelPath, mode: u32) -> io::Result<bool> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let f = self.open(rel)?;
        if f.metadata()?.nlink() > 1 {
            return Ok(false);
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode & MODE_BITS))?;
        Ok(true)
    }

    /// The stat of the regular file at `rel` (opened as [`Root::look`]
    /// does), or an error saying what is there instead.
    fn file_stat(&self, parent: &OwnedFd, name: &str, rel: &RelPath) -> io::Result<Stat> {
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.error(e, rel))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", self.file(rel).display()),
            ));
        }
        Ok(Stat {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ino: st.st_ino,
            mode: Some(st.st_mode & MODE_BITS),
        })
    }

    /// Renames the file `from` to `to` (creating `to`'s folders). Returns
    /// the stat taken before the rename, for the reasons given at
    /// [`Root::place`]: a change made in between only makes the stat stale,
    /// so the file is looked at again, never missed.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> io::Result<Stat> {
        let (src, src_name) = self.parent(from, false)?;
        let stat = self.file_stat(&src, src_name, from)?;
        let (dst, dst_name) = self.parent(to, true)?;
        rustix::fs::renameat(&src, src_name, &dst, dst_name).map_err(|e| self.error(e, from))?;
        Ok(stat)
    }

    /// Moves the file at `rel` out of the folder, to `target` (an absolute
    /// path in the state folder).
    pub fn move_out(&self, rel: &RelPath, target: &Path) -> io::Result<()> {
        let (src, name) = self.parent(rel, false)?;
        self.file_stat(&src, name, rel)?;
        rustix::fs::renameat(&src, name, CWD, target).map_err(|e| match e {
            Errno::EXIST => io::ErrorKind::AlreadyExists.into(),
            e => self.error(e, rel),
        })
    }

    /// Gives the file at `rel` a second name `target` (an absolute path in
    /// the state folder), or copies it there where hard links are refused.
    pub fn link_out(&self, rel: &RelPath, target: &Path) -> io::Result<()> {
        let (src, name) = self.parent(rel, false)?;
        self.file_stat(&src, name, rel)?;
        match rustix::fs::linkat(&src, name, CWD, target, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => Err(io::ErrorKind::AlreadyExists.into()),
            Err(e) => {
                // A file system without hard links: a copy is the fallback.
                tracing::debug!(error = %e, "hard link refused; copying the old version");
                let mut from = self.open(rel)?;
                let mut to = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(target)?;
                io::copy(&mut from, &mut to).map(drop)
            }
        }
    }

    /// Removes the file `rel` (if present; anything else there is left
    /// alone, an error) and then each parent folder it leaves empty, up to
    /// but not including the root.
    pub fn remove_and_prune(&self, rel: &RelPath) -> io::Result<()> {
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        match self.parent(rel, false) {
            Ok((parent, name)) => match self.file_stat(&parent, name, rel) {
                Ok(_) => match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(self.error(e, rel)),
                },
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            },
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
        self.prune_parents(rel);
        Ok(())
    }

    /// Removes each parent folder of `rel` that is empty, up to but not
    /// including the root.
    pub fn prune_parents(&self, rel: &RelPath) {
        let mut s = rel.as_str();
        while let Some((dir, _)) = s.rsplit_once('/') {
            let Ok(d) = RelPath::new(dir) else { return };
            let Ok((parent, name)) = self.parent(&d, false) else {
                return;
            };
            if rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR).is_err() {
                return;
            }
            s = dir;
        }
    }
}

/// `e`, saying which path it is about.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `YYYYMMDD-HHMMSS` (UTC) of a modification time, for conflict names.
pub fn stamp(mtime_ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64);
    let digits: String = humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!(
        "{}-{}",
        &digits[..8.min(digits.len())],
        &digits[8.min(digits.len())..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_write_through_a_symlinked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.dir().join("link")).unwrap();
        let rel = RelPath::new("link/passwd").unwrap();
        assert!(root.prepare_parent(&rel).is_err());
        let tmp = tempfile::NamedTempFile::new_in(root.dir())
            .unwrap()
            .into_temp_path();
        assert!(root.place(tmp, &rel).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn nothing_is_read_moved_or_removed_through_a_symlinked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.dir().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.dir().join("f")).unwrap();
        for p in ["link/secret", "f"] {
            let rel = RelPath::new(p).unwrap();
            assert_eq!(root.look(&rel).unwrap(), Found::Other, "{p}");
            assert!(root.open(&rel).is_err(), "{p}");
            assert!(crate::hashing::hash_in(&root, &rel).is_err(), "{p}");
            let to = root.state().join("moved");
            std::fs::create_dir_all(root.state()).unwrap();
            assert!(root.move_out(&rel, &to).is_err(), "{p}");
            assert!(root.link_out(&rel, &to).is_err(), "{p}");
            assert!(root.rename(&rel, &RelPath::new("g").unwrap()).is_err());
            assert!(root.set_mode(&rel, 0o777).is_err(), "{p}");
            assert!(root.remove_and_prune(&rel).is_err(), "{p}");
        }
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
        assert!(root.dir().join("f").is_symlink());
    }

    #[test]
    fn install_creates_folders_and_prune_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        let rel = RelPath::new("a/b/c.txt").unwrap();
        let tmp = tempfile::NamedTempFile::new_in(root.dir()).unwrap();
        std::fs::write(tmp.path(), b"hi").unwrap();
        let st = root.place(tmp.into_temp_path(), &rel).unwrap();
        assert_eq!(st.size, 2);
        assert_eq!(std::fs::read(root.dir().join("a/b/c.txt")).unwrap(), b"hi");
        std::fs::write(root.dir().join("a/keep"), b"").unwrap();
        root.remove_and_prune(&rel).unwrap();
        assert!(!root.dir().join("a/b").exists());
        assert!(root.dir().join("a/keep").exists());
    }

    #[test]
    fn a_directory_at_the_target_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        for inside in [false, true] {
            let rel = RelPath::new(format!("d{inside}")).unwrap();
            std::fs::create_dir(root.file(&rel)).unwrap();
            if inside {
                std::fs::write(root.file(&rel).join("keep"), b"k").unwrap();
            }
            let tmp = tempfile::NamedTempFile::new_in(root.dir()).unwrap();
            std::fs::write(tmp.path(), b"file").unwrap();
            let err = root.place(tmp.into_temp_path(), &rel).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(root.file(&rel).is_dir());
            assert_eq!(
                std::fs::read_dir(root.file(&rel)).unwrap().count(),
                inside as usize
            );
        }
    }

    #[test]
    fn stamp_format() {
        assert_eq!(stamp(0), "19700101-000000");
        assert_eq!(stamp(1_700_000_000_000_000_000), "20231114-221320");
    }

    #[test]
    fn install_reports_the_stat_of_the_file_it_renamed_into_place() {
        // Found by the model test: the stat used to be taken after the
        // rename, and failed when the user renamed the folder away at that
        // instant, so an installed file went unrecorded and its deletion
        // was later reported against the version before it. The stat of
        // the temp file, taken first, is what the rename put in place.
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap()).unwrap();
        let tmp = tempfile::NamedTempFile::new_in(root.dir()).unwrap();
        std::fs::write(tmp.path(), b"content").unwrap();
        let before = Stat::of(&std::fs::metadata(tmp.path()).unwrap());
        let rel = RelPath::new("d/f").unwrap();
        let st = root.place(tmp.into_temp_path(), &rel).unwrap();
        assert_eq!(st, before);
        assert_eq!(
            Stat::of(&std::fs::metadata(root.dir().join("d/f")).unwrap()),
            st
        );
        // The same for a rename: the stat of what was moved.
        let to = RelPath::new("e/g").unwrap();
        assert_eq!(root.rename(&rel, &to).unwrap(), st);
    }
}
