//! File-system operations on a synced folder, all addressed by [`RelPath`]
//! through one type, [`Root`]: the only place a `RelPath` becomes a path on
//! disk. It resolves a path safely (no symlinked or non-directory
//! ancestors, so a path can only land inside the folder), installs a
//! finished temp file, removes a file and the folders it leaves empty, and
//! walks the folder (never into its state folder).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

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
/// made here, from a [`RelPath`].
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
    state: PathBuf,
}

impl Root {
    /// The folder at `dir`, which must be canonical (no symlink, absolute),
    /// so that a path inside it can be recognised by its prefix.
    pub fn new(dir: PathBuf) -> Root {
        let state = dir.join(STATE_DIR_NAME);
        Root { dir, state }
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state folder inside it (index, journal, staging), never synced.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// `rel` on disk. Reading through it is safe; to write, use
    /// [`Root::prepare_target`] (or a method built on it), which checks the
    /// ancestors.
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

    /// Opens `rel` for reading.
    pub fn open(&self, rel: &RelPath) -> io::Result<File> {
        File::open(self.file(rel))
    }

    /// Every syncable file at or under `dir` (a path inside the folder), as
    /// the walk finds them, skipping the state folder; a name that cannot
    /// be synced is logged and left out. An iterator that owns its state,
    /// so a long walk can be taken a step at a time.
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

    /// Looks at `rel` without following a final symlink.
    pub fn look(&self, rel: &RelPath) -> io::Result<Found> {
        match std::fs::symlink_metadata(self.file(rel)) {
            Ok(m) if m.file_type().is_file() => Ok(Found::File(Stat::of(&m))),
            Ok(m) if m.file_type().is_dir() => Ok(Found::Dir),
            Ok(_) => Ok(Found::Other),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(Found::Missing)
            }
            Err(e) => Err(e),
        }
    }

    /// `rel` on disk, after checking that no existing ancestor below the
    /// root is a symlink or a non-directory, and creating the missing ones.
    pub fn prepare_target(&self, rel: &RelPath) -> io::Result<PathBuf> {
        self.resolve(rel, true)
    }

    /// `rel` on disk, after checking its existing ancestors as
    /// [`Root::prepare_target`] does; with `create`, the missing ones are
    /// made, else one missing is an error (NotFound).
    fn resolve(&self, rel: &RelPath, create: bool) -> io::Result<PathBuf> {
        let mut cur = self.dir.clone();
        let comps: Vec<&str> = rel.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a plain directory", cur.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&cur).or_else(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.file(rel))
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
        let target = self.prepare_target(rel)?;
        // A directory at the target stays: renaming a file onto one fails
        // (EISDIR), empty or not.
        tmp.persist(&target).map_err(|e| match e.error.kind() {
            io::ErrorKind::IsADirectory => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a directory", target.display()),
            ),
            _ => e.error,
        })?;
        Ok(stat)
    }

    /// Gives the file at `rel` the permission bits `mode`, through a handle
    /// opened without following a symlink: a link put there meanwhile is
    /// refused, never followed out of the folder.
    pub fn set_mode(&self, rel: &RelPath, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = self.resolve(rel, false)?;
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(&path)?;
        if !f.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file", path.display()),
            ));
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode & MODE_BITS))
    }

    /// Renames `from` to `to` (creating `to`'s folders). Returns the
    /// stat taken before the rename, for the reasons given at [`Root::place`]: a
    /// change made in between only makes the stat stale, so the file is looked
    /// at again, never missed.
    pub fn rename(&self, from: &RelPath, to: &RelPath) -> io::Result<Stat> {
        let target = self.prepare_target(to)?;
        let source = self.file(from);
        let stat = Stat::of(&std::fs::symlink_metadata(&source)?);
        std::fs::rename(&source, &target)?;
        Ok(stat)
    }

    /// Removes `rel` (if present) and then each parent folder it leaves
    /// empty, up to but not including the root.
    pub fn remove_and_prune(&self, rel: &RelPath) -> io::Result<()> {
        match std::fs::remove_file(self.file(rel)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.prune_parents(rel);
        Ok(())
    }

    /// Removes each parent folder of `rel` that is empty, up to but not
    /// including the root.
    pub fn prune_parents(&self, rel: &RelPath) {
        let root = &self.dir;
        let target = self.file(rel);
        let mut dir = target.parent();
        while let Some(d) = dir {
            if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
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
        let root = Root::new(dir.path().canonicalize().unwrap());
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.dir().join("link")).unwrap();
        let rel = RelPath::new("link/passwd").unwrap();
        assert!(root.prepare_target(&rel).is_err());
        let tmp = tempfile::NamedTempFile::new_in(root.dir())
            .unwrap()
            .into_temp_path();
        assert!(root.place(tmp, &rel).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn install_creates_folders_and_prune_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().canonicalize().unwrap());
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
        let root = Root::new(dir.path().canonicalize().unwrap());
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
        let root = Root::new(dir.path().canonicalize().unwrap());
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
