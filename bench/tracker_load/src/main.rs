//! `tracker-load`: many simulated peers against a real Zync tracker, and
//! what it sustains.
//!
//! Starts `zync-tracker` (the one built beside this program, on free
//! loopback ports, with a fresh cluster key) unless `--tracker` names one,
//! then, in order:
//! 1. registers `--peers` simulated peers, each with `--files` entries, and
//!    keeps them alive with heartbeats from then on;
//! 2. connects `--subscribers` subscribers to its notifications and waits
//!    until each has heard from it;
//! 3. sends `Locate` queries for `--seconds` from `--clients` threads, each
//!    with `--window` requests in flight, then `List` (first pages) the same
//!    way, and counts the replies;
//! 4. publishes `--changes` changes, one every 20 ms (an `Update` from one
//!    simulated peer), and times each one's arrival at every subscriber.
//!
//! Prints one line per figure, and the tracker's peak RSS and CPU-seconds
//! when it started it. Asserts nothing: it measures.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use zync_net::{Context, KeyArgs, Socket, TrackerClient};
use zync_proto::{
    decode, encode, Event, FileEntry, Hash, Notification, RelPath, TrackerReply, TrackerRequest,
    VersionVector,
};

/// Many simulated peers against a real Zync tracker: registrations,
/// heartbeats, queries per second and how fast a change reaches every
/// subscriber.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The tracker to load (HOST:PORT). Without it, `zync-tracker` from
    /// beside this program is started on free loopback ports with a fresh
    /// cluster key, and its peak RSS and CPU are reported.
    #[arg(long, env = "ZYNC_TRACKER", value_name = "HOST:PORT")]
    tracker: Option<String>,
    /// Simulated peers registered and kept alive.
    #[arg(long, env = "ZYNC_LOAD_PEERS", default_value_t = 1000)]
    peers: usize,
    /// Files each simulated peer registers.
    #[arg(long, env = "ZYNC_LOAD_FILES", default_value_t = 10)]
    files: usize,
    /// Subscribers that count notifications.
    #[arg(long, env = "ZYNC_LOAD_SUBSCRIBERS", default_value_t = 1000)]
    subscribers: usize,
    /// Threads sending queries.
    #[arg(long, env = "ZYNC_LOAD_CLIENTS", default_value_t = 4)]
    clients: usize,
    /// Queries in flight per thread.
    #[arg(long, env = "ZYNC_LOAD_WINDOW", default_value_t = 16)]
    window: usize,
    /// Seconds each query phase lasts.
    #[arg(long, env = "ZYNC_LOAD_SECONDS", default_value_t = 5.0)]
    seconds: f64,
    /// Changes published to time their delivery.
    #[arg(long, env = "ZYNC_LOAD_CHANGES", default_value_t = 200)]
    changes: usize,
    #[command(flatten)]
    keys: KeyArgs,
}

/// Subscribers per socket context (libzmq allows 1,023 sockets in one).
const SUBS_PER_CONTEXT: usize = 500;

/// Subscribers one thread polls.
const SUBS_PER_THREAD: usize = 250;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let key_dir = tempfile::tempdir()?;
    let (tracker, mut child, contexts) = start(&args, key_dir.path())?;
    let result = load(&args, &tracker, &contexts, child.as_ref().map(Child::id));
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

/// The tracker's address, its process if we started it, and a socket
/// context for every [`SUBS_PER_CONTEXT`] subscribers (plus one).
fn start(
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<(String, Option<Child>, Vec<Context>)> {
    let n = args.subscribers.div_ceil(SUBS_PER_CONTEXT) + 1;
    if let Some(t) = &args.tracker {
        let contexts = (0..n)
            .map(|_| args.keys.context())
            .collect::<Result<_, _>>()?;
        return Ok((t.clone(), None, contexts));
    }
    let key_file = dir.join("cluster.key");
    let key = zync_net::ClusterKey::write_new(&key_file)?;
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("zync-tracker");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p zync-tracker)",
            bin.display()
        );
    }
    let (req, publish) = (zync_testkit::free_port(), zync_testkit::free_port());
    let tracker = format!("127.0.0.1:{req}");
    let child = Command::new(&bin)
        .args([
            "--listen",
            &tracker,
            "--publish",
            &format!("127.0.0.1:{publish}"),
        ])
        .env("ZYNC_KEY_FILE", &key_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let contexts = (0..n)
        .map(|_| Context::secured(&key))
        .collect::<Result<_, _>>()?;
    Ok((tracker, Some(child), contexts))
}

fn load(args: &Args, tracker: &str, contexts: &[Context], pid: Option<u32>) -> anyhow::Result<()> {
    anyhow::ensure!(args.peers >= 1, "--peers: at least one simulated peer");
    let ctx = &contexts[0];
    let mut client = TrackerClient::new(ctx, tracker, Duration::from_secs(3));
    let up = Instant::now();
    while client.request(&TrackerRequest::Peers).is_err() {
        if up.elapsed() > Duration::from_secs(10) {
            bail!("no tracker answers at {tracker}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "tracker {tracker}: {} simulated peers x {} files, {} subscribers, {} query threads x {} in flight",
        args.peers, args.files, args.subscribers, args.clients, args.window
    );

    // 1. Registrations, with heartbeats from the first one on (the tracker
    // says how often), for as long as we run: a peer registered early must
    // not time out while the rest register. Heartbeats of peers not yet
    // registered are refused and drained.
    let peers: Vec<Sim> = (0..args.peers).map(Sim::new).collect();
    let t = Instant::now();
    let (publish, heartbeat) = register_all(ctx, tracker, &peers[..1], args)?;
    let stop = Arc::new(AtomicBool::new(false));
    let beats = std::thread::spawn({
        let (ctx, tracker, stop) = (ctx.clone(), tracker.to_owned(), stop.clone());
        let ids: Vec<(String, u64)> = peers.iter().map(|p| (p.name.clone(), p.device)).collect();
        move || heartbeats(&ctx, &tracker, &ids, heartbeat, &stop)
    });
    if peers.len() > 1 {
        register_all(ctx, tracker, &peers[1..], args)?;
    }
    let took = t.elapsed();
    println!(
        "registered {} peers ({} entries) in {:.2} s: {:.0} registrations/s",
        peers.len(),
        peers.len() * args.files,
        took.as_secs_f64(),
        peers.len() as f64 / took.as_secs_f64()
    );

    // 2. Subscribers.
    let publish = publish_endpoint(&publish, tracker);
    let subs = Subscribers::start(contexts, &publish, args.subscribers, &stop)?;
    let (prober, probe_path) = (&peers[0], |k: usize| format!("probe/{k}"));
    let mut k = 0;
    let t = Instant::now();
    // Slow joiners: publish until every subscriber has heard something.
    while subs.ready() < args.subscribers {
        if t.elapsed() > Duration::from_secs(60) {
            bail!(
                "only {} of {} subscribers connected",
                subs.ready(),
                args.subscribers
            );
        }
        prober.update(&mut client, &probe_path(k), 0)?;
        k += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{} subscribers connected in {:.2} s",
        args.subscribers,
        t.elapsed().as_secs_f64()
    );

    // 3. Queries.
    let paths: Vec<RelPath> = peers
        .iter()
        .flat_map(|p| (0..args.files).map(move |j| p.path(j)))
        .collect();
    let locate = |i: usize| TrackerRequest::Locate {
        path: paths[i % paths.len()].clone(),
        sha256: Hash::of(paths[i % paths.len()].as_str().as_bytes()),
    };
    let (n, secs) = queries(ctx, tracker, args, args.window, &locate)?;
    println!(
        "locate: {n} replies in {secs:.2} s: {:.0} requests/s",
        n as f64 / secs
    );
    // A page can hold the whole index: one in flight per thread.
    let list = |i: usize| TrackerRequest::List {
        after: (i % 2 == 1).then(|| paths[i % paths.len()].clone()),
    };
    let (n, secs) = queries(ctx, tracker, args, 1, &list)?;
    println!(
        "list (a page each): {n} replies in {secs:.2} s: {:.0} requests/s",
        n as f64 / secs
    );
    let live = match client.request(&TrackerRequest::Peers)? {
        TrackerReply::Peers { peers } => peers.len(),
        _ => 0,
    };
    println!(
        "peers the tracker still holds live: {live} of {}",
        peers.len()
    );
    // One dropped for silence comes back, as a real peer would.
    prober.register(&mut client, 0)?;

    // 4. Delivery of changes to every subscriber.
    let base = Instant::now();
    subs.expect(base);
    for c in 0..args.changes {
        let sent_ns = base.elapsed().as_nanos() as i64;
        prober.update(&mut client, &format!("timed/{c}"), sent_ns)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut lat = subs.latencies();
    let expected = args.changes * args.subscribers;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{} changes to {} subscribers: {} of {} delivered; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.changes,
        args.subscribers,
        lat.len(),
        expected,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    stop.store(true, Ordering::Relaxed);
    let _ = beats.join();
    subs.join();
    if let Some(pid) = pid {
        let (rss, cpu) = usage(pid);
        println!("tracker process: peak RSS {rss:.0} MB, {cpu:.2} CPU-seconds");
    }
    Ok(())
}

/// One simulated peer.
struct Sim {
    name: String,
    device: u64,
    /// Its version counter.
    version: AtomicU64,
}

impl Sim {
    fn new(i: usize) -> Sim {
        Sim {
            name: format!("sim-{i:05}"),
            device: rand::random(),
            version: AtomicU64::new(1),
        }
    }

    fn path(&self, j: usize) -> RelPath {
        // Only valid names are made here.
        RelPath::new(format!("{}/f{j:04}.dat", self.name)).unwrap_or_else(|_| unreachable!())
    }

    fn entry(&self, path: RelPath, mtime_ns: i64) -> FileEntry {
        let mut version = VersionVector::new();
        version.bump_at(
            &format!("{}@1", self.name),
            self.version.fetch_add(1, Ordering::Relaxed),
        );
        let sha256 = Hash::of(path.as_str().as_bytes());
        FileEntry {
            path,
            size: 100,
            mtime_ns,
            sha256,
            blocks: vec![sha256],
            version,
            deleted: false,
            modified_by: self.name.clone(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    /// Registers (again), with `files` entries.
    fn register(
        &self,
        client: &mut TrackerClient,
        files: usize,
    ) -> anyhow::Result<(String, Duration)> {
        let req = TrackerRequest::Register {
            name: self.name.clone(),
            device: self.device,
            endpoint: "tcp://127.0.0.1:9".into(),
            files: (0..files).map(|j| self.entry(self.path(j), 0)).collect(),
        };
        match client.request(&req)? {
            TrackerReply::Registered {
                publish,
                heartbeat_ms,
                ..
            } => Ok((publish, Duration::from_millis(heartbeat_ms))),
            other => bail!("registering {}: {other:?}", self.name),
        }
    }

    /// Publishes a change: a new version of `path` (made from `mtime_ns`).
    fn update(&self, client: &mut TrackerClient, path: &str, mtime_ns: i64) -> anyhow::Result<()> {
        let path = RelPath::new(path)?;
        let req = TrackerRequest::Update {
            name: self.name.clone(),
            device: self.device,
            files: vec![self.entry(path, mtime_ns)],
        };
        client.request(&req)?;
        Ok(())
    }
}

/// Registers every peer (from `--clients` threads); returns the publish
/// endpoint and heartbeat interval the tracker gave.
fn register_all(
    ctx: &Context,
    tracker: &str,
    peers: &[Sim],
    args: &Args,
) -> anyhow::Result<(String, Duration)> {
    let answer: Mutex<Option<(String, Duration)>> = Mutex::new(None);
    let chunk = peers.len().div_ceil(args.clients.max(1)).max(1);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut jobs = Vec::new();
        for group in peers.chunks(chunk) {
            let answer = &answer;
            jobs.push(s.spawn(move || -> anyhow::Result<()> {
                let mut client = TrackerClient::new(ctx, tracker, Duration::from_secs(10));
                for p in group {
                    let got = p.register(&mut client, args.files)?;
                    *answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(got);
                }
                Ok(())
            }));
        }
        for j in jobs {
            j.join()
                .map_err(|_| anyhow::anyhow!("a registering thread panicked"))??;
        }
        Ok(())
    })?;
    let got = answer.into_inner().unwrap_or_else(|e| e.into_inner());
    got.context("no peer registered")
}

/// Simulated peers whose heartbeats share one connection. The tracker
/// takes requests from its connections in turn, so with all of them on one
/// it would answer one heartbeat per round of every query client's
/// requests, where real peers each have their own.
const BEATS_PER_CONNECTION: usize = 25;

/// Sends every peer's heartbeat twice per `every` until `stop`, pipelined
/// (replies are drained, not waited for).
fn heartbeats(
    ctx: &Context,
    tracker: &str,
    ids: &[(String, u64)],
    every: Duration,
    stop: &AtomicBool,
) {
    let endpoint = zync_net::tcp(tracker);
    let groups: Vec<(&[(String, u64)], Socket)> = ids
        .chunks(BEATS_PER_CONNECTION)
        .filter_map(|g| Some((g, ctx.dealer(&endpoint).ok()?)))
        .collect();
    let drain = || {
        for (_, sock) in &groups {
            while let Ok(Some(_)) = sock.try_recv_body() {}
        }
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for (group, sock) in &groups {
            for (name, device) in *group {
                let hb = TrackerRequest::Heartbeat {
                    name: name.clone(),
                    device: *device,
                    transfers: vec![],
                    failing: 0,
                    errors: vec![],
                };
                let _ = sock.send_frames([Vec::new(), encode(&hb)]);
            }
        }
        next += every / 2;
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            drain();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `make(i)` requests from `--clients` threads for `--seconds`, each
/// with `window` in flight; returns the replies counted and the seconds.
fn queries(
    ctx: &Context,
    tracker: &str,
    args: &Args,
    window: usize,
    make: &(dyn Fn(usize) -> TrackerRequest + Sync),
) -> anyhow::Result<(u64, f64)> {
    let endpoint = zync_net::tcp(tracker);
    let replies = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut jobs = Vec::new();
        for c in 0..args.clients.max(1) {
            let (endpoint, replies) = (&endpoint, &replies);
            jobs.push(s.spawn(move || -> anyhow::Result<()> {
                let sock = ctx.dealer(endpoint)?;
                let (mut i, mut out) = (c * 7919, 0usize);
                loop {
                    let open = Instant::now() < until;
                    while open && out < window.max(1) {
                        sock.send_frames([Vec::new(), encode(&make(i))])?;
                        (i, out) = (i + 1, out + 1);
                    }
                    if out == 0 {
                        return Ok(());
                    }
                    if !sock.wait_readable(Duration::from_secs(5))? {
                        bail!("the tracker stopped answering");
                    }
                    while let Some(body) = sock.try_recv_body()? {
                        match decode::<TrackerReply>(&body) {
                            Ok(TrackerReply::Error { kind, message }) => {
                                bail!("tracker refused a query: {message} ({kind:?})")
                            }
                            Ok(_) => {
                                replies.fetch_add(1, Ordering::Relaxed);
                                out -= 1;
                            }
                            Err(e) => bail!("bad reply: {e}"),
                        }
                    }
                }
            }));
        }
        for j in jobs {
            j.join()
                .map_err(|_| anyhow::anyhow!("a query thread panicked"))??;
        }
        Ok(())
    })?;
    Ok((replies.into_inner(), t.elapsed().as_secs_f64()))
}

/// Subscribers on their own threads, each counting what it hears.
struct Subscribers {
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Subscribers that heard at least one notification.
    ready: AtomicU64,
    /// When timing started (changes carry their send time since then).
    base: Mutex<Option<Instant>>,
    /// Delivery delays of timed changes, from every subscriber.
    latencies: Mutex<Vec<Duration>>,
}

impl Subscribers {
    fn start(
        contexts: &[Context],
        publish: &str,
        n: usize,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<Subscribers> {
        let shared = Arc::new(Shared::default());
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let ctx = &contexts[1 + i / SUBS_PER_CONTEXT];
            socks.push(ctx.subscriber(publish)?);
        }
        let mut threads = Vec::new();
        while !socks.is_empty() {
            let mine: Vec<Socket> = socks.drain(..SUBS_PER_THREAD.min(socks.len())).collect();
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || listen(mine, &shared, &stop)));
        }
        Ok(Subscribers { threads, shared })
    }

    fn ready(&self) -> usize {
        self.shared.ready.load(Ordering::Relaxed) as usize
    }

    fn expect(&self, base: Instant) {
        *self.shared.base.lock().unwrap_or_else(|e| e.into_inner()) = Some(base);
    }

    fn latencies(&self) -> Vec<Duration> {
        self.shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn listen(socks: Vec<Socket>, shared: &Shared, stop: &AtomicBool) {
    let mut heard = vec![false; socks.len()];
    let mut seen: HashSet<(usize, String)> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let refs: Vec<&Socket> = socks.iter().collect();
        let Ok(ready) = zync_net::wait_any(&refs, Duration::from_millis(100)) else {
            return;
        };
        let now = Instant::now();
        let base = *shared.base.lock().unwrap_or_else(|e| e.into_inner());
        let mut got = Vec::new();
        for (k, r) in ready.into_iter().enumerate() {
            if !r {
                continue;
            }
            while let Ok(Some(body)) = socks[k].try_recv_body() {
                if !std::mem::replace(&mut heard[k], true) {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                let Ok(Notification {
                    event: Event::FileChanged { file },
                    ..
                }) = decode::<Notification>(&body)
                else {
                    continue;
                };
                let (Some(base), true) = (base, file.entry.path.as_str().starts_with("timed/"))
                else {
                    continue;
                };
                // Each change once per subscriber.
                if seen.insert((k, file.entry.path.as_str().to_owned())) {
                    let sent = base + Duration::from_nanos(file.entry.mtime_ns.max(0) as u64);
                    got.push(now.saturating_duration_since(sent));
                }
            }
        }
        if !got.is_empty() {
            shared
                .latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(got);
        }
    }
}

/// The tracker's publish endpoint as reachable from here (`*` or
/// `0.0.0.0` mean the host we reached it on).
fn publish_endpoint(given: &str, tracker: &str) -> String {
    let host = zync_net::host_of(tracker);
    let ep = zync_net::tcp(given);
    ep.replace("tcp://*:", &format!("tcp://{host}:"))
        .replace("tcp://0.0.0.0:", &format!("tcp://{host}:"))
}

/// Lets this process (and the tracker it starts) open a socket per
/// simulated connection.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Peak RSS (MB) and CPU-seconds of process `pid`.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (rss, (ticks(11) + ticks(12)) / 100.0)
}
