//! The one-shot commands: `ls`, `peers`, `get`. Each asks the tracker once
//! (failing within a few seconds if it does not answer) and prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use zync_net::Context;
use zync_proto::RelPath;

use crate::client::{Client, ClientError, FetchError, FileRow, PeerRow, TRACKER_TIMEOUT};

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
    fetched.persist(&out)?;
    Ok((out, from, entry.size))
}
