//! The Zync tracker: knows who is alive and which file versions exist.
//!
//! It owns the cluster index: for every path, the newest version any peer has
//! reported (tombstones included), and for every live peer, the entries it
//! holds. It never sees file bytes.
//!
//! One thread, two sockets:
//! - a ROUTER that answers [`TrackerRequest`]s from plain REQ clients
//!   (register, heartbeat, update, unregister, list, locate, peers);
//! - a PUB that publishes every index change as a [`Notification`] carrying
//!   the tracker's random epoch and a sequence number that grows by one per
//!   change, plus a periodic `Hugz` so subscribers notice a lost message or a
//!   restart (the ZeroMQ guide's Clone pattern; `List` is the snapshot).
//!
//! Peers silent for three heartbeat intervals are dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use zync_proto::{
    decode, encode, ClusterFile, ErrorKind, Event, FileEntry, Hash, Notification, PeerInfo,
    RelPath, TrackerReply, TrackerRequest, PAGE_BYTES,
};

/// Errors that stop the tracker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be created, bound or used.
    #[error("{what}: {source}")]
    Zmq {
        /// What was being done.
        what: String,
        /// The libzmq error.
        source: zync_net::Error,
    },
}

fn zerr(what: impl Into<String>) -> impl FnOnce(zync_net::Error) -> Error {
    let what = what.into();
    move |source| Error::Zmq { what, source }
}

/// New versions from one message logged one line each at info level; a
/// peer registering a large folder (or re-registering after a tracker
/// restart) gets one summary line for the rest, since each peer logs its own
/// changes and syncs anyway.
const LOGGED_PER_BATCH: usize = 16;

/// Tracker settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Heartbeat interval peers are told to use; a peer silent for three of
    /// them is dropped. Also the Hugz interval.
    pub heartbeat: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat: Duration::from_secs(1),
        }
    }
}

struct Peer {
    device: u64,
    endpoint: String,
    last_seen: Instant,
    /// What the peer holds at each path it reported: the content's hash, or
    /// `None` for a deletion. The full entries (versions, block lists) live
    /// once, in `Index::current`; a copy per peer would multiply the
    /// tracker's memory by the number of peers.
    files: HashMap<RelPath, Option<Hash>>,
}

impl Peer {
    /// True if the peer reported holding `path` with content `sha256`.
    fn holds(&self, path: &RelPath, sha256: Hash) -> bool {
        self.files.get(path) == Some(&Some(sha256))
    }
}

/// The tracker's state, without sockets: what `handle` decides is testable alone.
struct Index {
    epoch: u64,
    seq: u64,
    peers: BTreeMap<String, Peer>,
    current: BTreeMap<RelPath, FileEntry>,
    /// Paths whose current entry has this content (not tombstones), for
    /// `Find`. Kept in step with `current`, its only writer being `absorb`.
    by_content: HashMap<Hash, BTreeSet<RelPath>>,
}

impl Index {
    fn holders(&self, entry: &FileEntry) -> Vec<String> {
        if entry.deleted {
            return Vec::new();
        }
        self.peers
            .iter()
            .filter(|(_, p)| p.holds(&entry.path, entry.sha256))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn peer_info(name: &str, p: &Peer, now: Instant) -> PeerInfo {
        PeerInfo {
            name: name.to_owned(),
            endpoint: p.endpoint.clone(),
            last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
        }
    }

    fn next(&mut self, event: Event) -> Notification {
        self.seq += 1;
        Notification {
            epoch: self.epoch,
            seq: self.seq,
            event,
        }
    }

    /// Records entries a peer now holds; returns the notifications to publish.
    fn absorb(&mut self, name: &str, files: Vec<FileEntry>, out: &mut Vec<Notification>) {
        let mut announced = 0;
        for e in files {
            if let Some(p) = self.peers.get_mut(name) {
                p.files
                    .insert(e.path.clone(), (!e.deleted).then_some(e.sha256));
            }
            let announce = match self.current.get(&e.path) {
                None => true,
                Some(cur) if e.supersedes(cur) => true,
                Some(cur) if cur.version == e.version => false,
                // The peer holds a version that loses to the current one:
                // re-announce the current one so the peer resolves.
                Some(_) => {
                    let file = self.cluster_file(&e.path);
                    if let Some(file) = file {
                        let n = self.next(Event::FileChanged { file });
                        out.push(n);
                    }
                    continue;
                }
            };
            if announce {
                announced += 1;
                if announced <= LOGGED_PER_BATCH {
                    info!(event = %"index_changed", path = %e.path, peer = %name, version = %e.version,
                          deleted = e.deleted, "new current version");
                } else {
                    debug!(event = %"index_changed", path = %e.path, peer = %name, version = %e.version,
                           deleted = e.deleted, "new current version");
                }
                if let Some(old) = self.current.insert(e.path.clone(), e.clone()) {
                    if let Some(paths) = self.by_content.get_mut(&old.sha256) {
                        paths.remove(&old.path);
                        if paths.is_empty() {
                            self.by_content.remove(&old.sha256);
                        }
                    }
                }
                if !e.deleted {
                    self.by_content
                        .entry(e.sha256)
                        .or_default()
                        .insert(e.path.clone());
                }
                let holders = self.holders(&e);
                let n = self.next(Event::FileChanged {
                    file: ClusterFile { entry: e, holders },
                });
                out.push(n);
            }
        }
        if announced > LOGGED_PER_BATCH {
            info!(peer = %name, more = announced - LOGGED_PER_BATCH,
                  "further new versions in this batch logged at debug level");
        }
    }

    fn cluster_file(&self, path: &RelPath) -> Option<ClusterFile> {
        self.current.get(path).map(|e| ClusterFile {
            entry: e.clone(),
            holders: self.holders(e),
        })
    }

    /// Refreshes a registered peer's liveness; false if it is not registered.
    fn touch(&mut self, name: &str, device: u64, now: Instant) -> bool {
        match self.peers.get_mut(name) {
            Some(p) if p.device == device => {
                p.last_seen = now;
                true
            }
            _ => false,
        }
    }

    fn remove_peer(&mut self, name: &str, why: &str, out: &mut Vec<Notification>) {
        if self.peers.remove(name).is_some() {
            info!(event = %"peer_left", peer = %name, reason = %why, "peer left");
            let n = self.next(Event::PeerLeft {
                name: name.to_owned(),
            });
            out.push(n);
        }
    }

    fn handle(
        &mut self,
        req: TrackerRequest,
        now: Instant,
        cfg: &Config,
        publish: &str,
        out: &mut Vec<Notification>,
    ) -> TrackerReply {
        match req {
            TrackerRequest::Register {
                name,
                device,
                endpoint,
                files,
            } => {
                if name.is_empty() || name.len() > 255 {
                    return error(ErrorKind::Invalid, "peer name must be 1 to 255 bytes");
                }
                if let Some(bad) = files.iter().find(|e| !e.is_consistent()) {
                    return error(
                        ErrorKind::Invalid,
                        format!("inconsistent entry for {}", bad.path),
                    );
                }
                if let Some(p) = self.peers.get(&name) {
                    if p.device != device {
                        return error(
                            ErrorKind::NameTaken,
                            format!("another live peer is already called {name:?}"),
                        );
                    }
                }
                let rejoin = self.peers.contains_key(&name);
                self.peers.insert(
                    name.clone(),
                    Peer {
                        device,
                        endpoint: endpoint.clone(),
                        last_seen: now,
                        files: HashMap::new(),
                    },
                );
                info!(event = %"peer_joined", peer = %name, endpoint = %endpoint, files = files.len(),
                      rejoin, "peer joined");
                let info = PeerInfo {
                    name: name.clone(),
                    endpoint,
                    last_seen_ms: 0,
                };
                let n = self.next(Event::PeerJoined { peer: info });
                out.push(n);
                self.absorb(&name, files, out);
                TrackerReply::Registered {
                    epoch: self.epoch,
                    publish: publish.to_owned(),
                    heartbeat_ms: cfg.heartbeat.as_millis() as u64,
                }
            }
            TrackerRequest::Heartbeat { name, device } => {
                if !self.touch(&name, device, now) {
                    return unknown_peer(&name);
                }
                TrackerReply::Ok
            }
            TrackerRequest::Update {
                name,
                device,
                files,
            } => {
                if !self.touch(&name, device, now) {
                    return unknown_peer(&name);
                }
                if let Some(bad) = files.iter().find(|e| !e.is_consistent()) {
                    return error(
                        ErrorKind::Invalid,
                        format!("inconsistent entry for {}", bad.path),
                    );
                }
                self.absorb(&name, files, out);
                TrackerReply::Ok
            }
            TrackerRequest::Unregister { name, device } => {
                if !self.touch(&name, device, now) {
                    return unknown_peer(&name);
                }
                self.remove_peer(&name, "unregistered", out);
                TrackerReply::Ok
            }
            TrackerRequest::List { after } => {
                let (files, next) = self.page(after.as_ref());
                TrackerReply::Snapshot {
                    epoch: self.epoch,
                    seq: self.seq,
                    files,
                    peers: self.peer_list(now),
                    next,
                }
            }
            TrackerRequest::Locate { path, sha256 } => TrackerReply::Holders {
                entry: self.current.get(&path).cloned(),
                holders: self.locate(&path, sha256, now),
            },
            TrackerRequest::Peers => TrackerReply::Peers {
                peers: self.peer_list(now),
            },
            TrackerRequest::Find { sha256 } => {
                let paths = self.by_content.get(&sha256);
                let held = |path: &RelPath| self.locate(path, sha256, now);
                let mut first = None;
                for path in paths.into_iter().flatten() {
                    let holders = held(path);
                    if !holders.is_empty() {
                        return TrackerReply::Holders {
                            entry: self.current.get(path).cloned(),
                            holders,
                        };
                    }
                    first.get_or_insert(path);
                }
                TrackerReply::Holders {
                    entry: first.and_then(|p| self.current.get(p).cloned()),
                    holders: Vec::new(),
                }
            }
        }
    }

    /// The current entries after `after`, in path order, up to
    /// [`PAGE_BYTES`] (at least one), and the last path if more follow.
    fn page(&self, after: Option<&RelPath>) -> (Vec<ClusterFile>, Option<RelPath>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, Excluded);
        let mut files: Vec<ClusterFile> = Vec::new();
        let mut bytes = 0;
        for e in self.current.range((start, Unbounded)).map(|(_, e)| e) {
            if let Some(last) = files.last().filter(|_| bytes + e.size_hint() > PAGE_BYTES) {
                let next = last.entry.path.clone();
                return (files, Some(next));
            }
            bytes += e.size_hint();
            files.push(ClusterFile {
                entry: e.clone(),
                holders: self.holders(e),
            });
        }
        (files, None)
    }

    /// Live peers holding `path` with content `sha256`.
    fn locate(&self, path: &RelPath, sha256: Hash, now: Instant) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .filter(|(_, p)| p.holds(path, sha256))
            .map(|(n, p)| Self::peer_info(n, p, now))
            .collect()
    }

    fn peer_list(&self, now: Instant) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(n, p)| Self::peer_info(n, p, now))
            .collect()
    }

    fn expire(&mut self, now: Instant, timeout: Duration, out: &mut Vec<Notification>) {
        let dead: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for name in dead {
            self.remove_peer(&name, "heartbeat timeout", out);
        }
    }
}

fn unknown_peer(name: &str) -> TrackerReply {
    error(
        ErrorKind::UnknownPeer,
        format!("peer {name:?} is not registered here"),
    )
}

fn error(kind: ErrorKind, message: impl Into<String>) -> TrackerReply {
    TrackerReply::Error {
        kind,
        message: message.into(),
    }
}

/// A running tracker's sockets and state.
pub struct Tracker {
    router: zync_net::Socket,
    publisher: zync_net::Socket,
    listen: String,
    publish: String,
    cfg: Config,
    index: Index,
}

impl Tracker {
    /// Binds the request and publish sockets (`tcp://HOST:PORT`; port `*` or 0 picks one).
    pub fn bind(
        ctx: &zync_net::Context,
        listen: &str,
        publish: &str,
        cfg: Config,
    ) -> Result<Tracker, Error> {
        let router = ctx.router(listen).map_err(zerr(format!("bind {listen}")))?;
        let publisher = ctx
            .publisher(publish)
            .map_err(zerr(format!("bind {publish}")))?;
        let listen = router.endpoint().map_err(zerr("read bound endpoint"))?;
        let publish = publisher.endpoint().map_err(zerr("read bound endpoint"))?;
        Ok(Tracker {
            router,
            publisher,
            listen,
            publish,
            cfg,
            index: Index {
                epoch: rand::random::<u64>() | 1,
                seq: 0,
                peers: BTreeMap::new(),
                current: BTreeMap::new(),
                by_content: HashMap::new(),
            },
        })
    }

    /// The request endpoint actually bound (with the chosen port).
    pub fn listen_endpoint(&self) -> &str {
        &self.listen
    }

    /// The publish endpoint actually bound.
    pub fn publish_endpoint(&self) -> &str {
        &self.publish
    }

    /// Serves until `stop` fires (checked at least every 100 ms).
    pub fn run(mut self, stop: zync_net::Shutdown) -> Result<(), Error> {
        info!(epoch = %format!("{:016x}", self.index.epoch), listen = %self.listen, publish = %self.publish,
              "tracker started");
        let timeout = self.cfg.heartbeat * 3;
        let mut next_tick = Instant::now() + self.cfg.heartbeat;
        let mut out = Vec::new();
        while !stop.is_triggered() {
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            if self.router.wait_readable(wait).map_err(zerr("poll"))? {
                // Drain everything queued before looking at timers again.
                while let Ok(Some(frames)) = self.router.try_recv_frames() {
                    self.serve(frames, &mut out)?;
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.index.expire(now, timeout, &mut out);
                out.push(Notification {
                    epoch: self.index.epoch,
                    seq: self.index.seq,
                    event: Event::Hugz,
                });
                next_tick = now + self.cfg.heartbeat;
            }
            for n in out.drain(..) {
                self.publisher.send(encode(&n)).map_err(zerr("publish"))?;
            }
        }
        info!("tracker stopping");
        Ok(())
    }

    fn serve(
        &mut self,
        mut frames: Vec<Vec<u8>>,
        out: &mut Vec<Notification>,
    ) -> Result<(), Error> {
        // [identity, (empty delimiter,) body]; anything shorter cannot be answered.
        if frames.len() < 2 {
            debug!(
                frames = frames.len(),
                "dropping request without an envelope"
            );
            return Ok(());
        }
        let body = frames.pop().unwrap_or_default();
        let reply = match decode::<TrackerRequest>(&body) {
            Ok(req) => self
                .index
                .handle(req, Instant::now(), &self.cfg, &self.publish, out),
            Err(e) => {
                warn!(error = %e, bytes = body.len(), "rejected request");
                error(e.kind(), e.to_string())
            }
        };
        frames.push(encode(&reply));
        // A client that went away (or a full queue) loses its reply; the
        // tracker never blocks on one client.
        self.router.try_send_frames(frames).map_err(zerr("reply"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zync_proto::{Hash, VersionVector};

    fn entry(path: &str, by: &str, bumps: &[&str], content: &[u8]) -> FileEntry {
        let mut version = VersionVector::new();
        for b in bumps {
            version.bump(b);
        }
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size: content.len() as u64,
            mtime_ns: 1,
            sha256: Hash::of(content),
            blocks: if content.is_empty() {
                vec![]
            } else {
                vec![Hash::of(content)]
            },
            version,
            deleted: false,
            modified_by: by.into(),
        }
    }

    fn index() -> Index {
        Index {
            epoch: 7,
            seq: 0,
            peers: BTreeMap::new(),
            current: BTreeMap::new(),
            by_content: HashMap::new(),
        }
    }

    fn register(
        ix: &mut Index,
        name: &str,
        files: Vec<FileEntry>,
        out: &mut Vec<Notification>,
    ) -> TrackerReply {
        let req = TrackerRequest::Register {
            name: name.into(),
            device: 1,
            endpoint: format!("tcp://{name}:1"),
            files,
        };
        ix.handle(
            req,
            Instant::now(),
            &Config::default(),
            "tcp://0.0.0.0:5556",
            out,
        )
    }

    #[test]
    fn sequence_grows_by_one_per_change() {
        let mut ix = index();
        let mut out = Vec::new();
        register(
            &mut ix,
            "a",
            vec![entry("f", "a", &["a"], b"1"), entry("g", "a", &["a"], b"2")],
            &mut out,
        );
        let seqs: Vec<u64> = out.iter().map(|n| n.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(out.iter().all(|n| n.epoch == 7));
    }

    #[test]
    fn newer_version_replaces_and_holders_follow_content() {
        let mut ix = index();
        let mut out = Vec::new();
        let v1 = entry("f", "a", &["a"], b"1");
        register(&mut ix, "a", vec![v1.clone()], &mut out);
        register(&mut ix, "b", vec![v1.clone()], &mut out);
        assert_eq!(ix.cluster_file(&v1.path).unwrap().holders, vec!["a", "b"]);
        let v2 = entry("f", "b", &["a", "b"], b"2");
        let now = Instant::now();
        ix.handle(
            TrackerRequest::Update {
                name: "b".into(),
                device: 1,
                files: vec![v2.clone()],
            },
            now,
            &Config::default(),
            "",
            &mut out,
        );
        let cf = ix.cluster_file(&v1.path).unwrap();
        assert_eq!(cf.entry, v2);
        assert_eq!(cf.holders, vec!["b"]);
    }

    fn find(ix: &mut Index, content: &[u8]) -> (Option<FileEntry>, Vec<String>) {
        let req = TrackerRequest::Find {
            sha256: Hash::of(content),
        };
        match ix.handle(req, Instant::now(), &Config::default(), "", &mut Vec::new()) {
            TrackerReply::Holders { entry, holders } => {
                (entry, holders.into_iter().map(|h| h.name).collect())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn list_pages_cover_the_index_once_within_the_page_size() {
        let mut ix = index();
        let mut out = Vec::new();
        // 40 entries of ~1 MiB of block hashes each: about five pages.
        let files: Vec<FileEntry> = (0..40)
            .map(|i| {
                let mut e = entry(&format!("f{i:02}"), "a", &["a"], b"x");
                e.blocks = vec![Hash::of(b"x"); 32 * 1024];
                e.size = 32 * 1024 * zync_proto::BLOCK_SIZE;
                e
            })
            .collect();
        register(&mut ix, "a", files.clone(), &mut out);
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let req = TrackerRequest::List { after };
            let TrackerReply::Snapshot { files, next, .. } =
                ix.handle(req, Instant::now(), &Config::default(), "", &mut out)
            else {
                panic!("not a snapshot")
            };
            let bytes: usize = files.iter().map(|f| f.entry.size_hint()).sum();
            assert!(bytes <= PAGE_BYTES, "page of {bytes} bytes");
            assert!(zync_proto::encode(&files).len() <= PAGE_BYTES + 4096);
            seen.extend(files.into_iter().map(|f| f.entry.path));
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert!(pages >= 4, "{pages} pages");
        let want: Vec<RelPath> = files.into_iter().map(|e| e.path).collect();
        assert_eq!(seen, want, "every path once, in order");
    }

    #[test]
    fn find_follows_current_content() {
        let mut ix = index();
        let mut out = Vec::new();
        let f1 = entry("f", "a", &["a"], b"same");
        let g1 = entry("g", "b", &["b"], b"same");
        register(&mut ix, "a", vec![f1.clone()], &mut out);
        register(&mut ix, "b", vec![g1.clone()], &mut out);
        let (e, holders) = find(&mut ix, b"same");
        assert!(e == Some(f1.clone()) || e == Some(g1.clone()));
        assert_eq!(holders.len(), 1);
        assert_eq!(find(&mut ix, b"other"), (None, vec![]));
        // f changes content: only g still has "same"; the new content is found.
        let f2 = entry("f", "a", &["a", "a"], b"new");
        register(&mut ix, "a", vec![f2.clone()], &mut out);
        assert_eq!(find(&mut ix, b"same"), (Some(g1.clone()), vec!["b".into()]));
        assert_eq!(find(&mut ix, b"new"), (Some(f2), vec!["a".into()]));
        // g is deleted: "same" is gone from the cluster.
        let mut g2 = entry("g", "b", &["b", "b"], b"");
        g2.deleted = true;
        register(&mut ix, "b", vec![g2], &mut out);
        assert_eq!(find(&mut ix, b"same"), (None, vec![]));
    }

    #[test]
    fn losing_update_reannounces_current() {
        let mut ix = index();
        let mut out = Vec::new();
        let newer = entry("f", "a", &["a", "a"], b"2");
        register(&mut ix, "a", vec![newer.clone()], &mut out);
        out.clear();
        register(&mut ix, "b", vec![entry("f", "a", &["a"], b"1")], &mut out);
        let last = out.last().unwrap();
        match &last.event {
            Event::FileChanged { file } => assert_eq!(file.entry, newer),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn name_taken_by_other_device_but_rejoin_allowed() {
        let mut ix = index();
        let mut out = Vec::new();
        assert!(matches!(
            register(&mut ix, "a", vec![], &mut out),
            TrackerReply::Registered { .. }
        ));
        assert!(matches!(
            register(&mut ix, "a", vec![], &mut out),
            TrackerReply::Registered { .. }
        ));
        let other = TrackerRequest::Register {
            name: "a".into(),
            device: 2,
            endpoint: "x".into(),
            files: vec![],
        };
        let r = ix.handle(other, Instant::now(), &Config::default(), "", &mut out);
        assert!(matches!(
            r,
            TrackerReply::Error {
                kind: ErrorKind::NameTaken,
                ..
            }
        ));
    }

    #[test]
    fn silent_peer_expires_and_stops_being_a_holder() {
        let mut ix = index();
        let mut out = Vec::new();
        let v1 = entry("f", "a", &["a"], b"1");
        register(&mut ix, "a", vec![v1.clone()], &mut out);
        out.clear();
        ix.expire(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(3),
            &mut out,
        );
        assert!(matches!(&out[0].event, Event::PeerLeft { name } if name == "a"));
        let cf = ix.cluster_file(&v1.path).unwrap();
        assert!(
            cf.holders.is_empty(),
            "a dead peer is not offered as a source"
        );
        let hb = TrackerRequest::Heartbeat {
            name: "a".into(),
            device: 1,
        };
        let r = ix.handle(hb, Instant::now(), &Config::default(), "", &mut out);
        assert!(matches!(
            r,
            TrackerReply::Error {
                kind: ErrorKind::UnknownPeer,
                ..
            }
        ));
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let mut ix = index();
        let mut out = Vec::new();
        let mut bad = entry("f", "a", &["a"], b"1");
        bad.blocks.clear();
        let r = register(&mut ix, "a", vec![bad], &mut out);
        assert!(matches!(
            r,
            TrackerReply::Error {
                kind: ErrorKind::Invalid,
                ..
            }
        ));
        assert!(ix.current.is_empty());
    }
}
