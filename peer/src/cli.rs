//! The one-shot commands: `ls`, `peers`, `get` ask the tracker once
//! (failing within a few seconds if it does not answer) and print;
//! `versions` and `restore` work on this machine's folder, beside a running
//! peer or without one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use zync_net::Context;
use zync_proto::RelPath;

use crate::client::{Client, ClientError, FetchError, FileRow, PeerRow, TRACKER_TIMEOUT};
use crate::fsops::Root;
use crate::versions::{pick, Kept, RestoreError, Versions};

/// The rows `ls PATH` shows: the file at `path` and every file within it
/// (a folder), or all of them without one; with `conflicts`, only the
/// conflict copies among them.
pub fn select_files(
    rows: Vec<FileRow>,
    path: Option<&str>,
    conflicts: bool,
) -> Result<Vec<FileRow>, ClientError> {
    let within = match path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        Some(p) => Some(RelPath::new(p)?),
        None => None,
    };
    Ok(rows
        .into_iter()
        .filter(|r| !conflicts || r.conflict_of.is_some())
        .filter(|r| {
            within
                .as_ref()
                .is_none_or(|d| RelPath::new(r.path.as_str()).is_ok_and(|p| p.is_within(d)))
        })
        .collect())
}

/// Prints `ls --conflicts` output: each copy, what it is a copy of, and
/// who made the version it keeps.
pub fn print_conflicts(rows: &[FileRow], json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        return writeln!(out);
    }
    if rows.is_empty() {
        return writeln!(out, "no conflict copies");
    }
    writeln!(
        out,
        "{:<48} {:<32} {:<12} {:>10}  MODIFIED",
        "COPY", "OF", "BY", "SIZE"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<48} {:<32} {:<12} {:>10}  {}",
            r.path,
            r.conflict_of.as_deref().unwrap_or("?"),
            r.modified_by,
            bytesize::ByteSize(r.size).to_string(),
            r.mtime
        )?;
    }
    writeln!(
        out,
        "\nEach copy keeps a version that lost to a concurrent edit. Keep one: \
         copy it over the original (or delete it); every peer follows."
    )
}

/// Prints `ls` output.
pub fn print_files(rows: &[FileRow], json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "{:<40} {:>10}  {:<20}  {:<8}  HOLDERS",
        "PATH", "SIZE", "MODIFIED", "SHA256"
    )?;
    for r in rows {
        let holders = if r.holders.is_empty() {
            "(none live)".to_owned()
        } else {
            r.holders.join(",")
        };
        writeln!(
            out,
            "{:<40} {:>10}  {:<20}  {:<8}  {}",
            r.path,
            bytesize::ByteSize(r.size).to_string(),
            r.mtime,
            &r.sha256[..8],
            holders
        )?;
    }
    Ok(())
}

/// Prints `peers` output.
pub fn print_peers(rows: &[PeerRow], json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        return writeln!(out);
    }
    writeln!(out, "{:<20} {:<32} LAST SEEN", "NAME", "ENDPOINT")?;
    for r in rows {
        writeln!(
            out,
            "{:<20} {:<32} {:.1}s ago",
            r.name,
            r.endpoint,
            r.last_seen_ms as f64 / 1000.0
        )?;
    }
    Ok(())
}

/// Checks that the peer whose block server is at `addr` answers a ping.
pub fn ping(ctx: &Context, addr: &str) -> Result<(), ClientError> {
    let ping = zync_proto::encode(&zync_proto::PeerRequest::Ping);
    let reply = zync_net::ask(ctx, addr, &ping, TRACKER_TIMEOUT)?;
    match zync_proto::decode::<zync_proto::PeerReply>(&reply) {
        Ok(zync_proto::PeerReply::Pong) => Ok(()),
        _ => Err(ClientError::Unexpected),
    }
}

/// Downloads `path` from the cluster to `output` (default: its file name in
/// the current folder), verified, with a progress bar on a terminal.
/// Returns where it was written and from whom.
pub fn get(
    client: &Client,
    path: &str,
    output: Option<&Path>,
) -> Result<(PathBuf, String, u64), ClientError> {
    let rel = RelPath::new(path.trim_start_matches('/'))?;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => PathBuf::from(rel.components().last().unwrap_or("download")),
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut f = client.fetcher();
    let entry = f.lookup(&rel)?;
    if entry.deleted {
        return Err(FetchError::Deleted(rel).into());
    }
    let bar = indicatif::ProgressBar::new(entry.size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(rel.to_string());
    let fetched = f.fetch(&entry, &dir, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    let fetched = fetched?;
    let from = fetched.from().to_owned();
    fetched.persist(&out, crate::fsops::mode_for(entry.mode))?;
    Ok((out, from, entry.size))
}

/// Why `versions` or `restore` failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    /// The folder is not there.
    #[error("folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The versions area cannot be read.
    #[error("cannot read the kept versions: {0}")]
    Read(#[source] io::Error),
    /// A version could not be put back.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// The versions area of the synced folder at `folder`.
pub fn versions_of(folder: &Path) -> Result<(Root, Versions), VersionsError> {
    let dir = folder
        .canonicalize()
        .map_err(|source| VersionsError::Folder {
            path: folder.display().to_string(),
            source,
        })?;
    let root = Root::new(dir);
    // The keeping time matters only to the running peer's pruning.
    let v = Versions::new(&root, crate::versions::DEFAULT_KEEP);
    Ok((root, v))
}

/// One row of `versions --json`.
#[derive(serde::Serialize)]
struct VersionRow<'a> {
    path: &'a str,
    kept_at: String,
    size: u64,
    sha256: &'a str,
    modified: String,
    replaced_by: &'a str,
    reason: crate::versions::Reason,
    file: String,
}

/// Prints `versions` output: one line per kept version, oldest first, and
/// (in the table) what they take.
pub fn print_versions(rows: &[Kept], json: bool, out: &mut dyn Write) -> io::Result<()> {
    let time = |ns: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64),
        )
        .to_string()
    };
    if json {
        let rows: Vec<VersionRow<'_>> = rows
            .iter()
            .map(|k| VersionRow {
                path: &k.path,
                kept_at: time(k.kept_at_ns),
                size: k.size,
                sha256: &k.sha256,
                modified: time(k.mtime_ns),
                replaced_by: &k.replaced_by,
                reason: k.reason,
                file: k.file.display().to_string(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "{:<20}  {:>10}  {:<8}  {:<24}  PATH",
        "KEPT", "SIZE", "SHA256", "WHY"
    )?;
    for k in rows {
        let why = match k.reason {
            crate::versions::Reason::Replaced => format!("replaced by {}", k.replaced_by),
            crate::versions::Reason::Deleted => format!("deleted by {}", k.replaced_by),
            crate::versions::Reason::RestoredOver => "restored over".to_owned(),
        };
        writeln!(
            out,
            "{:<20}  {:>10}  {:<8}  {:<24}  {}",
            time(k.kept_at_ns),
            bytesize::ByteSize(k.size).to_string(),
            k.sha256.get(..8).unwrap_or(&k.sha256),
            why,
            k.path
        )?;
    }
    let bytes: u64 = rows.iter().map(|k| k.size).sum();
    writeln!(
        out,
        "{} kept version{}, {}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        bytesize::ByteSize(bytes)
    )
}

/// Puts kept versions back. `path` naming a file with kept versions
/// restores that file (its newest version, or its content at `at`); any
/// other path is a folder (`.` or empty: the whole folder), and every file
/// under it that is missing now and has a kept version comes back, so a
/// deletion of many files is undone at once. In the folder unless `to`
/// names another place. Returns each version restored and where.
pub fn restore(
    root: &Root,
    v: &Versions,
    path: &str,
    at: Option<SystemTime>,
    to: Option<&Path>,
) -> Result<Vec<(Kept, PathBuf)>, VersionsError> {
    let path = path.trim_matches('/');
    let path = if path == "." { "" } else { path };
    let all = v
        .list((!path.is_empty()).then_some(path))
        .map_err(VersionsError::Read)?;
    let chosen: Vec<&Kept> = if all.iter().any(|k| k.path == path) {
        vec![pick(&all, path, at).ok_or_else(|| {
            RestoreError::NoVersion(match at {
                Some(t) => format!(
                    "{path}: no version was kept after {}; its content then is the one it has now",
                    humantime::format_rfc3339_seconds(t)
                ),
                None => format!("{path}: no kept version"),
            })
        })?]
    } else {
        let mut paths: Vec<&str> = all.iter().map(|k| k.path.as_str()).collect();
        paths.dedup();
        paths.sort_unstable();
        paths.dedup();
        paths
            .into_iter()
            .filter(|p| to.is_some() || !root.dir().join(p).exists())
            .filter_map(|p| pick(&all, p, at))
            .collect()
    };
    if chosen.is_empty() {
        return Err(RestoreError::NoVersion(format!(
            "nothing to restore under {}: no kept version of a file missing there{}",
            if path.is_empty() { "the folder" } else { path },
            if at.is_some() { " from that time" } else { "" }
        ))
        .into());
    }
    let mut done = Vec::new();
    for k in chosen {
        let at = v.restore(root, k, to)?;
        done.push((k.clone(), at));
    }
    Ok(done)
}

/// A time for `restore --at`: RFC 3339 (`2026-12-02T13:00:00Z`,
/// `2026-12-02 13:00:00`, UTC), or a duration ago (`90m`, `2h`, `3days`).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{s}: too long ago")),
        Err(_) => Err(format!(
            "{s}: not a time (2026-12-02T13:00:00Z, UTC) or a duration ago (90m, 2h, 3days)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str) -> FileRow {
        FileRow {
            conflict_of: RelPath::new(path)
                .unwrap()
                .conflict_original()
                .map(|(p, _)| p.to_string()),
            path: path.into(),
            size: 1,
            mtime: String::new(),
            mtime_ns: 0,
            sha256: "0".repeat(64),
            version: String::new(),
            modified_by: "p".into(),
            holders: vec![],
        }
    }

    fn paths(rows: Vec<FileRow>) -> Vec<String> {
        rows.into_iter().map(|r| r.path).collect()
    }

    #[test]
    fn ls_takes_a_file_or_a_folder_and_conflicts_alone() {
        let all = || {
            [
                "docs",
                "docs.txt",
                "docs/a",
                "docs/b/c",
                "docs2/x",
                "docs/a.conflict-p2-20261122-050102",
            ]
            .map(row)
            .into()
        };
        let within = |p: Option<&str>, c: bool| paths(select_files(all(), p, c).unwrap());
        assert_eq!(within(None, false).len(), 6);
        assert_eq!(
            within(Some("docs/"), false),
            [
                "docs",
                "docs/a",
                "docs/b/c",
                "docs/a.conflict-p2-20261122-050102"
            ]
        );
        assert_eq!(within(Some("/docs/b"), false), ["docs/b/c"]);
        assert_eq!(within(Some("docs.txt"), false), ["docs.txt"]);
        assert_eq!(within(None, true), ["docs/a.conflict-p2-20261122-050102"]);
        assert!(within(Some("docs2"), true).is_empty());
        assert!(select_files(all(), Some("../x"), false).is_err());
    }
}
