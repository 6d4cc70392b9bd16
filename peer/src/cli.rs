//! The one-shot commands: `ls`, `peers`, `get`. Each asks the tracker once
//! (failing within a few seconds if it does not answer) and prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use zync_proto::{RelPath, TrackerReply, TrackerRequest};

use crate::transfer::{FetchError, Fetcher};
use zync_net::{Context, NetError, TrackerClient};

/// How long a one-shot command waits for the tracker.
pub const TRACKER_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of the one-shot commands; each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The tracker failed or did not answer.
    #[error("tracker: {0}")]
    Tracker(#[from] NetError),
    /// The download failed.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// The path is not a valid cluster path.
    #[error("{0}")]
    Path(#[from] zync_proto::PathError),
    /// Writing output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The tracker sent something unexpected.
    #[error("unexpected reply from the tracker")]
    Unexpected,
    /// The tracker restarted while the listing was being read; try again.
    #[error("the tracker restarted during the listing; try again")]
    TrackerRestarted,
}

/// One file in `ls --json`.
#[derive(Serialize)]
pub struct FileRow {
    /// Path in the folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Content hash (hex).
    pub sha256: String,
    /// Version vector.
    pub version: String,
    /// Who made this version.
    pub modified_by: String,
    /// Live peers holding it.
    pub holders: Vec<String>,
}

/// One peer in `peers --json`.
#[derive(Serialize)]
pub struct PeerRow {
    /// Peer name.
    pub name: String,
    /// Transfer endpoint.
    pub endpoint: String,
    /// Milliseconds since the tracker last heard from it.
    pub last_seen_ms: u64,
}

fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64))
        .to_string()
}

/// The cluster's live files (tombstones left out), sorted by path.
pub fn files(ctx: &Context, tracker: &str) -> Result<Vec<FileRow>, CliError> {
    let mut c = TrackerClient::new(ctx, tracker, TRACKER_TIMEOUT);
    let mut files = Vec::new();
    let mut after = None;
    let mut epoch = None;
    loop {
        let TrackerReply::Snapshot {
            epoch: e,
            files: page,
            next,
            ..
        } = c.request(&TrackerRequest::List { after })?
        else {
            return Err(CliError::Unexpected);
        };
        if epoch.is_some_and(|was| was != e) {
            return Err(CliError::TrackerRestarted);
        }
        epoch = Some(e);
        files.extend(page.into_iter().filter(|f| !f.entry.deleted));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(files
        .into_iter()
        .map(|f| FileRow {
            path: f.entry.path.to_string(),
            size: f.entry.size,
            mtime: rfc3339(f.entry.mtime_ns),
            mtime_ns: f.entry.mtime_ns,
            sha256: f.entry.sha256.to_hex(),
            version: f.entry.version.to_string(),
            modified_by: f.entry.modified_by,
            holders: f.holders,
        })
        .collect())
}

/// The live peers.
pub fn peers(ctx: &Context, tracker: &str) -> Result<Vec<PeerRow>, CliError> {
    let mut c = TrackerClient::new(ctx, tracker, TRACKER_TIMEOUT);
    let TrackerReply::Peers { peers } = c.request(&TrackerRequest::Peers)? else {
        return Err(CliError::Unexpected);
    };
    Ok(peers
        .into_iter()
        .map(|p| PeerRow {
            name: p.name,
            endpoint: p.endpoint,
            last_seen_ms: p.last_seen_ms,
        })
        .collect())
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
pub fn ping(ctx: &Context, addr: &str) -> Result<(), CliError> {
    let ping = zync_proto::encode(&zync_proto::PeerRequest::Ping);
    let reply = zync_net::ask(ctx, addr, &ping, TRACKER_TIMEOUT)?;
    match zync_proto::decode::<zync_proto::PeerReply>(&reply) {
        Ok(zync_proto::PeerReply::Pong) => Ok(()),
        _ => Err(CliError::Unexpected),
    }
}

/// Downloads `path` from the cluster to `output` (default: its file name in
/// the current folder), verified, with a progress bar on a terminal.
/// Returns where it was written and from whom.
pub fn get(
    ctx: &Context,
    tracker: &str,
    path: &str,
    output: Option<&Path>,
) -> Result<(PathBuf, String, u64), CliError> {
    let rel = RelPath::new(path.trim_start_matches('/'))?;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => PathBuf::from(rel.components().last().unwrap_or("download")),
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut f = Fetcher::new(ctx, tracker, None);
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
    fetched.persist(&out)?;
    Ok((out, from, entry.size))
}
