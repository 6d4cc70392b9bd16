//! `zync-tracker`: parse flags, bind, serve until SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// The Zync tracker: knows which peers are alive and which file versions
/// exist (never the file bytes), answers their queries and publishes every
/// change of the cluster index.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Request-reply endpoint (register, heartbeat, update, list, locate, peers).
    #[arg(
        long,
        env = "ZYNC_LISTEN",
        default_value = "0.0.0.0:5555",
        value_name = "HOST:PORT"
    )]
    listen: String,
    /// Publish endpoint for index-change notifications.
    #[arg(
        long,
        env = "ZYNC_PUBLISH",
        default_value = "0.0.0.0:5556",
        value_name = "HOST:PORT"
    )]
    publish: String,
    /// Heartbeat interval in milliseconds; a peer silent for three is dropped.
    #[arg(
        long,
        env = "ZYNC_HEARTBEAT_MS",
        default_value_t = 1000,
        value_name = "MS"
    )]
    heartbeat_ms: u64,
    /// Run as the backup of the tracker whose request endpoint is HOST:PORT
    /// (the guide's Binary Star): keep a live copy of its index, and serve
    /// only when it is lost and a peer comes; stand by again when it is
    /// back. The primary needs no flag. Give peers both: --tracker A,B.
    #[arg(long, env = "ZYNC_BACKUP_OF", value_name = "HOST:PORT")]
    backup_of: Option<String>,
    /// Forget a deletion once every live peer that reported the file has
    /// applied it and it is this old (e.g. 90d, 12h, 30s). A peer away
    /// longer than that which comes back with the file brings it back.
    #[arg(long, env = "ZYNC_FORGET_DELETED_AFTER", default_value = "90d", value_name = "AGE",
          value_parser = humantime::parse_duration)]
    forget_deleted_after: Duration,
    /// Most bytes of file entries in one page of the index sent to a peer
    /// (a late joiner takes the index page by page, as it has room); at
    /// most the default, 8 MiB.
    #[arg(long, env = "ZYNC_PAGE_BYTES", default_value_t = zync_proto::PAGE_BYTES, value_name = "BYTES")]
    page_bytes: usize,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (requests by
    /// type and their latency, live peers, paths, notification sequence,
    /// process memory and CPU). Off by default.
    #[arg(long, env = "ZYNC_METRICS", value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Log format.
    #[arg(long, env = "ZYNC_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    keys: zync_net::KeyArgs,
    /// Check that a tracker answers at HOST:PORT and exit 0 if so (for container health checks).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "127.0.0.1:5555")]
    health: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    zync_net::logging::init(&args.log_format);
    zync_net::logging::exit("zync-tracker", run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let ctx = args.keys.context()?;
    if let Some(addr) = args.health {
        return health(&ctx, &addr);
    }
    let cfg = zync_tracker::Config {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(50)),
        backup_of: args.backup_of,
        forget_deleted_after: args.forget_deleted_after,
        page_bytes: args.page_bytes,
    };
    let tracker = zync_tracker::Tracker::bind(
        &ctx,
        &zync_net::tcp(&args.listen),
        &zync_net::tcp(&args.publish),
        cfg,
    )
    .context("cannot start tracker")?;
    let stop = zync_net::Shutdown::on_signals().context("install signal handler")?;
    if let Some(addr) = &args.metrics {
        zync_net::metrics::serve(addr, &stop)
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    tracker.run(stop)?;
    Ok(())
}

fn health(ctx: &zync_net::Context, addr: &str) -> anyhow::Result<()> {
    let ask = zync_proto::encode(&zync_proto::TrackerRequest::Peers);
    let reply = zync_net::ask(ctx, addr, &ask, Duration::from_secs(2))?;
    match zync_proto::decode::<zync_proto::TrackerReply>(&reply)? {
        zync_proto::TrackerReply::Peers { .. } => Ok(()),
        // A backup standing by is healthy: it answers, and follows its primary.
        zync_proto::TrackerReply::Error {
            kind: zync_proto::ErrorKind::Standby,
            ..
        } => Ok(()),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}
