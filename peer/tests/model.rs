//! Randomized model-based test: real tracker and peers, random operations
//! on random peers, faults injected, and every folder checked against a
//! model of what it must hold.
//!
//! A driver keeps the model (path -> bytes) and applies random operations
//! to random peers' folders: create, overwrite, append, delete, rename
//! (into new folders), rename a folder with files inside; empty, small and
//! multi-MiB files. Meanwhile it freezes a peer (SIGSTOP), kills one
//! (SIGKILL) and restarts it, and restarts the tracker. Now and then a
//! hostile member acts too: it puts a symlink to a folder outside into a
//! peer's folder and announces a deletion of a file through it, and it
//! announces a shared file with a counter at `u64::MAX` (which the tracker
//! must refuse). The outside folder must come through untouched, and the
//! file whose counter was forged must go on syncing.
//!
//! Operations on shared paths are causally ordered: each waits until every
//! running peer shows it, so no conflict is ever legitimate. A frozen or
//! dead peer is edited meanwhile only under its own folder `own-<name>/`,
//! which no other peer touches.
//!
//! The oracle: every change reaches every running peer within a bound
//! ([`BOUND`], [`BOUND_AFTER_FAULT`] right after a restart), and at the end
//! every folder equals the model exactly: no missing, extra or wrong file,
//! no conflict copy, no temp file left.
//!
//! Knobs (environment): `ZYNC_MODEL_SEED` runs one seed (printed on
//! failure, so a failure can be replayed); `ZYNC_MODEL_SEEDS` how many
//! random seeds otherwise (default 3); `ZYNC_MODEL_SECONDS` how long each
//! runs (default 20). `bench/soak.py` runs it for many minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zync_testkit::*;

/// How long a change may take to reach every running peer.
const BOUND: Duration = Duration::from_secs(10);
/// The same, within [`FAULT_WINDOW`] of a peer or tracker restart (a peer
/// registers again with backoff; a late joiner takes a snapshot).
const BOUND_AFTER_FAULT: Duration = Duration::from_secs(30);
const FAULT_WINDOW: Duration = Duration::from_secs(10);

const PEERS: usize = 3;

/// Most files in the model at once.
const MAX_FILES: usize = 150;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Frozen,
    Dead,
}

struct Driver {
    seed: u64,
    rng: StdRng,
    c: Cluster,
    state: [State; PEERS],
    model: BTreeMap<String, Vec<u8>>,
    next_name: u64,
    last_fault: Instant,
    started: Instant,
    /// What was done, for the failure report.
    log: Vec<String>,
    ops: u64,
    faults: u64,
    waits_ms: Vec<u64>,
    /// A folder outside every peer's, linked into them by hostile steps.
    outside: tempfile::TempDir,
    hostile: u64,
}

/// What the outside folder holds, which no hostile step may change.
const OUTSIDE_SECRET: &[u8] = b"outside the synced folder";

impl Driver {
    fn new(seed: u64) -> Driver {
        Driver {
            seed,
            rng: StdRng::seed_from_u64(seed),
            c: Cluster::start(PEERS),
            state: [State::Running; PEERS],
            model: BTreeMap::new(),
            next_name: 0,
            last_fault: Instant::now(),
            started: Instant::now(),
            log: Vec::new(),
            ops: 0,
            faults: 0,
            waits_ms: Vec::new(),
            outside: {
                let d = tempfile::tempdir().unwrap();
                fs::write(d.path().join("secret"), OUTSIDE_SECRET).unwrap();
                d
            },
            hostile: 0,
        }
    }

    /// A hostile member's step on running peer `i`: a symlink to the
    /// outside folder in its shared folder, and a deletion announced
    /// through it; a shared file announced with a counter at `u64::MAX`.
    fn hostile(&mut self, i: usize) {
        self.hostile += 1;
        let n = self.hostile;
        let link = format!("shared/lnk-{n}");
        let at = self.c.dir(i).join(&link);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(self.outside.path(), &at).unwrap();
        let evil = Member::join(&self.c, &format!("evil-{n}"));
        let mut old = zync_proto::VersionVector::new();
        old.bump(&format!("evil-{n}"));
        let tombstone = zync_proto::FileEntry {
            path: zync_proto::RelPath::new(format!("{link}/secret")).unwrap(),
            size: 0,
            mtime_ns: 1,
            sha256: zync_proto::Hash::EMPTY,
            blocks: vec![],
            version: old,
            deleted: true,
            modified_by: format!("evil-{n}"),
            lengths: vec![],
            mode: None,
        };
        let reply = evil.announce(vec![tombstone]);
        self.note(format!(
            "p{} symlink {link} -> outside; evil-{n} deletes {link}/secret: {reply:?}",
            i + 1
        ));
        let shared = self.paths_under("shared/");
        if shared.is_empty() {
            return;
        }
        let p = shared[self.rng.gen_range(0..shared.len())].clone();
        let Some(mut version) = listed_version(&self.c, &p) else {
            return;
        };
        let Some(victim) = version.iter().next().map(|(r, _)| r.to_owned()) else {
            return;
        };
        version.bump_at(&victim, u64::MAX);
        let b = &self.model[&p];
        let (blocks, lengths) = zync_peer::hashing::chunks_of(b);
        let forged = zync_proto::FileEntry {
            path: zync_proto::RelPath::new(p.clone()).unwrap(),
            size: b.len() as u64,
            mtime_ns: 1,
            sha256: zync_proto::Hash::of(b),
            blocks,
            version,
            deleted: false,
            modified_by: format!("evil-{n}"),
            lengths,
            mode: None,
        };
        let reply = evil.announce(vec![forged]);
        self.note(format!(
            "evil-{n} announces {p} with {victim} at u64::MAX: {reply:?}"
        ));
        if !matches!(
            reply,
            zync_proto::TrackerReply::Error {
                kind: zync_proto::ErrorKind::Invalid,
                ..
            }
        ) {
            self.fail(&format!("a counter at u64::MAX was taken in: {reply:?}"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        // Keep every whole log and the operation list for a post-mortem.
        let keep = std::env::temp_dir().join(format!("zync-model-failed-{}", self.seed));
        let _ = fs::create_dir_all(&keep);
        for e in fs::read_dir(self.c.tmp.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = fs::copy(e.path(), keep.join(e.file_name()));
            }
        }
        let _ = fs::write(keep.join("operations.txt"), self.log.join("\n"));
        let tail: Vec<&String> = self.log.iter().rev().take(40).rev().collect();
        panic!(
            "model test failed (replay with ZYNC_MODEL_SEED={}; whole logs in {}): {what}\nlast operations:\n  {}\n{}",
            self.seed,
            keep.display(),
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            self.c.logs()
        );
    }

    fn note(&mut self, s: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.log.push(format!("{at:>7.2}s {s}"));
    }

    fn running(&self) -> Vec<usize> {
        (0..PEERS)
            .filter(|i| self.state[*i] == State::Running)
            .collect()
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        let depth = self.rng.gen_range(0..3);
        let mut p = prefix.to_owned();
        for _ in 0..depth {
            p += &format!("d{}/", self.rng.gen_range(0..4));
        }
        format!("{p}f{}.dat", self.next_name)
    }

    fn content(&mut self) -> Vec<u8> {
        let len = match self.rng.gen_range(0..100) {
            0..=9 => 0,
            10..=39 => self.rng.gen_range(1..200),
            40..=79 => self.rng.gen_range(200..20_000),
            80..=95 => self.rng.gen_range(20_000..600_000),
            _ => self.rng.gen_range(1_000_000..4_000_000),
        };
        data(len, self.rng.gen())
    }

    /// Paths of the model under `prefix`.
    fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.model
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// One random operation on peer `i`'s folder, under `prefix`; returns
    /// the paths it changed.
    fn operate(&mut self, i: usize, prefix: &str) -> Vec<String> {
        let dir = self.c.dir(i).to_path_buf();
        let existing = self.paths_under(prefix);
        let pick = self.rng.gen_range(0..100);
        // Creates keep the folder from emptying; a cap keeps a long soak's
        // folders (re-read on every check) from growing without end.
        if existing.is_empty() || (pick < 25 && self.model.len() < MAX_FILES) {
            let p = self.fresh(prefix);
            let b = self.content();
            write(&dir, &p, &b);
            self.note(format!("p{} create {p} ({} B)", i + 1, b.len()));
            self.model.insert(p.clone(), b);
            return vec![p];
        }
        let p = existing[self.rng.gen_range(0..existing.len())].clone();
        match pick {
            25..=44 => {
                let b = self.content();
                write(&dir, &p, &b);
                self.note(format!("p{} overwrite {p} ({} B)", i + 1, b.len()));
                self.model.insert(p.clone(), b);
                vec![p]
            }
            45..=59 => {
                let extra = data(self.rng.gen_range(1..5000), self.rng.gen());
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join(&p))
                    .unwrap();
                std::io::Write::write_all(&mut f, &extra).unwrap();
                self.note(format!("p{} append {p} (+{} B)", i + 1, extra.len()));
                self.model.get_mut(&p).unwrap().extend_from_slice(&extra);
                vec![p]
            }
            60..=74 => {
                fs::remove_file(dir.join(&p)).unwrap();
                self.note(format!("p{} delete {p}", i + 1));
                self.model.remove(&p);
                vec![p]
            }
            75..=91 => {
                let to = self.fresh(prefix);
                let target = dir.join(&to);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                fs::rename(dir.join(&p), &target).unwrap();
                self.note(format!("p{} rename {p} -> {to}", i + 1));
                let b = self.model.remove(&p).unwrap();
                self.model.insert(to.clone(), b);
                vec![p, to]
            }
            _ => {
                // A folder renamed with the files inside it.
                let Some((folder, _)) = p.strip_prefix(prefix).and_then(|r| r.split_once('/'))
                else {
                    return self.operate(i, prefix);
                };
                let from = format!("{prefix}{folder}");
                self.next_name += 1;
                let to = format!("{prefix}moved{}", self.next_name);
                fs::rename(dir.join(&from), dir.join(&to)).unwrap();
                self.note(format!("p{} rename folder {from} -> {to}", i + 1));
                let mut changed = Vec::new();
                for old in self.paths_under(&format!("{from}/")) {
                    let b = self.model.remove(&old).unwrap();
                    let new = format!("{to}{}", &old[from.len()..]);
                    self.model.insert(new.clone(), b);
                    changed.push(old);
                    changed.push(new);
                }
                changed
            }
        }
    }

    /// True when peer `i`'s folder shows the model at `paths`.
    fn shows(&self, i: usize, paths: &[String]) -> bool {
        let dir = self.c.dir(i);
        paths
            .iter()
            .all(|p| fs::read(dir.join(p)).ok().as_ref() == self.model.get(p))
    }

    fn bound(&self) -> Duration {
        if self.last_fault.elapsed() < FAULT_WINDOW {
            BOUND_AFTER_FAULT
        } else {
            BOUND
        }
    }

    /// Waits until every running peer shows the model at `paths`.
    fn wait_shown(&mut self, paths: &[String]) {
        let (t, bound) = (Instant::now(), self.bound());
        while !self.running().into_iter().all(|i| self.shows(i, paths)) {
            if t.elapsed() > bound {
                let lagging: Vec<String> = self
                    .running()
                    .into_iter()
                    .filter(|i| !self.shows(*i, paths))
                    .map(|i| format!("p{}", i + 1))
                    .collect();
                self.fail(&format!("{paths:?} not on {lagging:?} within {bound:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.waits_ms.push(t.elapsed().as_millis() as u64);
    }

    /// Waits until every running peer's folder equals the model exactly.
    fn wait_converged(&mut self, what: &str) {
        let t = Instant::now();
        loop {
            let bad: Vec<usize> = self
                .running()
                .into_iter()
                .filter(|i| !self.equals_model(*i))
                .collect();
            if bad.is_empty() {
                return;
            }
            if t.elapsed() > BOUND_AFTER_FAULT {
                let i = bad[0];
                let snap = snapshot(self.c.dir(i));
                let missing: Vec<&String> = self
                    .model
                    .keys()
                    .filter(|k| !snap.contains_key(*k))
                    .collect();
                let extra: Vec<&String> = snap
                    .keys()
                    .filter(|k| !self.model.contains_key(*k))
                    .collect();
                let wrong: Vec<&String> = snap
                    .iter()
                    .filter(|(k, v)| self.model.get(*k).is_some_and(|m| m != *v))
                    .map(|(k, _)| k)
                    .collect();
                self.fail(&format!(
                    "{what}: p{} differs from the model: missing {missing:?}, extra {extra:?}, wrong {wrong:?}",
                    i + 1
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn equals_model(&self, i: usize) -> bool {
        snapshot(self.c.dir(i)) == self.model
    }

    /// Maybe injects a fault, or ends one.
    fn fault(&mut self) {
        let pick = self.rng.gen_range(0..100);
        let down: Vec<usize> = (0..PEERS)
            .filter(|i| self.state[*i] != State::Running)
            .collect();
        if let Some(&i) = down.first() {
            // Bring it back after a while.
            if pick < 15 {
                match self.state[i] {
                    State::Frozen => {
                        self.c.peers[i].proc.signal("CONT");
                        self.note(format!("p{} thawed", i + 1));
                    }
                    State::Dead => {
                        self.c.restart_peer(i);
                        self.note(format!("p{} restarted", i + 1));
                    }
                    State::Running => {}
                }
                self.state[i] = State::Running;
                self.last_fault = Instant::now();
                self.wait_converged("after a peer came back");
            }
            return;
        }
        match pick {
            0..=3 => {
                let i = self.rng.gen_range(0..PEERS);
                self.c.peers[i].proc.signal("STOP");
                self.state[i] = State::Frozen;
                self.note(format!("p{} frozen", i + 1));
            }
            4..=7 => {
                let i = self.rng.gen_range(0..PEERS);
                self.c.peers[i].proc.kill();
                self.state[i] = State::Dead;
                self.note(format!("p{} killed", i + 1));
            }
            8..=9 => {
                self.c.tracker.as_mut().unwrap().kill();
                if self.rng.gen_bool(0.5) {
                    std::thread::sleep(Duration::from_millis(self.rng.gen_range(0..1500)));
                }
                self.c.start_tracker();
                self.note("tracker restarted".into());
            }
            _ => return,
        }
        self.faults += 1;
        self.last_fault = Instant::now();
    }

    fn step(&mut self) {
        self.fault();
        let running = self.running();
        let (i, prefix) = match (0..PEERS).find(|i| self.state[*i] != State::Running) {
            // A peer that is down edits only its own folder, now and then.
            Some(d) if self.rng.gen_bool(0.3) => (d, format!("own-p{}/", d + 1)),
            _ => {
                let i = running[self.rng.gen_range(0..running.len())];
                if self.rng.gen_bool(0.2) {
                    (i, format!("own-p{}/", i + 1))
                } else {
                    (i, "shared/".to_owned())
                }
            }
        };
        if self.state[i] == State::Running && self.rng.gen_range(0..100) < 3 {
            self.hostile(i);
        }
        let changed = self.operate(i, &prefix);
        self.ops += 1;
        if self.state[i] == State::Running {
            self.wait_shown(&changed);
        }
    }

    fn finish(&mut self) {
        for i in 0..PEERS {
            match self.state[i] {
                State::Frozen => self.c.peers[i].proc.signal("CONT"),
                State::Dead => self.c.restart_peer(i),
                State::Running => continue,
            }
            self.state[i] = State::Running;
            self.last_fault = Instant::now();
        }
        self.wait_converged("at the end");
        let outside: Vec<_> = fs::read_dir(self.outside.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let secret = fs::read(self.outside.path().join("secret")).ok();
        if outside.len() != 1 || secret.as_deref() != Some(OUTSIDE_SECRET) {
            self.fail(&format!(
                "the folder outside was changed through a symlink: {outside:?}, secret {secret:?}"
            ));
        }
        for i in 0..PEERS {
            let left = staged_files(self.c.dir(i));
            if !left.is_empty() {
                self.fail(&format!("p{} left temp files: {left:?}", i + 1));
            }
        }
    }
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run(seed: u64, secs: u64) {
    let mut d = Driver::new(seed);
    let t = Instant::now();
    let mut report = t + Duration::from_secs(60);
    while t.elapsed() < Duration::from_secs(secs) {
        d.step();
        if Instant::now() >= report {
            report += Duration::from_secs(60);
            println!(
                "model seed={seed} at={}s ops={} faults={} files={}",
                t.elapsed().as_secs(),
                d.ops,
                d.faults,
                d.model.len()
            );
        }
    }
    d.finish();
    let mut w = d.waits_ms.clone();
    w.sort_unstable();
    let pct = |q: f64| {
        w.get(((w.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "model seed={seed} seconds={secs} ops={} faults={} hostile={} files={} converge_ms_median={} converge_ms_p99={} converge_ms_max={} divergence=none",
        d.ops,
        d.faults,
        d.hostile,
        d.model.len(),
        pct(0.5),
        pct(0.99),
        w.last().copied().unwrap_or(0)
    );
}

#[test]
fn random_operations_and_faults_leave_every_folder_equal_to_the_model() {
    let secs = env_u64("ZYNC_MODEL_SECONDS").unwrap_or(20);
    let seeds: Vec<u64> = match env_u64("ZYNC_MODEL_SEED") {
        Some(s) => vec![s],
        None => {
            let n = env_u64("ZYNC_MODEL_SEEDS").unwrap_or(3);
            (0..n).map(|_| rand::random::<u32>() as u64).collect()
        }
    };
    println!("model seeds {seeds:?} ({secs} s each)");
    for seed in seeds {
        run(seed, secs);
    }
}
