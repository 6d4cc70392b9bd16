//! Zync's shared test kit, used by the peer and web test suites: real
//! `zync-tracker` and `zync-peer` processes on loopback ports, each peer on
//! its own temp folder, logs captured per process; waits for conditions
//! (never fixed sleeps), fixtures, and ([`web`]) a raw HTTP client and a
//! zync-web process.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

pub mod web;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for the cluster to converge before failing:
/// generous, for a loaded two-core machine running tests side by side (a
/// late reply is not a wrong one; a change that never arrives still fails).
pub const CONVERGE: Duration = Duration::from_secs(60);

/// A workspace binary (`zync-peer`, `zync-tracker`, `zync-web`) from the
/// same target folder as this test, built on demand when a package's tests
/// run alone. Shared by the peer and web test suites.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    let _guard = BUILD.lock();
    if !path.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", name, "--bin", name]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo").success(),
            "building {name} failed"
        );
    }
    path
}

pub fn peer_bin() -> PathBuf {
    bin("zync-peer")
}

pub fn tracker_bin() -> PathBuf {
    bin("zync-tracker")
}

/// A free loopback port, for a server that must be named before it starts
/// (the tracker, which comes back on the same one after a restart).
///
/// A port from `bind(0)` is in the kernel's ephemeral range, where any
/// outgoing connection (a peer's, a CLI's) can take it between this check
/// and the server's own bind: the server then fails with "address in use".
/// So ports come from below that range, where the kernel never hands one
/// out by itself, each at most once per test process, and checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|lo| *lo > LOW + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral - LOW;
    // Test binaries run one after another, but start each at its own place.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {ephemeral}");
}

/// Writes a new cluster key into `dir` with the real `zync-peer keygen`;
/// its path.
pub fn keygen(dir: &Path) -> PathBuf {
    let key = dir.join("cluster.key");
    let out = Command::new(peer_bin())
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    key
}

/// A child process killed on drop, with its stderr in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its stderr appended to `log`, killed on drop.
    pub fn spawn_logged(cmd: Command, log: PathBuf) -> Proc {
        Proc::spawn(cmd, log)
    }

    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let f = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.stdout(Stdio::null())
            .stderr(f)
            .env("RUST_LOG", "info,zync_peer=debug");
        Proc {
            child: cmd.spawn().expect("spawn"),
            log,
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} failed");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
        t.elapsed()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Peer {
    pub name: String,
    pub dir: PathBuf,
    pub proc: Proc,
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    /// The cluster key file every process of this cluster is given
    /// (`ZYNC_KEY_FILE`), made by the real `zync-peer keygen`.
    pub key: PathBuf,
    /// Whether its processes run with `--insecure` instead (plaintext).
    pub insecure: bool,
    pub port: u16,
    pub tracker: Option<Proc>,
    /// The first's backup tracker, listed after it wherever a tracker is
    /// given (`--tracker FIRST,BACKUP`): its port, and its process while it
    /// runs.
    pub backup_port: Option<u16>,
    pub backup: Option<Proc>,
    pub peers: Vec<Peer>,
}

impl Cluster {
    /// A tracker and `n` peers named p1..pn.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_trackers(n, false)
    }

    /// A tracker, its backup (`--backup-of`), and `n` peers named p1..pn
    /// given both (`--tracker FIRST,BACKUP`), which register with the first.
    pub fn start_with_backup(n: usize) -> Cluster {
        Cluster::start_trackers(n, true)
    }

    /// A tracker and `n` peers, all run with `--insecure` (no key).
    pub fn start_insecure(n: usize) -> Cluster {
        Cluster::start_as(n, false, true)
    }

    fn start_trackers(n: usize, backup: bool) -> Cluster {
        Cluster::start_as(n, backup, false)
    }

    fn start_as(n: usize, backup: bool, insecure: bool) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let key = keygen(tmp.path());
        let mut c = Cluster {
            tmp,
            key,
            insecure,
            port: free_port(),
            tracker: None,
            backup_port: backup.then(free_port),
            backup: None,
            peers: Vec::new(),
        };
        c.start_tracker();
        if backup {
            c.start_backup();
        }
        for i in 1..=n {
            c.add_peer(&format!("p{i}"));
        }
        c.wait_peers(n);
        c
    }

    /// A socket context holding this cluster's key, for tests that talk to
    /// its processes directly.
    pub fn context(&self) -> zync_net::Context {
        let key = zync_net::ClusterKey::load(&self.key).unwrap();
        zync_net::Context::secured(&key).unwrap()
    }

    /// A command for one of the workspace's binaries with this cluster's
    /// key in its environment (or `ZYNC_INSECURE`).
    pub fn command(&self, bin: PathBuf) -> Command {
        let mut cmd = Command::new(bin);
        if self.insecure {
            cmd.env("ZYNC_INSECURE", "true");
        } else {
            cmd.env("ZYNC_KEY_FILE", &self.key);
        }
        cmd
    }

    /// The first tracker's `HOST:PORT`.
    pub fn tracker_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The second tracker's `HOST:PORT` (panics without one).
    pub fn backup_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.backup_port.expect("a cluster with a backup tracker")
        )
    }

    /// What peers and the CLI are given as `--tracker`.
    pub fn trackers(&self) -> String {
        match self.backup_port {
            Some(_) => format!("{},{}", self.tracker_addr(), self.backup_addr()),
            None => self.tracker_addr(),
        }
    }

    fn tracker_cmd(&self, addr: &str) -> Command {
        let mut cmd = self.command(tracker_bin());
        cmd.args([
            "--listen",
            addr,
            "--publish",
            "127.0.0.1:0",
            "--heartbeat-ms",
            "300",
        ]);
        cmd
    }

    pub fn start_tracker(&mut self) {
        self.start_tracker_with(&[]);
    }

    /// Starts the first tracker (again) with extra environment variables.
    pub fn start_tracker_with(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.tracker_cmd(&self.tracker_addr());
        cmd.envs(env.iter().copied());
        self.tracker = Some(Proc::spawn(cmd, self.tmp.path().join("tracker.log")));
    }

    /// Starts the second tracker (again), as the first's backup
    /// (`--backup-of`): it copies the first's index and serves only when
    /// the first is lost.
    pub fn start_backup(&mut self) {
        let mut cmd = self.tracker_cmd(&self.backup_addr());
        cmd.args(["--backup-of", &self.tracker_addr()]);
        self.backup = Some(Proc::spawn(cmd, self.tmp.path().join("backup.log")));
    }

    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn peer_cmd(&self, name: &str) -> Command {
        self.peer_cmd_at(name, "127.0.0.1:0", None)
    }

    /// `zync-peer run` for `name`, serving on `listen`, reached at
    /// `advertise` if given.
    fn peer_cmd_at(&self, name: &str, listen: &str, advertise: Option<&str>) -> Command {
        let mut cmd = self.command(peer_bin());
        cmd.args(["--tracker", &self.trackers(), "run", "--listen", listen]);
        if let Some(a) = advertise {
            cmd.args(["--advertise", a]);
        }
        cmd.args(["--name", name, "--dir"]).arg(self.dir_of(name));
        cmd
    }

    pub fn add_peer(&mut self, name: &str) -> usize {
        self.add_peer_with(name, &[])
    }

    /// Adds a peer run with extra environment variables.
    pub fn add_peer_with(&mut self, name: &str, env: &[(&str, &str)]) -> usize {
        let mut cmd = self.peer_cmd(name);
        cmd.envs(env.iter().copied());
        self.spawn_peer(name, cmd)
    }

    /// Starts `cmd` as the peer `name` (its log beside the others).
    fn spawn_peer(&mut self, name: &str, cmd: Command) -> usize {
        let proc = Proc::spawn(cmd, self.tmp.path().join(format!("{name}.log")));
        self.peers.push(Peer {
            name: name.into(),
            dir: self.dir_of(name),
            proc,
        });
        self.peers.len() - 1
    }

    /// Restarts peer `i` (after it was killed).
    pub fn restart_peer(&mut self, i: usize) {
        self.restart_peer_with(i, &[]);
    }

    /// Restarts peer `i` with extra environment variables.
    pub fn restart_peer_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let name = self.peers[i].name.clone();
        self.peers[i].proc.kill();
        let mut cmd = self.peer_cmd(&name);
        cmd.envs(env.iter().copied());
        self.peers[i].proc = Proc::spawn(cmd, self.tmp.path().join(format!("{name}.log")));
    }

    /// How many times peer `i` has registered with a tracker (its log, across restarts).
    pub fn registrations(&self, i: usize) -> usize {
        self.peers[i]
            .proc
            .log_text()
            .matches("registered with tracker")
            .count()
    }

    /// Waits until peer `i` has registered at least `n` times.
    pub fn wait_registrations(&self, i: usize, n: usize) {
        wait_for(
            CONVERGE,
            || self.registrations(i) >= n,
            &format!("{} registered ({n})", self.peers[i].name),
            self,
        );
    }

    pub fn dir(&self, i: usize) -> &Path {
        &self.peers[i].dir
    }

    /// Puts `body` at `rel` in peer `i`'s folder whole: written beside the
    /// folders and renamed in. A file written in place can be seen (and
    /// synced) half-written when the writer pauses, as a loaded machine
    /// makes it; a test that counts what one version's sync fetched needs
    /// there to be no version in between.
    pub fn put_whole(&self, i: usize, rel: &str, body: &[u8]) {
        let staged = self
            .tmp
            .path()
            .join(format!(".staged-{}", rel.replace('/', "_")));
        std::fs::write(&staged, body).expect("write the staged file");
        std::fs::rename(&staged, self.dir(i).join(rel)).expect("rename it into the folder");
    }

    /// Runs a one-shot `zync-peer` command against this cluster's trackers.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_at(&self.trackers(), args)
    }

    /// Runs a one-shot `zync-peer` command with `--tracker TRACKERS`.
    pub fn cli_at(&self, trackers: &str, args: &[&str]) -> std::process::Output {
        self.command(peer_bin())
            .arg("--tracker")
            .arg(trackers)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    /// The names of the live peers the tracker at `addr` knows (`None` if
    /// it does not answer).
    pub fn peers_at(&self, addr: &str) -> Option<Vec<String>> {
        let out = self.cli_at(addr, &["peers", "--json"]);
        if !out.status.success() {
            return None;
        }
        let v = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?;
        let mut names: Vec<String> = v
            .as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Some(names)
    }

    pub fn wait_peers(&self, n: usize) {
        wait_for(
            CONVERGE,
            || {
                self.peers_at(&self.tracker_addr())
                    .is_some_and(|p| p.len() == n)
            },
            &format!("{n} live peers"),
            self,
        );
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tracker {
            s += &format!("==== tracker\n{}\n", tail(&t.log_text()));
        }
        if let Some(t) = &self.backup {
            s += &format!("==== backup tracker\n{}\n", tail(&t.log_text()));
        }
        for p in &self.peers {
            s += &format!("==== {}\n{}\n", p.name, tail(&p.proc.log_text()));
        }
        s
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits until `cond` holds, or fails the test with the cluster's logs.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool, what: &str, c: &Cluster) {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}\n{}",
        c.logs()
    );
}

/// The synced files under `dir` (state folder left out): path → bytes.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for e in walk(dir) {
        let rel = e.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if let Ok(bytes) = std::fs::read(&e) {
            out.insert(rel, bytes);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == ".zync") {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Fails if a folder snapshot holds a conflict copy (`NAME.conflict-…`).
pub fn assert_no_conflict_copy(snap: &std::collections::BTreeMap<String, Vec<u8>>) {
    let copies: Vec<&String> = snap.keys().filter(|k| k.contains(".conflict-")).collect();
    assert!(copies.is_empty(), "conflict copies: {copies:?}");
}

/// Waits until every peer's folder holds exactly the same files and bytes.
pub fn wait_identical(c: &Cluster, what: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    wait_identical_within(CONVERGE, c, what)
}

/// [`wait_identical`] with its own bound, for tests that move thousands of files.
pub fn wait_identical_within(
    bound: Duration,
    c: &Cluster,
    what: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut last = Default::default();
    wait_for(
        bound,
        || {
            let first = snapshot(c.dir(0));
            let same = (1..c.peers.len()).all(|i| snapshot(c.dir(i)) == first);
            last = first;
            same
        },
        what,
        c,
    );
    last
}

/// Writes `n` small files into `dir`, 100 a folder: `dNN/fNNNNN.txt`,
/// holding `file N` and a newline.
pub fn write_small_files(dir: &Path, n: usize) {
    for i in 0..n {
        let d = dir.join(format!("d{:02}", i / 100));
        std::fs::create_dir_all(&d).expect("make a folder");
        std::fs::write(d.join(format!("f{i:05}.txt")), format!("file {i}\n")).expect("write");
    }
}

/// Waits until the tracker lists `n` files.
pub fn wait_listed(c: &Cluster, n: usize) {
    wait_for(
        CONVERGE,
        || {
            let ls = c.cli(&["ls", "--json"]);
            serde_json::from_slice::<Vec<serde_json::Value>>(&ls.stdout).is_ok_and(|v| v.len() == n)
        },
        &format!("the tracker to list {n} files"),
        c,
    );
}

/// Waits until file `rel` in every peer holds `bytes`.
pub fn wait_file_everywhere(c: &Cluster, rel: &str, bytes: &[u8]) {
    wait_for(
        CONVERGE,
        || {
            (0..c.peers.len())
                .all(|i| std::fs::read(c.dir(i).join(rel)).ok().as_deref() == Some(bytes))
        },
        &format!("{rel} everywhere"),
        c,
    );
}

/// Waits until peer `i`'s index *as saved on disk* records exactly the files
/// now in its folder, with their content: after this, killing the peer
/// loses nothing it has installed or seen.
pub fn wait_index_saved(c: &Cluster, i: usize) {
    let state = c.dir(i).join(zync_proto::STATE_DIR_NAME);
    wait_for(
        CONVERGE,
        || {
            // The running peer holds its database open: read a copy. A copy
            // taken in the middle of a commit may not open, or show the
            // state before it: either way it is read again.
            use zync_peer::index::IndexStore;
            let Ok(copy) = tempfile::tempdir() else {
                return false;
            };
            if std::fs::copy(state.join("index.redb"), copy.path().join("index.redb")).is_err() {
                return false;
            }
            let Ok(index) = zync_peer::index::LocalIndex::load(copy.path()) else {
                return false;
            };
            let saved: std::collections::BTreeMap<String, zync_proto::Hash> = index
                .entries()
                .filter(|le| !le.entry.deleted && le.stat.is_some())
                .map(|le| (le.entry.path.as_str().to_owned(), le.entry.sha256))
                .collect();
            let disk: std::collections::BTreeMap<String, zync_proto::Hash> = snapshot(c.dir(i))
                .into_iter()
                .map(|(p, b)| (p, zync_proto::Hash::of(&b)))
                .collect();
            saved == disk
        },
        &format!("{}'s index saved", c.peers[i].name),
        c,
    );
}

/// Waits until `rel` is gone from every peer.
pub fn wait_gone_everywhere(c: &Cluster, rel: &str) {
    wait_for(
        CONVERGE,
        || (0..c.peers.len()).all(|i| !c.dir(i).join(rel).exists()),
        &format!("{rel} gone"),
        c,
    );
}

/// Every file in the staging folder (`.zync/tmp`) of the folder `dir`, its
/// fetch workers' folders included, by its name there: what a download or
/// an upload left behind. The folders themselves do not count.
pub fn staged_files(dir: &Path) -> Vec<String> {
    fn walk(at: &Path, under: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(at).into_iter().flatten().flatten() {
            let name = format!("{under}{}", e.file_name().to_string_lossy());
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), &format!("{name}/"), out),
                _ => out.push(name),
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &dir.join(zync_proto::STATE_DIR_NAME).join("tmp"),
        "",
        &mut out,
    );
    out
}

/// The length of the largest partial download (`.zync/tmp/*.part`) of the
/// folder `dir` (0 when there is none).
pub fn partial_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(zync_proto::STATE_DIR_NAME).join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// The last `synced` line for `path` in peer `i`'s log.
pub fn synced_line(c: &Cluster, i: usize, path: &str) -> Option<String> {
    c.peers[i]
        .proc
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("event=synced") && l.contains(&format!(" path={path} ")))
        .map(str::to_owned)
}

/// The value of field `name` in a log line (`… name=value …`).
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split(' ').next()
}

/// Parses a Prometheus text-format page (with the `prometheus-parse`
/// crate, a parser of its own, not ours) into `name{label="v",...}` →
/// value; labels sorted by name. Panics on a page it cannot parse.
pub fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text page");
    let mut out = std::collections::BTreeMap::new();
    for s in scrape.samples {
        let mut labels: Vec<_> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

/// GETs `http://addr/metrics` and parses it ([`parse_metrics`]); `None`
/// while nothing answers there.
pub fn scrape(addr: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    scrape_with(addr, "")
}

/// [`scrape`] with extra request header lines (a credential).
pub fn scrape_with(addr: &str, extra: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let resp = web::try_get(addr, "/metrics", extra).ok()?;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let ctype = resp.header("content-type").unwrap_or("");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    Some(parse_metrics(
        std::str::from_utf8(&resp.body).expect("UTF-8"),
    ))
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A TCP relay on a free loopback port that forwards every connection to
/// `target` and records every byte that crosses it, both ways: a packet
/// capture without privileges, for tests of what travels on the wire.
pub struct Tap {
    pub port: u16,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Tap {
    pub fn start(target: String) -> Tap {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let record = record.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            record.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Tap { port, seen }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the recorded bytes contain `needle` anywhere.
    pub fn saw(&self, needle: &[u8]) -> bool {
        self.seen
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    pub fn bytes(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A TCP relay on a free loopback port to `target` whose replies (bytes
/// from `target` back to the client) flow only while it has budget: it
/// lets through [`Valve::start`]'s `budget` bytes, then holds the rest
/// until [`Valve::open`]. A download through it stops part-way, for as
/// long as a test needs, without stopping any process.
pub struct Valve {
    pub port: u16,
    budget: std::sync::Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
}

impl Valve {
    pub fn start(target: String, budget: u64) -> Valve {
        use std::io::{Read, Write};
        use std::sync::{Arc, Condvar, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Arc::new((Mutex::new(budget), Condvar::new()));
        let g = gate.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to, metered) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        false,
                    ),
                    (server, client, true),
                ] {
                    let g = g.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            let mut sent = 0;
                            while sent < n {
                                let mut allowed = n - sent;
                                if metered {
                                    let (lock, cv) = &*g;
                                    let mut left = lock.lock().unwrap();
                                    while *left == 0 {
                                        left = cv.wait(left).unwrap();
                                    }
                                    allowed = allowed.min(*left as usize);
                                    *left -= allowed as u64;
                                }
                                if to.write_all(&buf[sent..sent + allowed]).is_err() {
                                    return;
                                }
                                sent += allowed;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Valve { port, budget: gate }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lets everything through from now on.
    pub fn open(&self) {
        let (lock, cv) = &*self.budget;
        *lock.lock().unwrap() = u64::MAX;
        cv.notify_all();
    }
}

impl Cluster {
    /// Adds a peer that serves on `listen` and tells the cluster to reach
    /// it at `advertise` (a [`Valve`] or [`Tap`] in front of it).
    pub fn add_peer_advertised(&mut self, name: &str, listen: &str, advertise: &str) -> usize {
        let cmd = self.peer_cmd_at(name, listen, Some(advertise));
        self.spawn_peer(name, cmd)
    }
}

/// A member of the cluster (it has the key) that registers under `name` and
/// announces whatever entries it likes, as a hostile member would.
pub struct Member {
    ctx: zync_net::Context,
    tracker: String,
    name: String,
}

impl Member {
    pub fn join(c: &Cluster, name: &str) -> Member {
        let m = Member {
            ctx: c.context(),
            tracker: format!("tcp://{}", c.tracker_addr()),
            name: name.into(),
        };
        let reg = zync_proto::TrackerRequest::Register {
            name: name.into(),
            device: 77,
            endpoint: "tcp://127.0.0.1:1".into(),
            files: vec![],
        };
        let reply = ask_tracker(&m.ctx, &m.tracker, &reg);
        assert!(
            matches!(reply, zync_proto::TrackerReply::Registered { .. }),
            "{reply:?}"
        );
        m
    }

    /// Announces `files` as changed; returns the tracker's reply.
    pub fn announce(&self, files: Vec<zync_proto::FileEntry>) -> zync_proto::TrackerReply {
        let up = zync_proto::TrackerRequest::Update {
            name: self.name.clone(),
            device: 77,
            files,
        };
        ask_tracker(&self.ctx, &self.tracker, &up)
    }
}

/// The version `ls --json` gives `path` (its `{replica:counter,...}` text),
/// if the cluster lists it as a live file.
pub fn listed_version(c: &Cluster, path: &str) -> Option<zync_proto::VersionVector> {
    let o = c.cli(&["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    let row = v.as_array()?.iter().find(|r| r["path"] == path)?;
    let text = row["version"].as_str()?;
    let mut version = zync_proto::VersionVector::new();
    for pair in text.trim_matches(|c| c == '{' || c == '}').split(',') {
        let (replica, n) = pair.rsplit_once(':')?;
        version.bump_at(replica, n.parse().ok()?);
    }
    Some(version)
}

/// Sends `req` to the tracker at `endpoint` and decodes its reply.
fn ask_tracker(
    ctx: &zync_net::Context,
    endpoint: &str,
    req: &zync_proto::TrackerRequest,
) -> zync_proto::TrackerReply {
    let reply = zync_net::ask(
        ctx,
        endpoint,
        &zync_proto::encode(req),
        std::time::Duration::from_secs(30),
    )
    .expect("the tracker answers");
    zync_proto::decode(&reply).expect("a tracker reply")
}
