//! Request handling: one [`TrackerRequest`] in, one [`TrackerReply`] out,
//! and the notifications the change causes appended to `out`. No I/O.

use std::time::Instant;

use tracing::info;
use zync_proto::{ErrorKind, Event, Notification, PeerInfo, TrackerReply, TrackerRequest};

use crate::index::{Index, Peer};
use crate::Config;

impl Index {
    pub(crate) fn handle(
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
                let files = match acceptable(&name, files, false) {
                    Ok(files) => files,
                    Err(why) => return error(ErrorKind::Invalid, why),
                };
                if let Some(p) = self.peers.get(&name) {
                    if p.device.is_some_and(|d| d != device) {
                        return error(
                            ErrorKind::NameTaken,
                            format!("another live peer is already called {name:?}"),
                        );
                    }
                }
                let rejoin = self.peers.contains_key(&name);
                self.add_peer(&name, Peer::new(Some(device), endpoint.clone(), now));
                info!(event = %"peer_joined", peer = %name, endpoint = %endpoint, files = files.len(),
                      rejoin, "peer joined");
                let info = PeerInfo {
                    name: name.clone(),
                    endpoint,
                    last_seen_ms: 0,
                    transfers: Vec::new(),
                    failing: 0,
                    errors: vec![],
                };
                let n = self.next(Event::PeerJoined { peer: info });
                out.push(n);
                self.absorb(&name, files, now, out);
                TrackerReply::Registered {
                    epoch: self.epoch,
                    publish: publish.to_owned(),
                    heartbeat_ms: cfg.heartbeat.as_millis() as u64,
                }
            }
            TrackerRequest::Heartbeat {
                name,
                device,
                transfers,
                failing,
                errors,
            } => {
                if !self.touch(&name, device, now) {
                    return unknown_peer(&name);
                }
                self.set_transfers(&name, transfers, failing, errors);
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
                let files = match acceptable(&name, files, true) {
                    Ok(files) => files,
                    Err(why) => return error(ErrorKind::Invalid, why),
                };
                self.absorb(&name, files, now, out);
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
                entry: self.entry(&path),
                holders: self.locate(&path, sha256, now),
            },
            TrackerRequest::Peers => TrackerReply::Peers {
                peers: self.peer_list(now),
            },
            TrackerRequest::Follow => TrackerReply::Following {
                epoch: self.epoch,
                seq: self.seq,
                publish: publish.to_owned(),
                heartbeat_ms: cfg.heartbeat.as_millis() as u64,
            },
            TrackerRequest::Find { sha256 } => {
                let (entry, holders) = self.find(sha256, now);
                TrackerReply::Holders { entry, holders }
            }
        }
    }
}

/// The entries of `files` that can be taken in (see
/// [`zync_proto::FileEntry::acceptable`]). An inconsistent entry refuses the
/// whole message: no honest peer makes one. An entry with a counter far
/// past the clock is left out, and logged: an honest peer may hold one in
/// an index from before such counters were refused, and must not be locked
/// out for it. `whole`: when every entry was left out, the message is
/// refused (an `Update` made only of them). `Err`: why the message is
/// refused (`Invalid`).
fn acceptable(
    name: &str,
    files: Vec<zync_proto::FileEntry>,
    whole: bool,
) -> Result<Vec<zync_proto::FileEntry>, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let given = files.len();
    let mut first = None;
    let mut kept = Vec::with_capacity(given);
    for e in files {
        match e.acceptable(now) {
            Ok(()) => kept.push(e),
            Err(err @ zync_proto::EntryError::Inconsistent(_)) => {
                tracing::warn!(event = %"refused", peer = %name.escape_debug(), error = %err,
                               "announced entries refused");
                return Err(err.to_string());
            }
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first {
        tracing::warn!(event = %"refused", peer = %name.escape_debug(), error = %err,
                       refused = given - kept.len(), "announced entries refused");
        if whole && kept.is_empty() {
            return Err(err.to_string());
        }
    }
    Ok(kept)
}

fn unknown_peer(name: &str) -> TrackerReply {
    error(
        ErrorKind::UnknownPeer,
        format!("peer {name:?} is not registered here"),
    )
}

pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> TrackerReply {
    TrackerReply::Error {
        kind,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zync_proto::{FileEntry, Hash, RelPath, VersionVector, PAGE_BYTES};

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
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn index() -> Index {
        Index::new(7)
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

    fn update(ix: &mut Index, name: &str, files: Vec<FileEntry>, at: Instant) {
        let req = TrackerRequest::Update {
            name: name.into(),
            device: 1,
            files,
        };
        let reply = ix.handle(req, at, &Config::default(), "", &mut Vec::new());
        assert_eq!(reply, TrackerReply::Ok);
    }

    fn deletion(path: &str, by: &str, bumps: &[&str]) -> FileEntry {
        let mut e = entry(path, by, bumps, b"");
        e.deleted = true;
        e
    }

    fn forgotten(out: &[Notification]) -> Vec<FileEntry> {
        out.iter()
            .filter_map(|n| match &n.event {
                Event::Forgotten { entry } => Some(entry.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_deletion_every_live_holder_applied_is_forgotten_once_old_enough() {
        let age = Duration::from_secs(60);
        let tick = Duration::from_secs(1);
        let mut ix = Index::new(7).forgetting_after(age);
        let mut out = Vec::new();
        let (f1, kept) = (entry("f", "a", &["a"], b"1"), entry("k", "a", &["a"], b"k"));
        register(&mut ix, "a", vec![f1.clone(), kept.clone()], &mut out);
        register(&mut ix, "b", vec![f1.clone()], &mut out);
        let t = Instant::now();
        let gone = deletion("f", "a", &["a", "a"]);
        update(&mut ix, "a", vec![gone.clone()], t);
        out.clear();
        // Not before its age.
        ix.collect(t + age - tick, tick, &mut out);
        assert!(out.is_empty());
        // Old enough, but b still holds the content: kept, asked again.
        ix.collect(t + age, tick, &mut out);
        assert!(out.is_empty());
        assert_eq!(ix.cluster_file(&gone.path).unwrap().entry, gone);
        // b applies the deletion: forgotten at the next try, and published.
        update(&mut ix, "b", vec![gone.clone()], t + age);
        ix.collect(t + age + tick, tick, &mut out);
        assert_eq!(forgotten(&out), vec![gone.clone()]);
        assert!(ix.cluster_file(&gone.path).is_none());
        assert!(ix.holders_sound());
        // Everything else stays; and a peer that brings the file back later
        // offers it as new.
        assert_eq!(ix.cluster_file(&kept.path).unwrap().entry, kept);
        out.clear();
        register(&mut ix, "c", vec![f1.clone()], &mut out);
        assert_eq!(ix.cluster_file(&f1.path).unwrap().entry, f1);
    }

    #[test]
    fn a_change_after_a_deletion_restarts_its_clock() {
        let age = Duration::from_secs(60);
        let tick = Duration::from_secs(1);
        let mut ix = Index::new(7).forgetting_after(age);
        let mut out = Vec::new();
        register(&mut ix, "a", vec![entry("f", "a", &["a"], b"1")], &mut out);
        let t = Instant::now();
        update(&mut ix, "a", vec![deletion("f", "a", &["a", "a"])], t);
        // Made again, and deleted again, half an age later.
        let half = t + age / 2;
        update(
            &mut ix,
            "a",
            vec![entry("f", "a", &["a", "a", "a"], b"2")],
            half,
        );
        let again = deletion("f", "a", &["a", "a", "a", "a"]);
        update(&mut ix, "a", vec![again.clone()], half);
        out.clear();
        ix.collect(t + age + tick, tick, &mut out);
        assert!(out.is_empty(), "the first deletion's time does not count");
        ix.collect(half + age, tick, &mut out);
        assert_eq!(forgotten(&out), vec![again]);
        assert!(ix.holders_sound());
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
            transfers: vec![],
            failing: 0,
            errors: vec![],
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

    /// Holder lists are kept by path; every way a peer comes, changes and
    /// goes leaves them naming live peers only, each once, in order.
    #[test]
    fn holders_by_path_follow_every_way_a_peer_comes_changes_and_goes() {
        let mut ix = index();
        let mut out = Vec::new();
        let now = Instant::now();
        let cfg = Config::default();
        let step = |ix: &mut Index, req: TrackerRequest, out: &mut Vec<Notification>| {
            ix.handle(req, now, &cfg, "tcp://*:1", out);
            assert!(ix.holders_sound());
        };
        let f1 = entry("f", "a", &["a"], b"1");
        let f2 = entry("f", "b", &["a", "b"], b"2");
        let g = entry("g", "a", &["a"], b"g");
        register(&mut ix, "a", vec![f1.clone(), g.clone()], &mut out);
        register(&mut ix, "b", vec![f1.clone()], &mut out);
        assert!(ix.holders_sound());
        assert_eq!(ix.holders(&f1), ["a", "b"]);
        let update = |name: &str, files: Vec<FileEntry>| TrackerRequest::Update {
            name: name.into(),
            device: 1,
            files,
        };
        step(&mut ix, update("b", vec![f2.clone()]), &mut out);
        assert_eq!(ix.holders(&f1), ["a"]);
        assert_eq!(ix.holders(&f2), ["b"]);
        let mut gone = g.clone();
        gone.deleted = true;
        gone.sha256 = Hash::EMPTY;
        gone.blocks.clear();
        gone.size = 0;
        step(&mut ix, update("a", vec![gone]), &mut out);
        assert!(ix.holders(&g).is_empty());
        // A rejoin starts from what it registers now.
        register(&mut ix, "a", vec![f2.clone()], &mut out);
        assert!(ix.holders_sound());
        assert_eq!(ix.holders(&f2), ["a", "b"]);
        assert!(ix.locate(&g.path, g.sha256, now).is_empty());
        let unregister = TrackerRequest::Unregister {
            name: "b".into(),
            device: 1,
        };
        step(&mut ix, unregister, &mut out);
        assert_eq!(ix.holders(&f2), ["a"]);
        ix.expire(
            now + Duration::from_secs(60),
            Duration::from_secs(3),
            &mut out,
        );
        assert!(ix.holders_sound());
        assert!(ix.holders(&f2).is_empty(), "no peer left: held is empty");
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

    #[test]
    fn a_counter_far_past_the_clock_is_refused() {
        let mut ix = index();
        let mut out = Vec::new();
        let good = entry("f", "a", &["a"], b"1");
        register(&mut ix, "a", vec![good.clone()], &mut out);
        let mut bad = good.clone();
        bad.version.bump_at("b@00000001", u64::MAX);
        let req = TrackerRequest::Update {
            name: "a".into(),
            device: 1,
            files: vec![bad],
        };
        let r = ix.handle(
            req,
            Instant::now(),
            &Config::default(),
            "tcp://x:1",
            &mut out,
        );
        assert!(
            matches!(r, TrackerReply::Error { kind: ErrorKind::Invalid, ref message } if message.contains("b@00000001")),
            "{r:?}"
        );
        assert_eq!(ix.entry(&good.path), Some(good.clone()));
        // A peer whose index holds such an entry (made before they were
        // refused) still registers, with the rest of its files.
        let other = entry("g", "a", &["a"], b"2");
        let mut poisoned = entry("h", "a", &["a"], b"3");
        poisoned.version.bump_at("b@00000001", u64::MAX);
        let r = register(
            &mut ix,
            "c",
            vec![poisoned.clone(), other.clone()],
            &mut out,
        );
        assert!(matches!(r, TrackerReply::Registered { .. }), "{r:?}");
        assert_eq!(ix.entry(&other.path), Some(other));
        assert_eq!(ix.entry(&poisoned.path), None);
    }

    #[test]
    fn an_equal_version_with_other_content_is_not_taken_for_the_same() {
        let mut ix = index();
        let mut out = Vec::new();
        let mine = entry("f", "a", &["a"], b"mine");
        register(&mut ix, "a", vec![mine.clone()], &mut out);
        let mut theirs = entry("f", "b", &["a"], b"theirs");
        theirs.mtime_ns = mine.mtime_ns;
        out.clear();
        register(&mut ix, "b", vec![theirs.clone()], &mut out);
        // Whichever wins, it is announced, so the other peer resolves.
        let announced: Vec<_> = out
            .iter()
            .filter_map(|n| match &n.event {
                Event::FileChanged { file } => Some(file.entry.sha256),
                _ => None,
            })
            .collect();
        let winner = if theirs.supersedes(&mine) {
            &theirs
        } else {
            &mine
        };
        assert_eq!(announced, vec![winner.sha256]);
        assert_eq!(ix.entry(&mine.path).map(|e| e.sha256), Some(winner.sha256));
    }
}
