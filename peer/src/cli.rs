//! The one-shot commands: `ls`, `peers`, `get` ask the tracker once
//! (failing within a few seconds if it does not answer) and print;
//! `versions` and `restore` work on this machine's folder, beside a running
//! peer or without one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use zync_net::Context;
use zync_proto::RelPath;

use crate::client::{
    Client, ClientError, ErrorRow, FetchError, FileRow, PeerRow, TransferRow, TRACKER_TIMEOUT,
};
use crate::fsops::Root;
use crate::versions::{pick, Kept, RestoreError, Versions};

/// One live peer's part in `status`: what it holds of the cluster's
/// current files, and what it still needs.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PeerStatus {
    /// Peer name.
    pub name: String,
    /// It holds the current version of every file.
    pub in_sync: bool,
    /// Files whose current version it does not hold yet.
    pub files_needed: u64,
    /// Their bytes.
    pub bytes_needed: u64,
    /// Files whose current version it holds.
    pub files_held: u64,
    /// Their bytes.
    pub bytes_held: u64,
    /// Percent of the cluster's current bytes it holds (of its files, when
    /// every file is empty; 100 in an empty cluster).
    pub complete_percent: f64,
    /// With `--watch`: the bytes a second it came to hold since the last
    /// look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_bytes_per_s: Option<f64>,
    /// With `--watch`: seconds until it holds everything at that rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// Its large downloads under way (the largest few), as its last
    /// heartbeat said.
    pub transfers: Vec<TransferRow>,
    /// Its downloads waiting to be tried again after a failure.
    pub failing: u64,
    /// The latest of those failures.
    pub errors: Vec<ErrorRow>,
}

/// `status`: the cluster's current files, and each live peer's part.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ClusterStatus {
    /// Current files (tombstones left out).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Conflict copies among them (`ls --conflicts` lists them).
    pub conflicts: u64,
    /// Files no live peer holds now (their holders are away): nobody can
    /// fetch them until one is back.
    pub unavailable: u64,
    /// Every live peer, by name (or only the one asked for).
    pub peers: Vec<PeerStatus>,
}

/// The status of the cluster whose current files are `files`, for the
/// live peers `peers`; only `only` among them, if given (an error if it
/// is not live).
pub fn cluster_status(
    files: &[FileRow],
    peers: &[PeerRow],
    only: Option<&str>,
) -> Result<ClusterStatus, StatusError> {
    let mut names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(one) = only {
        if !names.contains(&one) {
            return Err(StatusError::NotLive(one.to_owned()));
        }
        names = vec![one];
    }
    let mut held: std::collections::HashMap<&str, (u64, u64)> =
        names.iter().map(|n| (*n, (0, 0))).collect();
    let (mut bytes, mut conflicts, mut unavailable) = (0, 0, 0);
    for f in files {
        bytes += f.size;
        conflicts += u64::from(f.conflict_of.is_some());
        unavailable += u64::from(f.holders.is_empty());
        for h in &f.holders {
            if let Some((n, b)) = held.get_mut(h.as_str()) {
                *n += 1;
                *b += f.size;
            }
        }
    }
    let total = files.len() as u64;
    let peers = names
        .iter()
        .map(|name| {
            let (files_held, bytes_held) = held[name];
            let row = peers.iter().find(|p| p.name == *name);
            let complete_percent = match (bytes, total) {
                (0, 0) => 100.0,
                (0, t) => 100.0 * files_held as f64 / t as f64,
                (b, _) => 100.0 * bytes_held as f64 / b as f64,
            };
            PeerStatus {
                name: (*name).to_owned(),
                in_sync: files_held == total,
                files_needed: total - files_held,
                bytes_needed: bytes - bytes_held,
                files_held,
                bytes_held,
                complete_percent,
                rate_bytes_per_s: None,
                eta_s: None,
                transfers: row.map(|p| p.transfers.clone()).unwrap_or_default(),
                failing: row.map_or(0, |p| p.failing),
                errors: row.map(|p| p.errors.clone()).unwrap_or_default(),
            }
        })
        .collect();
    Ok(ClusterStatus {
        files: total,
        bytes,
        conflicts,
        unavailable,
        peers,
    })
}

/// Sets each peer's rate and time to go in `now` from what it held at
/// `before`, `secs` seconds earlier.
pub fn add_rates(now: &mut ClusterStatus, before: &ClusterStatus, secs: f64) {
    for p in &mut now.peers {
        let Some(was) = before.peers.iter().find(|b| b.name == p.name) else {
            continue;
        };
        let rate = (p.bytes_held.saturating_sub(was.bytes_held)) as f64 / secs.max(1e-3);
        p.rate_bytes_per_s = Some(rate);
        p.eta_s = match (p.in_sync, rate > 0.0) {
            (true, _) => Some(0.0),
            (false, true) => Some(p.bytes_needed as f64 / rate),
            (false, false) => None,
        };
    }
}

/// `status`: asks the tracker and prints, once, or with `watch` every
/// `interval` (in place on a terminal; `--json`: one line each time) with
/// each peer's rate and time to go, until interrupted. `name` is the peer
/// asked for (`None`: every live peer).
pub fn status(
    client: &Client,
    name: Option<&str>,
    json: bool,
    watch: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    use std::io::IsTerminal;
    let in_place = watch.is_some() && !json && io::stdout().is_terminal();
    let mut last: Option<(ClusterStatus, std::time::Instant)> = None;
    loop {
        let (files, peers) = client.listing()?;
        let now = std::time::Instant::now();
        let mut s = cluster_status(&files, &peers, name).map_err(ClientError::Status)?;
        if let Some((before, at)) = &last {
            add_rates(&mut s, before, now.duration_since(*at).as_secs_f64());
        }
        if in_place {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        print_status(&s, json, out)?;
        out.flush()?;
        let Some(every) = watch else {
            return Ok(());
        };
        last = Some((s, now));
        std::thread::sleep(every);
    }
}

/// Why `status` could not say.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The peer asked for is not registered with the tracker.
    #[error("peer {0} is not live (see `zync-peer peers`); --all shows every live peer")]
    NotLive(String),
}

/// Prints `status` output.
pub fn print_status(s: &ClusterStatus, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, s)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "{:<20} {:<7} {:>8} {:>10} {:>9} {:>11} {:>9}",
        "PEER", "IN SYNC", "NEEDS", "BYTES", "COMPLETE", "RATE", "ETA"
    )?;
    for p in &s.peers {
        let rate = p.rate_bytes_per_s.map_or_else(
            || "-".to_owned(),
            |r| format!("{}/s", bytesize::ByteSize(r as u64)),
        );
        let eta = match (p.in_sync, p.eta_s) {
            (true, _) => "-".to_owned(),
            (false, Some(e)) => {
                humantime::format_duration(Duration::from_secs(e.ceil() as u64)).to_string()
            }
            (false, None) => "?".to_owned(),
        };
        writeln!(
            out,
            "{:<20} {:<7} {:>8} {:>10} {:>8.1}% {:>11} {:>9}",
            p.name,
            if p.in_sync { "yes" } else { "no" },
            p.files_needed,
            bytesize::ByteSize(p.bytes_needed).to_string(),
            p.complete_percent,
            rate,
            eta
        )?;
        for t in &p.transfers {
            let pct = if t.size == 0 {
                100.0
            } else {
                100.0 * t.done as f64 / t.size as f64
            };
            let eta = t.eta_s.map_or_else(
                || "?".to_owned(),
                |e| humantime::format_duration(Duration::from_secs(e.ceil() as u64)).to_string(),
            );
            writeln!(
                out,
                "  <- {} {} of {} ({pct:.0}%), {}/s, {eta} to go",
                t.path,
                bytesize::ByteSize(t.done),
                bytesize::ByteSize(t.size),
                bytesize::ByteSize(t.rate_bytes_per_s),
            )?;
        }
        if p.failing > 0 {
            writeln!(
                out,
                "  !! {} download{} failing, tried again after a pause; the latest:",
                p.failing,
                if p.failing == 1 { "" } else { "s" }
            )?;
            for e in &p.errors {
                writeln!(out, "     {}: {}", e.path, e.error)?;
            }
        }
    }
    writeln!(
        out,
        "\ncluster: {} files, {}",
        s.files,
        bytesize::ByteSize(s.bytes)
    )?;
    if s.unavailable > 0 {
        writeln!(
            out,
            "{} files have no live holder: they arrive when a peer holding them is back",
            s.unavailable
        )?;
    }
    match s.conflicts {
        0 => writeln!(out, "no conflict copies"),
        n => writeln!(
            out,
            "{n} conflict copies: `zync-peer ls --conflicts` lists them"
        ),
    }
}

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
    let root = Root::new(dir).map_err(|source| VersionsError::Folder {
        path: folder.display().to_string(),
        source,
    })?;
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

    fn peer(name: &str) -> PeerRow {
        PeerRow {
            name: name.into(),
            endpoint: String::new(),
            last_seen_ms: 0,
            transfers: vec![],
            failing: 0,
            errors: vec![],
        }
    }

    #[test]
    fn status_counts_what_each_live_peer_holds_and_its_rate_to_go() {
        let held = |path: &str, size: u64, by: &[&str]| FileRow {
            size,
            holders: by.iter().map(|s| (*s).to_owned()).collect(),
            ..row(path)
        };
        let files = [
            held("a", 300, &["p1", "p2"]),
            held("b", 700, &["p1"]),
            held("b.conflict-p2-20261122-050102", 0, &["p2"]),
            held("gone-holder", 0, &[]),
        ];
        let peers = [peer("p2"), peer("p1")];
        let s = cluster_status(&files, &peers, None).unwrap();
        assert_eq!(
            (s.files, s.bytes, s.conflicts, s.unavailable),
            (4, 1000, 1, 1)
        );
        let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["p1", "p2"], "by name");
        let p2 = &s.peers[1];
        assert!(!p2.in_sync);
        assert_eq!((p2.files_needed, p2.bytes_needed), (2, 700));
        assert_eq!((p2.files_held, p2.bytes_held), (2, 300));
        assert!((p2.complete_percent - 30.0).abs() < 1e-9);
        let one = cluster_status(&files, &peers, Some("p1")).unwrap();
        assert_eq!(one.peers.len(), 1);
        assert!(matches!(
            cluster_status(&files, &peers, Some("p9")),
            Err(StatusError::NotLive(n)) if n == "p9"
        ));
        // An empty cluster: everyone is complete.
        let empty = cluster_status(&[], &peers, None).unwrap();
        assert!(empty
            .peers
            .iter()
            .all(|p| p.in_sync && p.complete_percent == 100.0));
        // Half a second later p2 holds 350 more bytes: 700 B/s, half a second to go.
        let mut later = s.clone();
        later.peers[1].bytes_held += 350;
        later.peers[1].bytes_needed -= 350;
        add_rates(&mut later, &s, 0.5);
        assert_eq!(later.peers[1].rate_bytes_per_s, Some(700.0));
        assert_eq!(later.peers[1].eta_s, Some(0.5));
        assert_eq!(later.peers[0].rate_bytes_per_s, Some(0.0));
        assert_eq!(
            later.peers[0].eta_s, None,
            "needs bytes, gains none: unknown"
        );
    }
}
