//! `zync-peer`: parse flags, set up logging, run the peer or a one-shot command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Zync peer: keeps a folder identical on every machine of the cluster,
/// peer to peer, and queries the cluster from the command line.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Tracker request endpoint; several, comma-separated, are tried in
    /// order: a peer registers with the first that answers, moves to the
    /// next when it dies, and returns to the first when it is back.
    #[arg(
        long,
        global = true,
        env = "ZYNC_TRACKER",
        default_value = "127.0.0.1:5555",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    tracker: String,
    /// Log format.
    #[arg(long, global = true, env = "ZYNC_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    keys: zync_net::KeyArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Keep DIR in sync with the cluster (runs until SIGINT/SIGTERM).
    Run {
        /// The folder to sync (created if missing).
        #[arg(long, env = "ZYNC_DIR", value_name = "DIR")]
        dir: PathBuf,
        /// Where to serve blocks to other peers.
        #[arg(
            long,
            env = "ZYNC_LISTEN",
            default_value = "0.0.0.0:7000",
            value_name = "HOST:PORT"
        )]
        listen: String,
        /// Address other peers should use to reach this one [default: host name and listen port].
        #[arg(long, env = "ZYNC_ADVERTISE", value_name = "HOST:PORT")]
        advertise: Option<String>,
        /// Peer name, unique in the cluster [default: host name].
        #[arg(long, env = "ZYNC_NAME")]
        name: Option<String>,
        /// Concurrent downloads.
        #[arg(long, env = "ZYNC_WORKERS", default_value_t = 4)]
        workers: usize,
        /// Downloads that may wait before the next page of the cluster's
        /// index is fetched: bounds a new peer's memory however many files
        /// the cluster holds.
        #[arg(long, env = "ZYNC_BACKLOG", default_value_t = zync_peer::DEFAULT_BACKLOG, value_name = "FILES")]
        backlog: usize,
        /// Quiet time before a changed file is hashed, in milliseconds.
        #[arg(long, env = "ZYNC_DEBOUNCE_MS", default_value_t = 50)]
        debounce_ms: u64,
        /// How often to rescan the whole folder behind the watcher, to catch
        /// a change it missed (logged as event=missed_change); 0 turns it off.
        /// Unchanged files are only stat'ed, not re-hashed.
        #[arg(long, env = "ZYNC_RESCAN_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        rescan_interval: Duration,
        /// Keep what a remote change replaces or deletes for this many days,
        /// in DIR/.zync/versions (see `versions` and `restore`); 0 keeps
        /// nothing. Older versions are pruned in the background.
        #[arg(long, env = "ZYNC_KEEP_VERSIONS", default_value = "30", value_parser = parse_days, value_name = "DAYS")]
        keep_versions: Duration,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics (synced,
        /// fetched, reused and served bytes, conflicts, files and bytes
        /// still needed, transfers in flight, block-server requests and
        /// their latency, process memory and CPU). Off by default.
        #[arg(long, env = "ZYNC_METRICS", value_name = "HOST:PORT")]
        metrics: Option<String>,
    },
    /// List the versions kept here of PATH (a file or a folder; all if
    /// omitted): what remote changes replaced or deleted. Works beside a
    /// running peer.
    Versions {
        /// A file or folder of the synced folder.
        path: Option<String>,
        /// The synced folder.
        #[arg(long, env = "ZYNC_DIR", default_value = ".", value_name = "DIR")]
        folder: PathBuf,
        /// One JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put a kept version back as a new local change, which the running
    /// peer syncs to everyone like any edit. PATH is a file (its newest
    /// kept version, or its content at --at), or a folder ("." for all):
    /// every file under it that is missing now comes back, which undoes a
    /// mass deletion. What a restore replaces is kept in turn.
    Restore {
        /// A file or folder of the synced folder.
        path: String,
        /// The content as it was at TIME (UTC, 2026-12-02T13:00:00Z) or
        /// that long ago (90m, 2h, 3days), instead of the newest kept.
        #[arg(long, value_parser = zync_peer::cli::parse_time, value_name = "TIME")]
        at: Option<std::time::SystemTime>,
        /// Write the versions under DIR instead, leaving the folder as it is.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The synced folder.
        #[arg(long, env = "ZYNC_DIR", default_value = ".", value_name = "DIR")]
        folder: PathBuf,
    },
    /// List the cluster's files: path, size, modified, short hash, holders.
    Ls {
        /// Only this file, or the files within this folder.
        #[arg(value_name = "PATH")]
        path: Option<String>,
        /// Only the conflict copies, each with the file it is a copy of.
        #[arg(long)]
        conflicts: bool,
        /// One JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Is everything synced? This peer's share of the cluster's current
    /// files (every live peer's with --all): in sync or not, what it still
    /// needs, and the conflict copies to look at.
    Status {
        /// The peer to report on [default: host name].
        #[arg(long, env = "ZYNC_NAME")]
        name: Option<String>,
        /// Every live peer, not only this one.
        #[arg(long)]
        all: bool,
        /// One JSON object instead of a table (with --watch, one per line).
        #[arg(long)]
        json: bool,
        /// Refresh every INTERVAL, in place, with each peer's rate and
        /// time to go, until interrupted.
        #[arg(long)]
        watch: bool,
        /// How often --watch refreshes.
        #[arg(long, env = "ZYNC_STATUS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        interval: Duration,
    },
    /// List live peers: name, endpoint, last seen.
    Peers {
        /// One JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download one file from the cluster, verified.
    Get {
        /// Path of the file in the cluster.
        path: String,
        /// Where to write it [default: its file name, here].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write a new cluster key to FILE (mode 0600; an existing file is never
    /// replaced). Give the same file to every tracker, peer, zync-web and
    /// CLI command of the cluster with --key FILE.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
    /// Exit 0 if this machine's peer answers on its block server (for
    /// container health checks; no shell needed).
    Health {
        /// The peer's transfer endpoint.
        #[arg(
            long,
            env = "ZYNC_HEALTH_PEER",
            default_value = "127.0.0.1:7000",
            value_name = "HOST:PORT"
        )]
        peer: String,
    },
}

/// A number of days (fractions allowed) as a duration.
fn parse_days(s: &str) -> Result<Duration, String> {
    let days: f64 = s
        .parse()
        .map_err(|_| format!("{s}: not a number of days"))?;
    if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
        return Err(format!("{s}: days must be between 0 and 36500"));
    }
    Ok(Duration::from_secs_f64(days * 86_400.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    zync_net::logging::init(&cli.log_format);
    zync_net::logging::exit("zync-peer", real_main(cli))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    // Every command but keygen talks to the cluster, with its key.
    let ctx = || cli.keys.context();
    let client = || anyhow::Ok(zync_peer::client::Client::new(&ctx()?, &cli.tracker));
    // Buffered: a listing leaves in a few large writes, not one per line.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    match cli.cmd {
        Cmd::Run {
            dir,
            listen,
            advertise,
            name,
            workers,
            backlog,
            debounce_ms,
            rescan_interval,
            keep_versions,
            metrics,
        } => {
            let name =
                name.unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
            let cfg = zync_peer::Config {
                dir,
                tracker: cli.tracker,
                listen,
                advertise,
                name,
                workers,
                backlog,
                debounce: Duration::from_millis(debounce_ms),
                rescan: rescan_interval,
                keep_versions,
                context: ctx()?,
                observer: None,
            };
            let stop = zync_net::Shutdown::on_signals().context("install signal handler")?;
            if let Some(addr) = &metrics {
                zync_net::metrics::serve(addr, &stop)
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
            }
            // Returns once the engine has said goodbye to the tracker; the
            // process then exits without waiting for the other threads.
            zync_peer::run(cfg, stop).context("cannot start peer")?;
        }
        Cmd::Ls {
            path,
            conflicts,
            json,
        } => {
            let rows = client()?.files()?;
            let rows = zync_peer::cli::select_files(rows, path.as_deref(), conflicts)?;
            match conflicts {
                true => zync_peer::cli::print_conflicts(&rows, json, &mut stdout)?,
                false => zync_peer::cli::print_files(&rows, json, &mut stdout)?,
            }
        }
        Cmd::Status {
            name,
            all,
            json,
            watch,
            interval,
        } => {
            let name =
                match all {
                    true => None,
                    false => Some(name.unwrap_or_else(|| {
                        gethostname::gethostname().to_string_lossy().into_owned()
                    })),
                };
            let watch = watch.then_some(interval.max(Duration::from_millis(100)));
            zync_peer::cli::status(&client()?, name.as_deref(), json, watch, &mut stdout)?;
        }
        Cmd::Peers { json } => {
            let rows = client()?.peers()?;
            zync_peer::cli::print_peers(&rows, json, &mut stdout)?;
        }
        Cmd::Get { path, output } => {
            let (out, from, size) = zync_peer::cli::get(&client()?, &path, output.as_deref())?;
            eprintln!(
                "{path}: {size} bytes from {from}, verified, written to {}",
                out.display()
            );
        }
        Cmd::Versions { path, folder, json } => {
            let (_, v) = zync_peer::cli::versions_of(&folder)?;
            let rows = v
                .list(path.as_deref())
                .context("cannot read the kept versions")?;
            zync_peer::cli::print_versions(&rows, json, &mut stdout)?;
        }
        Cmd::Restore {
            path,
            at,
            dir,
            folder,
        } => {
            let (root, v) = zync_peer::cli::versions_of(&folder)?;
            for (k, to) in zync_peer::cli::restore(&root, &v, &path, at, dir.as_deref())? {
                eprintln!(
                    "restored {} ({} bytes, kept {}) to {}",
                    k.path,
                    k.size,
                    humantime::format_rfc3339_seconds(k.kept_at()),
                    to.display()
                );
            }
        }
        Cmd::Health { peer } => zync_peer::cli::ping(&ctx()?, &peer)?,
        Cmd::Keygen { file } => {
            zync_net::ClusterKey::write_new(&file)?;
            eprintln!(
                "wrote a new cluster key to {} (mode 0600); copy it to every machine of the \
                 cluster and give it with --key FILE (or ZYNC_KEY_FILE)",
                file.display()
            );
        }
    }
    std::io::Write::flush(&mut stdout)?;
    Ok(())
}
