//! The Zync peer: keeps one folder identical with the rest of the cluster.
//!
//! [`run`] starts the parts, each on its own thread with its own sockets:
//! - the [`server`] answers other peers' block requests from the folder;
//! - the [`watch`]er (raw `notify` events, debounced per path) reports
//!   paths to look at again;
//! - the [`link`]s subscribe to the tracker's notifications and heartbeat it;
//! - a bounded pool of fetch workers pulls versions ([`transfer`]);
//! - the [`engine`] carries out every decision, which [`decide`] makes as
//!   pure functions; the [`folder`] it owns is the only writer of the local
//!   [`index`] and of what the server may serve.
//!
//! The one-shot CLI commands (`ls`, `peers`, `get`) live in [`cli`], on top
//! of the [`client`], which is also what zync-web uses.
//! Sockets come from `zync-net`, the only crate that touches ZeroMQ.

pub mod cli;
pub mod client;
pub mod decide;
pub mod downloads;
pub mod engine;
pub mod folder;
pub mod fsops;
pub mod hashing;
pub mod ignore;
pub mod index;
pub mod link;
pub mod metrics;
pub mod server;
pub mod session;
pub mod transfer;
pub mod versions;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use tracing::{info, warn};
use zync_net::{self as net, Shutdown};
use zync_proto::STATE_DIR_NAME;

use crate::engine::{Engine, Input, Job, Setup};
use crate::link::LinkEvent;
use crate::transfer::Fetcher;

/// How a peer is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The folder to keep in sync (created if missing).
    pub dir: PathBuf,
    /// Tracker request endpoint (`HOST:PORT`).
    pub tracker: String,
    /// Where the block server binds (`HOST:PORT`, port 0 picks one).
    pub listen: String,
    /// What other peers should connect to; derived from `listen` if unset.
    pub advertise: Option<String>,
    /// This peer's name, unique in the cluster.
    pub name: String,
    /// Concurrent downloads.
    pub workers: usize,
    /// Downloads that may wait before the next page of the cluster's index
    /// is fetched ([`DEFAULT_BACKLOG`]): what bounds a late joiner's memory.
    pub backlog: usize,
    /// Quiet time before a changed file is looked at.
    pub debounce: Duration,
    /// How often the whole folder is scanned behind the watcher, to catch a
    /// change it missed ([`DEFAULT_RESCAN`]; zero: never).
    pub rescan: Duration,
    /// How long what a remote change replaces or deletes is kept in
    /// `.zync/versions/` ([`versions::DEFAULT_KEEP`]; zero: not kept).
    pub keep_versions: Duration,
    /// The sockets' context: secured with the cluster key, or plaintext
    /// (`--insecure`).
    pub context: net::Context,
    /// Receives every cluster notification the peer applies, and word of
    /// each index snapshot it applies whole (for dashboards). A full
    /// channel drops them rather than slowing the peer.
    pub observer: Option<crossbeam_channel::Sender<Observed>>,
}

/// What a peer tells its [`Config::observer`].
#[derive(Debug, Clone)]
pub enum Observed {
    /// A notification, applied in sequence.
    Note(Box<zync_proto::Notification>),
    /// An index snapshot was applied whole: what changed since the last
    /// notification passed on came in it, not as notifications (after a
    /// gap, or registering again with a restarted or other tracker), so
    /// anything derived from the notifications should be taken again.
    Snapshot,
}

/// The default [`Config::backlog`]: about a second of small files, so the
/// workers never run dry, and a few MB of queue whatever the size of the
/// cluster's index.
pub const DEFAULT_BACKLOG: usize = 8_192;

/// The default [`Config::rescan`] interval. A scan stats every file and
/// hashes only the ones whose stat changed, so it is cheap; what it finds
/// is logged as `event=missed_change`.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(300);

/// Errors that stop the peer from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The folder or its state folder is unusable.
    #[error("folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The index could not be loaded.
    #[error(transparent)]
    Index(#[from] index::IndexError),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Socket {
        /// What failed.
        what: String,
        /// The libzmq error.
        source: net::Error,
    },
    /// The folder watcher could not start.
    #[error("watching the folder: {0}")]
    Watch(#[from] notify::Error),
    /// A thread could not be started.
    #[error("starting the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A started peer: its folder is being watched, its block server is bound
/// and its engine runs on a thread of its own until the shutdown token fires.
pub struct Peer {
    engine: std::thread::JoinHandle<()>,
}

impl Peer {
    /// Waits until the peer has stopped (its shutdown token fired and it
    /// said goodbye to the tracker).
    pub fn wait(self) {
        let _ = self.engine.join();
    }
}

/// Runs a peer until `shutdown` fires. Blocks.
pub fn run(cfg: Config, shutdown: Shutdown) -> Result<(), StartError> {
    start(cfg, shutdown)?.wait();
    Ok(())
}

/// Starts a peer: everything that can fail (the folder, its index, binding
/// the block server, the watcher) has succeeded when this returns `Ok`.
pub fn start(cfg: Config, shutdown: Shutdown) -> Result<Peer, StartError> {
    let folder_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| StartError::Folder { path, source }
    };
    std::fs::create_dir_all(&cfg.dir).map_err(folder_err(&cfg.dir))?;
    let root = cfg.dir.canonicalize().map_err(folder_err(&cfg.dir))?;
    let state = root.join(STATE_DIR_NAME);
    let staging = state.join("tmp");
    // Partial downloads of the last day stay, to be resumed; anything else
    // left there (a temp file of an interrupted upload or restore) goes.
    fsops::private_dir(&state).map_err(folder_err(&state))?;
    std::fs::create_dir_all(&staging).map_err(folder_err(&staging))?;
    transfer::clean_staging(&staging, transfer::PARTIAL_MAX_AGE, true);
    let index = index::LocalIndex::load(&state)?;
    if let Some((aside, reason)) = &index.recovered {
        tracing::warn!(moved_to = %aside.display(), reason = %reason,
                       "local index unreadable; starting a new one (local files count as concurrent edits)");
    }
    if let Some(entries) = index.upgraded {
        tracing::info!(event = %"index_upgraded", entries, "local index carried over into index.redb");
    }

    let ctx = cfg.context.clone();
    // The peer's own threads stop when `shutdown` fires, or when the
    // engine ends for any other reason.
    let stop = Shutdown::new();
    shutdown.on_trigger({
        let stop = stop.clone();
        move || stop.trigger()
    });
    let folder_root = fsops::Root::new(root.clone()).map_err(folder_err(&root))?;
    let mut folder = folder::Folder::new(index, folder_root);
    let kept = versions::Versions::new(folder.root(), cfg.keep_versions);
    folder.keep_versions(kept.clone());
    spawn("zync-versions", {
        let (stop, kept, staging) = (stop.clone(), kept.clone(), staging.clone());
        move || prune_versions(kept, &staging, stop)
    });
    let view = folder.view();
    let sock_err = |what: &str| {
        let what = what.to_owned();
        move |source| StartError::Socket { what, source }
    };
    let listen = net::tcp(&cfg.listen);
    let srv = server::BlockServer::bind(&ctx, &listen, folder.view())
        .map_err(sock_err(&format!("bind {listen}")))?;
    let bound = srv.endpoint().map_err(sock_err("read bound endpoint"))?;
    let advertise = match &cfg.advertise {
        Some(a) => a
            .split(',')
            .map(|e| net::tcp(e.trim()))
            .collect::<Vec<_>>()
            .join(","),
        None => net::reachable(&bound, &gethostname::gethostname().to_string_lossy()),
    };
    spawn("zync-server", {
        let stop = stop.clone();
        move || srv.run(stop)
    });

    let (tx, rx) = bounded::<Input>(4096);

    // Folder watcher: OS events, debounced per path; no polling.
    let watch_tx = tx.clone();
    let watcher = watch::watch(&root, state.clone(), cfg.debounce, move |seen| {
        let input = match seen {
            watch::Seen::Paths(paths) => Input::Fs(paths),
            watch::Seen::Rescan => Input::Rescan,
        };
        watch_tx.send(input).is_ok()
    })?;

    // Which tracker of the list is in use: the engine chooses when it
    // registers, the heartbeat and the fetch workers follow.
    let choice = net::Choice::default();

    // Tracker links.
    let (ep_tx, ep_rx) = unbounded::<String>();
    let (link_tx, link_rx) = bounded::<LinkEvent>(1024);
    let registration = Arc::new(link::Registration::default());
    spawn("zync-subscriber", {
        let (ctx, tx, stop, reg) = (
            ctx.clone(),
            link_tx.clone(),
            stop.clone(),
            registration.clone(),
        );
        move || link::subscriber(ctx, ep_rx, reg, tx, stop)
    });
    let progress = transfer::Progress::default();
    spawn("zync-heartbeat", {
        let (ctx, tx, stop, reg) = (ctx.clone(), link_tx, stop.clone(), registration.clone());
        let hb = link::Heartbeat {
            tracker: net::TrackerClient::following(
                &ctx,
                &cfg.tracker,
                link::HEARTBEAT_TIMEOUT,
                choice.clone(),
            ),
            name: cfg.name.clone(),
            device: folder.device(),
            registration: reg,
            progress: progress.clone(),
        };
        move || hb.run(ctx, tx, stop)
    });
    spawn("zync-links", {
        let tx = tx.clone();
        move || {
            for ev in link_rx {
                if tx.send(Input::Link(ev)).is_err() {
                    return;
                }
            }
        }
    });

    // The syncer: a fetched file waits for the disk here, so a fetch worker
    // goes on to its next download meanwhile (with small files, the
    // fsyncs' latency, not the CPU, would set the pace). Every group waiting
    // when it comes round is made durable at once (`transfer::sync_groups`).
    type Synced = (zync_proto::FileEntry, Instant);
    let (sync_tx, sync_rx) = unbounded::<(transfer::SyncGroup, Vec<(Synced, transfer::Written)>)>();
    spawn("zync-sync", {
        let tx = tx.clone();
        move || {
            while let Ok(first) = sync_rx.recv() {
                let mut done: Vec<Synced> = Vec::new();
                let mut groups = Vec::new();
                for (group, files) in std::iter::once(first).chain(sync_rx.try_iter()) {
                    let (synced, written): (Vec<_>, Vec<_>) = files.into_iter().unzip();
                    done.extend(synced);
                    groups.push((group, written));
                }
                let results = transfer::sync_groups(groups);
                for ((entry, t), result) in done.into_iter().zip(results) {
                    let done = Input::Done {
                        entry,
                        result,
                        took: t.elapsed(),
                    };
                    if tx.send(done).is_err() {
                        return;
                    }
                }
            }
        }
    });

    // Fetch workers.
    let (job_tx, job_rx) = unbounded::<Job>();
    for i in 0..cfg.workers.max(1) {
        let (ctx, jobs, tx) = (ctx.clone(), job_rx.clone(), tx.clone());
        let mut fetcher = Fetcher::following(&ctx, &cfg.tracker, choice.clone(), cfg.name.clone());
        fetcher.reuse(transfer::LocalBlocks {
            view: view.clone(),
            versions: Some(kept.clone()),
        });
        fetcher.track(progress.clone());
        let (staging, sync_tx) = (staging.clone(), sync_tx.clone());
        let dir = transfer::batch_dir(&staging, i);
        let batch_dir = match std::fs::create_dir_all(&dir) {
            Ok(()) => dir,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e,
                      "cannot make a fetch worker's folder; its small files go to staging itself");
                staging.clone()
            }
        };
        spawn(&format!("zync-fetch-{i}"), move || {
            for Job { files } in jobs {
                let t = Instant::now();
                let group = transfer::SyncGroup::open(&staging);
                let mut written = Vec::new();
                fetcher.fetch_many(
                    files,
                    &staging,
                    &batch_dir,
                    &mut |entry, result| match result {
                        Ok(w) => {
                            written.push(((entry, t), w));
                            true
                        }
                        Err(e) => tx
                            .send(Input::Done {
                                entry,
                                result: Err(e),
                                took: t.elapsed(),
                            })
                            .is_ok(),
                    },
                );
                if !written.is_empty() && sync_tx.send((group, written)).is_err() {
                    return;
                }
            }
        });
    }

    let setup = Setup {
        staging,
        name: cfg.name.clone(),
        advertise,
        tracker: cfg.tracker.clone(),
        choice: choice.clone(),
        // Downloads in flight: being fetched, or waiting for the disk.
        workers: cfg.workers.max(1) + WAITING_FOR_DISK,
        backlog: cfg.backlog.max(1),
        observer: cfg.observer.clone(),
        rescan: (!cfg.rescan.is_zero()).then_some(cfg.rescan),
        progress: progress.clone(),
        pager: engine::Pager::spawn(&ctx, &cfg.tracker, choice.clone(), tx.clone()).map_err(
            |source| StartError::Thread {
                what: "zync-pager",
                source,
            },
        )?,
    };
    // Hashers: local files are hashed off the engine's thread.
    let hashers = hashing::Hashers::spawn(HASHERS, folder.root(), {
        let tx = tx.clone();
        move |path, result| tx.send(Input::Hashed { path, result }).is_ok()
    })
    .map_err(|source| StartError::Thread {
        what: "hashing",
        source,
    })?;
    let engine = Engine::new(setup, folder, &ctx, job_tx, hashers, ep_tx, registration);
    drop(tx);
    let engine = std::thread::Builder::new()
        .name("zync-engine".into())
        .spawn(move || {
            engine.run(rx, stop.receiver());
            stop.trigger();
            drop(watcher);
            info!("bye");
        })
        .map_err(|source| StartError::Thread {
            what: "zync-engine",
            source,
        })?;
    Ok(Peer { engine })
}

/// Threads hashing local files (a large file also uses a second thread of
/// its own while it is hashed).
const HASHERS: usize = 2;

/// Download jobs that may wait for the disk (the syncer) while the fetch
/// workers go on with the next ones.
const WAITING_FOR_DISK: usize = 16;

/// Prunes kept versions now and then (a tenth of the keeping time,
/// between 1 s and 1 h), and says what they take: at start, and whenever a
/// pass removed some. Abandoned partial downloads go on the same round.
fn prune_versions(v: versions::Versions, staging: &std::path::Path, stop: Shutdown) {
    let every = (v.keep() / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut first = true;
    loop {
        match v.prune(std::time::SystemTime::now()) {
            Ok(p) if first || p.removed > 0 => {
                info!(event = "versions", kept = p.kept, kept_bytes = p.kept_bytes, pruned = p.removed,
                      pruned_bytes = p.removed_bytes, keep_days = v.keep().as_secs_f64() / 86400.0,
                      dir = %v.dir().display(), "kept versions");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, dir = %v.dir().display(), "cannot prune kept versions"),
        }
        // Partial downloads nobody came back for.
        let gone = transfer::clean_staging(staging, transfer::PARTIAL_MAX_AGE, false);
        if gone > 0 {
            info!(removed = gone, "abandoned partial downloads removed");
        }
        first = false;
        if stop.sleep(every) {
            return;
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        warn!(thread = name, error = %e, "cannot start thread");
    }
}
