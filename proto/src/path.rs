use std::fmt;
use std::path::{Component, Path};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::STATE_DIR_NAME;

/// Longest valid path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest valid path component, in bytes (the common file-system limit).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A file's path relative to a synced folder, as it travels on the wire.
///
/// Valid means: UTF-8, `/`-separated, not empty, at most [`MAX_PATH_LEN`]
/// bytes, no leading `/`, no empty, `.` or `..` component, no NUL or
/// backslash, no component longer than [`MAX_COMPONENT_LEN`], and not inside
/// the reserved state folder ([`STATE_DIR_NAME`]). Joined onto a folder, a
/// `RelPath` can only name something inside that folder.
///
/// The only constructor is [`RelPath::new`] (deserialization goes through it
/// too), so holding a `RelPath` is proof it was validated. The text is
/// shared: a clone costs a reference count, not a copy, so the maps that
/// key the same path several ways (a tracker's index, a peer's queues)
/// hold it once.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(Arc<str>);

/// Why a path was refused. The message names the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("invalid path: empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("invalid path: longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The path starts with `/`.
    #[error("invalid path: absolute")]
    Absolute,
    /// A component is empty (`a//b`, trailing `/`).
    #[error("invalid path: empty component")]
    EmptyComponent,
    /// A component is `.` or `..`.
    #[error("invalid path: `.` or `..` component")]
    DotComponent,
    /// A component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("invalid path: component longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    /// The path contains a NUL byte or a backslash.
    #[error("invalid path: contains NUL or backslash")]
    ForbiddenChar,
    /// The path is inside the reserved state folder.
    #[error("invalid path: inside the reserved {STATE_DIR_NAME} folder")]
    Reserved,
    /// A local path that is not valid UTF-8 or not below the folder.
    #[error("invalid path: not UTF-8 or not inside the folder")]
    NotRepresentable,
}

impl RelPath {
    /// Validates `s` (see the type's docs for the rules).
    pub fn new(s: impl Into<String>) -> Result<RelPath, PathError> {
        let s = s.into();
        validate(&s)?;
        Ok(RelPath(s.into()))
    }

    /// The path of `abs` relative to `root`, if `abs` is a valid file path below it.
    /// Pure: looks only at the two paths, never at the file system.
    pub fn from_local(root: &Path, abs: &Path) -> Result<RelPath, PathError> {
        let rel = abs
            .strip_prefix(root)
            .map_err(|_| PathError::NotRepresentable)?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_str().ok_or(PathError::NotRepresentable)?),
                _ => return Err(PathError::NotRepresentable),
            }
        }
        RelPath::new(parts.join("/"))
    }

    /// The path as a `str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True if `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &RelPath) -> bool {
        self.0 == dir.0
            || (self.0.len() > dir.0.len()
                && self.0.starts_with(&*dir.0)
                && self.0.as_bytes()[dir.0.len()] == b'/')
    }

    /// If this is a conflict copy ([`RelPath::conflict_copy`]'s name), the
    /// path it is a copy of and the peer that made the losing version (as
    /// the name spells it). The name of a copy whose original name was cut
    /// to fit gives that cut name.
    pub fn conflict_original(&self) -> Option<(RelPath, String)> {
        let (dir, file) = match self.0.rsplit_once('/') {
            Some((d, f)) => (Some(d), f),
            None => (None, &*self.0),
        };
        let at = file.rfind(".conflict-")?;
        let (stem, tagged) = (&file[..at], &file[at + ".conflict-".len()..]);
        // Neither the peer nor the stamp holds a dot: one starts the extension.
        let (tag, ext) = match tagged.split_once('.') {
            Some((t, e)) => (t, Some(e)),
            None => (tagged, None),
        };
        // PEER-YYYYMMDD-HHMMSS, then -N when that name was taken.
        let parts: Vec<&str> = tag.split('-').collect();
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let stamp_at = (1..parts.len().saturating_sub(1))
            .rev()
            .find(|&i| digits(parts[i], 8) && digits(parts[i + 1], 6))?;
        let rest = &parts[stamp_at + 2..];
        if rest.len() > 1
            || rest
                .iter()
                .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let peer = parts[..stamp_at].join("-");
        if stem.is_empty() || peer.is_empty() {
            return None;
        }
        let name = match ext {
            Some(e) => format!("{stem}.{e}"),
            None => stem.to_owned(),
        };
        let original = match dir {
            Some(d) => format!("{d}/{name}"),
            None => name,
        };
        Some((RelPath::new(original).ok()?, peer))
    }

    /// Name of the conflict copy that keeps a losing version of this file:
    /// `NAME.conflict-<peer>-<stamp>.EXT` in the same folder. `peer` and `stamp`
    /// are sanitized and the name trimmed to fit a component; fails only when
    /// the whole path would exceed [`MAX_PATH_LEN`].
    pub fn conflict_copy(&self, peer: &str, stamp: &str) -> Result<RelPath, PathError> {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect()
        };
        let (dir, file) = match self.0.rsplit_once('/') {
            Some((d, f)) => (Some(d), f),
            None => (None, &*self.0),
        };
        let tag = format!(".conflict-{}-{}", clean(peer), clean(stamp));
        let budget = MAX_COMPONENT_LEN.saturating_sub(tag.len());
        // A leading dot is part of the name (".bashrc"), not an extension; an
        // extension too long to keep beside the tag stays in the stem.
        let (stem, ext) = match file.rfind('.') {
            Some(i) if i > 0 && file.len() - i <= budget / 2 => (&file[..i], Some(&file[i + 1..])),
            _ => (file, None),
        };
        let room = budget - ext.map_or(0, |e| e.len() + 1);
        let mut cut = stem.len().min(room);
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut name = format!("{}{}", &stem[..cut], tag);
        if let Some(e) = ext {
            name.push('.');
            name.push_str(e);
        }
        match dir {
            Some(d) => RelPath::new(format!("{d}/{name}")),
            None => RelPath::new(name),
        }
    }
}

fn validate(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if s.contains(['\0', '\\']) {
        return Err(PathError::ForbiddenChar);
    }
    if s.starts_with('/') {
        return Err(PathError::Absolute);
    }
    for (i, c) in s.split('/').enumerate() {
        match c {
            "" => return Err(PathError::EmptyComponent),
            "." | ".." => return Err(PathError::DotComponent),
            _ if c.len() > MAX_COMPONENT_LEN => return Err(PathError::ComponentTooLong),
            _ if i == 0 && c == STATE_DIR_NAME => return Err(PathError::Reserved),
            _ => {}
        }
    }
    Ok(())
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    /// Used by deserialization: a refusal is also noted for [`crate::decode`],
    /// since serde carries a custom error only as text.
    fn try_from(s: String) -> Result<RelPath, PathError> {
        RelPath::new(s).inspect_err(|e| REFUSED.with(|r| r.set(Some(e.clone()))))
    }
}

thread_local! {
    /// The path refusal of the message being decoded on this thread, if any.
    static REFUSED: std::cell::Cell<Option<PathError>> = const { std::cell::Cell::new(None) };
}

/// Takes the path refusal noted on this thread since the last call.
pub(crate) fn take_refusal() -> Option<PathError> {
    REFUSED.with(|r| r.take())
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0.to_string()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "a/b/c.txt",
            "with space/ünïcødé ✓.md",
            ".hidden",
            "..ok",
            "a/.zync",
            "x...y",
        ] {
            assert!(RelPath::new(p).is_ok(), "{p} should be valid");
        }
    }

    #[test]
    fn rejects_each_rule() {
        let long = "a".repeat(MAX_PATH_LEN + 1);
        let long_comp = "b".repeat(MAX_COMPONENT_LEN + 1);
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("../../etc/passwd", PathError::DotComponent),
            ("a/../../b", PathError::DotComponent),
            ("./a", PathError::DotComponent),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a\\..\\b", PathError::ForbiddenChar),
            ("a\0b", PathError::ForbiddenChar),
            (".zync/index", PathError::Reserved),
            (".zync", PathError::Reserved),
            (&long, PathError::TooLong),
            (&long_comp, PathError::ComponentTooLong),
        ];
        for (p, want) in cases {
            assert_eq!(RelPath::new(*p).err().as_ref(), Some(want), "{p:?}");
        }
    }

    #[test]
    fn from_local_strips_root() {
        let root = Path::new("/data/folder");
        let p = RelPath::from_local(root, Path::new("/data/folder/a/b.txt"));
        assert_eq!(p.map(|p| p.to_string()).ok(), Some("a/b.txt".into()));
        assert!(RelPath::from_local(root, Path::new("/data/other/x")).is_err());
        assert!(RelPath::from_local(root, root).is_err());
    }

    #[test]
    fn is_within_respects_component_boundaries() {
        let d = RelPath::new("a/b").unwrap();
        assert!(RelPath::new("a/b").unwrap().is_within(&d));
        assert!(RelPath::new("a/b/c").unwrap().is_within(&d));
        assert!(!RelPath::new("a/bc").unwrap().is_within(&d));
        assert!(!RelPath::new("a").unwrap().is_within(&d));
    }

    #[test]
    fn a_conflict_copy_names_its_original_and_nothing_else_does() {
        for (original, peer, stamp) in [
            ("dir/report.txt", "peer 2", "20261122-050102"),
            ("Makefile", "p-1", "20261122-050102-3"),
            (".bashrc", "p1", "20261122-050102"),
            ("a.tar.gz", "node_7", "20261122-050102"),
            ("x/y/é", "p", "19700101-000000"),
        ] {
            let p = RelPath::new(original).unwrap();
            let copy = p.conflict_copy(peer, stamp).unwrap();
            let (back, by) = copy.conflict_original().unwrap();
            assert_eq!(back, p, "{copy}");
            assert_eq!(by, peer.replace(' ', "_"));
        }
        for plain in [
            "report.txt",
            "notes.conflict-about-lunch.txt",
            "a.conflict-p-2026112-050102",
            "a.conflict-20261122-050102",
            ".conflict-p-20261122-050102",
            "a.conflict-p-20261122-050102-x",
        ] {
            assert_eq!(
                RelPath::new(plain).unwrap().conflict_original(),
                None,
                "{plain}"
            );
        }
    }

    #[test]
    fn conflict_copy_names() {
        let c = |p: &str| {
            RelPath::new(p)
                .unwrap()
                .conflict_copy("peer 2", "20261122-050102")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            c("dir/report.txt"),
            "dir/report.conflict-peer_2-20261122-050102.txt"
        );
        assert_eq!(c("Makefile"), "Makefile.conflict-peer_2-20261122-050102");
        assert_eq!(c(".bashrc"), ".bashrc.conflict-peer_2-20261122-050102");
        assert_eq!(c("a.tar.gz"), "a.tar.conflict-peer_2-20261122-050102.gz");
        let long = format!("{}.txt", "é".repeat(120));
        assert!(c(&long).len() <= MAX_COMPONENT_LEN);
        assert!(c(&long).ends_with(".txt"));
        assert_eq!(c("é"), "é.conflict-peer_2-20261122-050102");
        let deep = format!("{}x", "d/".repeat(2045));
        assert!(RelPath::new(&deep)
            .unwrap()
            .conflict_copy("p", "t")
            .is_err());
    }

    proptest! {
        #[test]
        fn validated_paths_never_escape(s in "\\PC{0,40}") {
            if let Ok(p) = RelPath::new(s) {
                let joined = Path::new("/root").join(p.as_str());
                prop_assert!(joined.starts_with("/root"));
                for c in joined.strip_prefix("/root").unwrap().components() {
                    prop_assert!(matches!(c, Component::Normal(_)));
                }
            }
        }

        #[test]
        fn conflict_copy_is_always_valid(s in "[a-z.]{1,20}(/[a-z. ]{1,20}){0,3}", peer in "\\PC{0,30}") {
            if let Ok(p) = RelPath::new(s) {
                let c = p.conflict_copy(&peer, "20260101-000000").unwrap();
                prop_assert_ne!(&c, &p);
                prop_assert!(RelPath::new(c.to_string()).is_ok());
            }
        }
    }
}
