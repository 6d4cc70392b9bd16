//! `zync-tracker`: parse flags, bind, serve until SIGINT/SIGTERM.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
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
    /// Log format.
    #[arg(long, env = "ZYNC_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Check that a tracker answers at HOST:PORT and exit 0 if so (for container health checks).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "127.0.0.1:5555")]
    health: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    let ctx = zmq::Context::new();
    if let Some(addr) = args.health {
        return health(&ctx, &addr);
    }
    let cfg = zync_tracker::Config {
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(50)),
    };
    let tracker = zync_tracker::Tracker::bind(&ctx, &tcp(&args.listen), &tcp(&args.publish), cfg)
        .context("cannot start tracker")?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    tracker.run(stop)?;
    Ok(())
}

fn tcp(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("tcp://{addr}")
    }
}

fn health(ctx: &zmq::Context, addr: &str) -> anyhow::Result<()> {
    let s = ctx.socket(zmq::REQ)?;
    s.set_linger(0)?;
    s.set_rcvtimeo(2000)?;
    s.set_sndtimeo(2000)?;
    s.connect(&tcp(addr))?;
    s.send(zync_proto::encode(&zync_proto::TrackerRequest::Peers), 0)?;
    let reply = s.recv_bytes(0).context("tracker did not answer")?;
    match zync_proto::decode::<zync_proto::TrackerReply>(&reply)? {
        zync_proto::TrackerReply::Peers { .. } => Ok(()),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}
