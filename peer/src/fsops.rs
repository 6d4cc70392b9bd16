//! File-system operations on a synced folder, all addressed by [`RelPath`]:
//! resolving a path safely (no symlinked or non-directory ancestors, so a
//! path can only land inside the folder), installing a verified temp file,
//! removing a file and the folders it leaves empty, and naming conflicts.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use zync_proto::RelPath;

use crate::hashing::Stat;

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

/// Looks at `root/rel` without following a final symlink.
pub fn look(root: &Path, rel: &RelPath) -> io::Result<Found> {
    match std::fs::symlink_metadata(root.join(rel.as_str())) {
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

/// `root/rel`, after checking that no existing ancestor below `root` is a
/// symlink or a non-directory, and creating the missing ones.
pub fn prepare_target(root: &Path, rel: &RelPath) -> io::Result<PathBuf> {
    let mut cur = root.to_path_buf();
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
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
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
    Ok(root.join(rel.as_str()))
}

/// Moves a finished temp file to `root/rel` atomically (same file system):
/// a verified download (only through `transfer::Fetched::install`), or an
/// upload, which is a local write like any user's.
///
/// Returns the stat of what was renamed into place, taken *before* the
/// rename (a rename keeps size, mtime and inode). Taken after, it could
/// fail (the folder renamed away that instant) although the file was
/// installed, or take in a user's write made right after the rename and so
/// pass that write off as ours.
pub fn place(tmp: tempfile::TempPath, root: &Path, rel: &RelPath) -> io::Result<Stat> {
    let target = prepare_target(root, rel)?;
    if let Ok(m) = std::fs::symlink_metadata(&target) {
        if m.file_type().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a directory", target.display()),
            ));
        }
    }
    let stat = Stat::of(&std::fs::symlink_metadata(&tmp)?);
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(stat)
}

/// Renames `root/from` to `root/to` (creating `to`'s folders). Returns the
/// stat taken before the rename, for the reasons given at [`place`]: a
/// change made in between only makes the stat stale, so the file is looked
/// at again, never missed.
pub fn rename(root: &Path, from: &RelPath, to: &RelPath) -> io::Result<Stat> {
    let target = prepare_target(root, to)?;
    let source = root.join(from.as_str());
    let stat = Stat::of(&std::fs::symlink_metadata(&source)?);
    std::fs::rename(&source, &target)?;
    Ok(stat)
}

/// Removes `root/rel` (if present) and then each parent folder it leaves
/// empty, up to but not including `root`.
pub fn remove_and_prune(root: &Path, rel: &RelPath) -> io::Result<()> {
    let target = root.join(rel.as_str());
    match std::fs::remove_file(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut dir = target.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
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
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let rel = RelPath::new("link/passwd").unwrap();
        assert!(prepare_target(root.path(), &rel).is_err());
        let tmp = tempfile::NamedTempFile::new_in(root.path())
            .unwrap()
            .into_temp_path();
        assert!(place(tmp, root.path(), &rel).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn install_creates_folders_and_prune_removes_them() {
        let root = tempfile::tempdir().unwrap();
        let rel = RelPath::new("a/b/c.txt").unwrap();
        let tmp = tempfile::NamedTempFile::new_in(root.path()).unwrap();
        std::fs::write(tmp.path(), b"hi").unwrap();
        let st = place(tmp.into_temp_path(), root.path(), &rel).unwrap();
        assert_eq!(st.size, 2);
        assert_eq!(std::fs::read(root.path().join("a/b/c.txt")).unwrap(), b"hi");
        std::fs::write(root.path().join("a/keep"), b"").unwrap();
        remove_and_prune(root.path(), &rel).unwrap();
        assert!(!root.path().join("a/b").exists());
        assert!(root.path().join("a/keep").exists());
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
        let root = tempfile::tempdir().unwrap();
        let tmp = tempfile::NamedTempFile::new_in(root.path()).unwrap();
        std::fs::write(tmp.path(), b"content").unwrap();
        let before = Stat::of(&std::fs::metadata(tmp.path()).unwrap());
        let rel = RelPath::new("d/f").unwrap();
        let st = place(tmp.into_temp_path(), root.path(), &rel).unwrap();
        assert_eq!(st, before);
        assert_eq!(
            Stat::of(&std::fs::metadata(root.path().join("d/f")).unwrap()),
            st
        );
        // The same for a rename: the stat of what was moved.
        let to = RelPath::new("e/g").unwrap();
        assert_eq!(rename(root.path(), &rel, &to).unwrap(), st);
    }
}
