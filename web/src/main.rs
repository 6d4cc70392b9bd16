//! `zync-web`: parse flags, bind, serve until SIGINT/SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// zync-web: a static HTTP/1.1 file server, and (with --tracker) the Zync
/// cluster's web front door: dashboard, downloads from the peers, uploads.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Folder of static files to serve.
    #[arg(long, env = "ZYNC_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// Address to listen on.
    #[arg(
        long,
        env = "ZYNC_WEB_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "HOST:PORT"
    )]
    listen: String,
    /// Join the cluster whose tracker is at HOST:PORT (several,
    /// comma-separated, the first preferred: see zync-peer --help).
    #[arg(long, env = "ZYNC_TRACKER", value_name = "HOST:PORT[,HOST:PORT...]")]
    tracker: Option<String>,
    /// This node's cluster folder, where uploads land (with --tracker).
    #[arg(
        long,
        env = "ZYNC_DATA",
        default_value = "zync-web-data",
        value_name = "DIR"
    )]
    data: PathBuf,
    /// Cluster member name (with --tracker).
    #[arg(long, env = "ZYNC_NAME", default_value = "web")]
    name: String,
    /// Where this node serves blocks to peers (with --tracker).
    #[arg(
        long,
        env = "ZYNC_PEER_LISTEN",
        default_value = "0.0.0.0:7000",
        value_name = "HOST:PORT"
    )]
    peer_listen: String,
    /// How peers reach this node's block server [default: host name and port].
    #[arg(long, env = "ZYNC_PEER_ADVERTISE", value_name = "HOST:PORT")]
    peer_advertise: Option<String>,
    /// Answer 404 for folders without index.html instead of listing them.
    #[arg(long, env = "ZYNC_NO_LISTING")]
    no_listing: bool,
    /// Largest upload accepted, in bytes.
    #[arg(long, env = "ZYNC_MAX_UPLOAD", default_value_t = 1 << 30)]
    max_upload: u64,
    /// Close a connection silent for this long (ms).
    #[arg(long, env = "ZYNC_WEB_READ_TIMEOUT_MS", default_value_t = 15_000)]
    read_timeout_ms: u64,
    /// Drop a client that takes no data for this long (ms).
    #[arg(long, env = "ZYNC_WEB_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    write_timeout_ms: u64,
    /// A request head (request line and headers) must arrive within this
    /// long of its first byte, however it trickles in (ms).
    #[arg(long, env = "ZYNC_WEB_HEAD_TIMEOUT_MS", default_value_t = 20_000)]
    head_timeout_ms: u64,
    /// Most client connections at once; past it, new ones get 503.
    #[arg(long, env = "ZYNC_WEB_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// The cluster face's password: the first line of FILE (keep it mode
    /// 0600). API clients send it as HTTP Basic auth (any user name) or as
    /// `Authorization: Bearer PASSWORD`; people log in at /login. Needed
    /// with --tracker unless --no-login or --insecure.
    #[arg(long, env = "ZYNC_WEB_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Serve the cluster face without a password, to anyone who can reach
    /// --listen (say, behind a proxy that does its own login). Logs a
    /// warning at every start.
    #[arg(long, env = "ZYNC_WEB_NO_LOGIN", conflicts_with = "password_file")]
    no_login: bool,
    /// How long a login lasts, in hours.
    #[arg(
        long,
        env = "ZYNC_WEB_SESSION_HOURS",
        default_value_t = 12,
        value_name = "HOURS"
    )]
    session_hours: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(
        long,
        env = "ZYNC_WEB_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, RSA or EC; unencrypted).
    #[arg(
        long,
        env = "ZYNC_WEB_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    keys: zync_net::KeyArgs,
    /// Log format.
    #[arg(long, env = "ZYNC_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Check that zync-web answers plain HTTP at HOST:PORT and exit 0 if so
    /// (for container health checks; not for a --tls-cert listener).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    health: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    zync_net::logging::init(&args.log_format);
    zync_net::logging::exit("zync-web", run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = &args.health {
        return health(addr);
    }
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let root = match &args.root {
        Some(r) => Some(
            r.canonicalize()
                .with_context(|| format!("root {}", r.display()))?,
        ),
        None => None,
    };
    anyhow::ensure!(
        root.is_some() || args.tracker.is_some(),
        "nothing to serve: give --root, --tracker or both"
    );
    let limits = zync_web::Limits {
        read_timeout: Duration::from_millis(args.read_timeout_ms.max(100)),
        write_timeout: Duration::from_millis(args.write_timeout_ms.max(100)),
        head_timeout: Duration::from_millis(args.head_timeout_ms.max(100)),
        max_connections: args.max_connections.max(1),
        max_upload: args.max_upload,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(zync_web::server::Tls::load(cert, key)?),
        _ => None,
    };
    if let (Some(root), Some(_)) = (&root, &args.tracker) {
        zync_web::separate_roots(root, &args.data)?;
    }
    let auth = login(&args, tls.is_some())?;
    let stop = zync_net::Shutdown::on_signals().context("install signal handler")?;
    let cluster = match &args.tracker {
        Some(t) => Some(
            zync_web::cluster::Cluster::start(
                zync_web::cluster::Join {
                    tracker: t.clone(),
                    data: args.data.clone(),
                    name: args.name.clone(),
                    listen: args.peer_listen.clone(),
                    advertise: args.peer_advertise.clone(),
                    context: args.keys.context()?,
                },
                stop.clone(),
            )
            .context("cannot join the cluster")?,
        ),
        None => None,
    };
    let addr: SocketAddr = args
        .listen
        .to_socket_addrs()
        .with_context(|| format!("listen address {}", args.listen))?
        .next()
        .context("listen address resolves to nothing")?;
    let listener = zync_web::server::bind(addr, &limits)
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, root = ?root, cluster = args.tracker.is_some(),
                   tls = tls.is_some(), login = auth.is_some(), "zync-web listening");
    let state = zync_web::State::new(root, !args.no_listing, limits);
    let router = Arc::new(zync_web::Router::new(state, cluster, auth));

    zync_web::server::serve(listener, router, tls, stop)?;
    tracing::info!("zync-web stopped");
    // Connection threads may still hold the state and its sockets, and
    // dropping the last socket context waits for every socket: exit now.
    std::process::exit(0);
}

/// The login in front of the cluster face, or why there is none.
fn login(args: &Args, tls: bool) -> anyhow::Result<Option<zync_web::auth::Auth>> {
    use zync_web::auth::{Auth, Password};
    let age = std::time::Duration::from_secs(args.session_hours.clamp(1, 24 * 365) * 3600);
    match (&args.password_file, &args.tracker) {
        (Some(f), _) => Ok(Some(Auth::new(Password::load(f)?, age, tls))),
        (None, None) => Ok(None),
        (None, Some(_)) if args.no_login || args.keys.insecure => {
            tracing::warn!(listen = %args.listen,
                "the cluster face has no login: anyone who can reach this address can read, upload and replace every file");
            Ok(None)
        }
        (None, Some(_)) => anyhow::bail!(
            "the cluster face needs a password: give --password-file FILE (one line; make one with \
             `head -c 18 /dev/urandom | base64 > FILE && chmod 600 FILE`), or --no-login to open it to \
             anyone who can reach {}",
            args.listen
        ),
    }
}

fn health(addr: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let sa = addr.to_socket_addrs()?.next().context("no address")?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"HEAD / HTTP/1.0\r\nHost: health\r\n\r\n")?;
    // The status line: up to its end, the first 64 bytes, or the close.
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while head.len() < 64 && !head.contains(&b'\n') {
        match s.read(&mut buf[..64 - head.len()])? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    match zync_web::http::status_code(line) {
        Some(code) if code < 500 => Ok(()),
        _ => anyhow::bail!("unhealthy: {line:?}"),
    }
}
