//! The cluster as the dashboard sees it: one listing from the tracker,
//! kept until a notification says it changed (and at most a few seconds),
//! and the browsing, searching and status built on it. A page of the
//! dashboard costs one pass over the part of the listing it shows, never
//! a request to the tracker per click.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use zync_peer::cli::{cluster_status, ClusterStatus};
use zync_peer::client::{Client, ClientError, FileRow, PeerRow};

/// How long a listing is used when no notification said it changed (a
/// missed notification, or holders that came and went, show by then).
const MAX_AGE: Duration = Duration::from_secs(5);
/// Least time between two listings while changes stream in.
const MIN_AGE: Duration = Duration::from_millis(300);

/// One listing of the cluster: its files (sorted by path), live peers, and
/// the status computed from them.
pub struct View {
    /// Current files, sorted by path.
    pub files: Vec<FileRow>,
    /// Live peers.
    pub peers: Vec<PeerRow>,
    /// Every live peer's part.
    pub status: ClusterStatus,
    taken: Instant,
}

/// The cached [`View`].
pub struct Views {
    cached: Mutex<Option<Arc<View>>>,
    dirty: AtomicBool,
}

impl Views {
    /// Nothing cached yet.
    pub fn new() -> Views {
        Views {
            cached: Mutex::new(None),
            dirty: AtomicBool::new(true),
        }
    }

    /// Marks the cached listing as out of date (a notification came).
    pub fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The cluster now: the cached listing, or a new one when it is out of
    /// date. Requests in between share one listing.
    pub fn get(&self, client: &Client) -> Result<Arc<View>, ClientError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cached.as_ref() {
            let age = v.taken.elapsed();
            let dirty = self.dirty.load(Ordering::Acquire);
            if age < MIN_AGE || (!dirty && age < MAX_AGE) {
                return Ok(Arc::clone(v));
            }
        }
        // A change that comes while the listing is read marks it again.
        let was_dirty = self.dirty.swap(false, Ordering::AcqRel);
        let (files, peers) = client.listing().inspect_err(|_| {
            if was_dirty {
                self.dirty.store(true, Ordering::Release);
            }
        })?;
        let status = cluster_status(&files, &peers, None).map_err(|_| ClientError::Unexpected)?;
        let v = Arc::new(View {
            files,
            peers,
            status,
            taken: Instant::now(),
        });
        *cached = Some(Arc::clone(&v));
        Ok(v)
    }
}

impl Default for Views {
    fn default() -> Self {
        Views::new()
    }
}

/// A folder within the one browsed: its name, and the current files and
/// bytes at or below it.
#[derive(Debug, Serialize, PartialEq)]
pub struct FolderRow {
    /// Its name (one path component).
    pub name: String,
    /// Its path in the folder.
    pub path: String,
    /// Files at or below it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Conflict copies at or below it.
    pub conflicts: u64,
}

/// A page of a folder's contents, or of a search's hits.
#[derive(Serialize)]
pub struct Page<'a> {
    /// The folder browsed ("" for the root).
    pub dir: String,
    /// The search, if any (case-insensitive, anywhere in the path, at or
    /// below `dir`).
    pub query: String,
    /// Its folders (all of them, on the first page only; none when searching).
    pub folders: Vec<FolderRow>,
    /// This page's files: directly in `dir`, or the search's hits.
    pub files: Vec<&'a FileRow>,
    /// Files there are in all (directly in `dir`, or hits).
    pub total: usize,
    /// Where this page starts among them.
    pub offset: usize,
    /// Most files a page holds.
    pub limit: usize,
}

impl View {
    /// The files at or below `dir` ("" for all): a range of the sorted
    /// listing, found by binary search.
    fn within(&self, dir: &str) -> &[FileRow] {
        if dir.is_empty() {
            return &self.files;
        }
        let prefix = format!("{dir}/");
        let start = self
            .files
            .partition_point(|f| f.path.as_str() < prefix.as_str());
        let len = self.files[start..].partition_point(|f| f.path.starts_with(&prefix));
        &self.files[start..start + len]
    }

    /// A page of `dir` (its sub-folders and the files directly in it), or,
    /// with a `query`, of the files at or below it whose path contains it.
    pub fn page(&self, dir: &str, query: &str, offset: usize, limit: usize) -> Page<'_> {
        let dir = dir.trim_matches('/');
        let under = self.within(dir);
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut folders: Vec<FolderRow> = Vec::new();
        let files: Vec<&FileRow> = if query.is_empty() {
            let mut direct = Vec::new();
            for f in under {
                let rest = &f.path[skip..];
                match rest.split_once('/') {
                    None => direct.push(f),
                    Some((name, _)) => {
                        if folders.last().is_none_or(|l| l.name != name) {
                            folders.push(FolderRow {
                                name: name.to_owned(),
                                path: f.path[..skip + name.len()].to_owned(),
                                files: 0,
                                bytes: 0,
                                conflicts: 0,
                            });
                        }
                        if let Some(l) = folders.last_mut() {
                            l.files += 1;
                            l.bytes += f.size;
                            l.conflicts += u64::from(f.conflict_of.is_some());
                        }
                    }
                }
            }
            direct
        } else {
            let q = query.to_lowercase();
            under
                .iter()
                .filter(|f| f.path[skip..].to_lowercase().contains(&q))
                .collect()
        };
        // Sorted by bytes, "docs-old/" comes before "docs/": by name here.
        folders.sort_by(|a, b| a.name.cmp(&b.name));
        if offset > 0 {
            folders.clear();
        }
        let total = files.len();
        let files = files.into_iter().skip(offset).take(limit).collect();
        Page {
            dir: dir.to_owned(),
            query: query.to_owned(),
            folders,
            files,
            total,
            offset,
            limit,
        }
    }

    /// Every conflict copy, with the file it is a copy of (if that still
    /// exists).
    pub fn conflicts(&self) -> Vec<(&FileRow, Option<&FileRow>)> {
        self.files
            .iter()
            .filter_map(|c| {
                let of = c.conflict_of.as_deref()?;
                Some((c, self.file(of)))
            })
            .collect()
    }

    /// The current file at `path`.
    pub fn file(&self, path: &str) -> Option<&FileRow> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, size: u64) -> FileRow {
        FileRow {
            path: path.into(),
            size,
            mtime: String::new(),
            mtime_ns: 0,
            sha256: String::new(),
            version: String::new(),
            modified_by: "p".into(),
            holders: vec!["p".into()],
            conflict_of: zync_proto::RelPath::new(path)
                .ok()
                .and_then(|p| p.conflict_original())
                .map(|p| p.0.as_str().to_owned()),
        }
    }

    fn view(paths: &[(&str, u64)]) -> View {
        let mut files: Vec<FileRow> = paths.iter().map(|(p, s)| row(p, *s)).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let status = cluster_status(&files, &[], None).expect("status");
        View {
            files,
            peers: vec![],
            status,
            taken: Instant::now(),
        }
    }

    #[test]
    fn a_folder_shows_its_subfolders_with_totals_and_its_own_files_paged() {
        let v = view(&[
            ("a.txt", 1),
            ("docs/x.md", 10),
            ("docs/deep/y.md", 20),
            ("docs-old/z", 5),
            ("docs/w.txt", 2),
            ("b.txt", 3),
        ]);
        let root = v.page("", "", 0, 10);
        let names: Vec<_> = root
            .folders
            .iter()
            .map(|f| (f.name.as_str(), f.files, f.bytes))
            .collect();
        assert_eq!(names, [("docs", 3, 32), ("docs-old", 1, 5)]);
        let files: Vec<_> = root.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, ["a.txt", "b.txt"]);
        let docs = v.page("docs/", "", 0, 1);
        assert_eq!(docs.folders.len(), 1);
        assert_eq!(docs.folders[0].path, "docs/deep");
        assert_eq!(docs.total, 2);
        assert_eq!(docs.files[0].path, "docs/w.txt");
        let next = v.page("docs", "", 1, 1);
        assert!(next.folders.is_empty(), "folders only on the first page");
        assert_eq!(next.files[0].path, "docs/x.md");
    }

    #[test]
    fn a_search_finds_paths_below_the_folder_case_insensitively() {
        let v = view(&[
            ("docs/Report.md", 1),
            ("docs/deep/report-2.md", 1),
            ("report.txt", 1),
        ]);
        let hits = v.page("docs", "REPORT", 0, 10);
        let paths: Vec<_> = hits.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["docs/Report.md", "docs/deep/report-2.md"]);
        assert!(hits.folders.is_empty());
        // The folder's own name is not part of what is searched.
        assert_eq!(v.page("docs", "docs", 0, 10).total, 0);
        assert_eq!(v.page("", "report", 0, 10).total, 3);
    }

    #[test]
    fn conflicts_pair_each_copy_with_its_original() {
        let v = view(&[
            ("notes.txt", 5),
            ("notes.conflict-peer2-20261206-101500.txt", 6),
            ("gone.conflict-peer1-20261206-101500.md", 1),
        ]);
        let c = v.conflicts();
        assert_eq!(c.len(), 2);
        let pairs: Vec<_> = c
            .iter()
            .map(|(copy, of)| (copy.path.as_str(), of.map(|o| o.path.as_str())))
            .collect();
        assert!(pairs.contains(&(
            "notes.conflict-peer2-20261206-101500.txt",
            Some("notes.txt")
        )));
        assert!(pairs.contains(&("gone.conflict-peer1-20261206-101500.md", None)));
    }
}
