//! A backup tracker's copy of its primary's index, kept the way a peer
//! keeps its view (the Clone pattern): snapshot pages, then notifications
//! in sequence. What the primary publishes is copied: every path's current
//! version (tombstones included), the live peers, and who holds each
//! current version. Who holds an *older* version is not published; the
//! peers say it again when they register after a takeover.

use std::time::Instant;

use zync_proto::{ClusterFile, Event, PeerInfo};

use crate::index::{Index, Peer};

impl Index {
    /// Applies one page of the primary's snapshot.
    pub(crate) fn copy_page(
        &mut self,
        files: Vec<ClusterFile>,
        peers: Vec<PeerInfo>,
        now: Instant,
    ) {
        for p in peers {
            if !self.peers.contains_key(&p.name) {
                self.copy_peer(p, now);
            }
        }
        for f in files {
            self.copy_file(f, now);
        }
    }

    /// Applies one of the primary's notifications (the next in sequence).
    pub(crate) fn copy_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::FileChanged { file } => self.copy_file(file, now),
            Event::PeerJoined { peer } => self.copy_peer(peer, now),
            Event::PeerLeft { name } => {
                self.forget_peer(&name);
            }
            Event::Forgotten { entry } => {
                self.forget_path(&entry.path);
            }
            Event::Hugz => {}
        }
    }

    fn copy_peer(&mut self, p: PeerInfo, now: Instant) {
        let peer = Peer::new(None, p.endpoint, now);
        self.add_peer(&p.name, peer);
    }

    fn copy_file(&mut self, f: ClusterFile, now: Instant) {
        let (path, sha256, deleted) = (f.entry.path.clone(), f.entry.sha256, f.entry.deleted);
        self.set_current(f.entry, now);
        if !deleted {
            for name in &f.holders {
                self.hold(name, &path, Some(sha256));
            }
        }
    }

    /// The copy becomes the cluster's index, under a new epoch (so every
    /// peer takes a fresh snapshot: the backup may have missed the
    /// primary's last notifications). The copied peers count as heard from
    /// now: those that do not come within three heartbeats are dropped.
    pub(crate) fn take_over(&mut self, epoch: u64, now: Instant) {
        self.epoch = epoch;
        for p in self.peers.values_mut() {
            p.last_seen = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zync_proto::{
        FileEntry, Hash, Notification, RelPath, TrackerReply, TrackerRequest, VersionVector,
    };

    use crate::Config;

    fn entry(path: &str, content: &[u8], bumps: u64) -> FileEntry {
        let mut version = VersionVector::new();
        for _ in 0..bumps {
            version.bump("p1");
        }
        FileEntry {
            path: RelPath::new(path).unwrap(),
            size: content.len() as u64,
            mtime_ns: 1,
            sha256: Hash::of(content),
            blocks: vec![Hash::of(content)],
            version,
            deleted: false,
            modified_by: "p1".into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn ask(ix: &mut Index, req: TrackerRequest, out: &mut Vec<Notification>) -> TrackerReply {
        ix.handle(req, Instant::now(), &Config::default(), "tcp://*:1", out)
    }

    fn register(
        ix: &mut Index,
        name: &str,
        device: u64,
        files: Vec<FileEntry>,
        out: &mut Vec<Notification>,
    ) -> TrackerReply {
        let req = TrackerRequest::Register {
            name: name.into(),
            device,
            endpoint: format!("tcp://{name}:1"),
            files,
        };
        ask(ix, req, out)
    }

    /// What a `List` of every page says, as the copy would see it.
    fn listed(ix: &mut Index) -> (Vec<ClusterFile>, Vec<PeerInfo>) {
        let mut out = Vec::new();
        match ask(ix, TrackerRequest::List { after: None }, &mut out) {
            TrackerReply::Snapshot {
                files,
                peers,
                next: None,
                ..
            } => (files, peers),
            other => panic!("{other:?}"),
        }
    }

    fn names(peers: Vec<PeerInfo>) -> Vec<String> {
        peers.into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn a_copy_from_a_snapshot_and_the_notifications_after_it_lists_like_the_primary() {
        let mut primary = Index::new(7);
        let mut out = Vec::new();
        register(
            &mut primary,
            "p1",
            1,
            vec![entry("a", b"1", 1), entry("b", b"2", 1)],
            &mut out,
        );
        register(&mut primary, "p2", 2, vec![entry("a", b"1", 1)], &mut out);
        let now = Instant::now();
        let mut copy = Index::new(7);
        let (files, peers) = listed(&mut primary);
        copy.copy_page(files, peers, now);
        // Changes after the snapshot arrive as notifications.
        out.clear();
        let mut gone = entry("b", b"", 2);
        gone.deleted = true;
        gone.blocks.clear();
        let update = TrackerRequest::Update {
            name: "p1".into(),
            device: 1,
            files: vec![entry("a", b"new", 2), gone, entry("c", b"3", 1)],
        };
        assert_eq!(ask(&mut primary, update, &mut out), TrackerReply::Ok);
        register(&mut primary, "p3", 3, vec![], &mut out);
        // p1 is the only holder of b's deletion: forgotten at once.
        let now2 = Instant::now() + crate::DEFAULT_FORGET_DELETED_AFTER;
        primary.collect(now2, Duration::from_secs(1), &mut out);
        assert!(out
            .iter()
            .any(|n| matches!(&n.event, Event::Forgotten { entry } if entry.path.as_str() == "b")));
        let mut left = Vec::new();
        primary.remove_peer("p2", "test", &mut left);
        out.extend(left);
        for n in out {
            copy.copy_event(n.event, now);
        }
        assert_eq!(listed(&mut copy).0, listed(&mut primary).0);
        assert_eq!(names(listed(&mut copy).1), ["p1", "p3"]);
        assert!(copy.holders_sound());
        // Content lookups work on the copy too.
        let find = TrackerRequest::Find {
            sha256: Hash::of(b"new"),
        };
        let mut sink = Vec::new();
        assert_eq!(
            ask(&mut copy, find.clone(), &mut sink),
            ask(&mut primary, find, &mut sink)
        );
    }

    #[test]
    fn after_a_takeover_copied_peers_register_again_and_the_silent_ones_are_dropped() {
        let mut primary = Index::new(7);
        let mut out = Vec::new();
        register(&mut primary, "p1", 1, vec![entry("a", b"1", 1)], &mut out);
        register(&mut primary, "p2", 2, vec![entry("a", b"1", 1)], &mut out);
        let t = Instant::now();
        let mut copy = Index::new(7);
        let (files, peers) = listed(&mut primary);
        copy.copy_page(files, peers, t);
        copy.take_over(9, t);
        let mut out = Vec::new();
        // A copied peer is not known by its device: a heartbeat says so,
        // and it registers again with its own.
        let hb = TrackerRequest::Heartbeat {
            name: "p1".into(),
            device: 1,
            transfers: vec![],
            failing: 0,
            errors: vec![],
        };
        assert!(matches!(
            ask(&mut copy, hb.clone(), &mut out),
            TrackerReply::Error {
                kind: zync_proto::ErrorKind::UnknownPeer,
                ..
            }
        ));
        assert!(matches!(
            register(&mut copy, "p1", 1, vec![entry("a", b"1", 1)], &mut out),
            TrackerReply::Registered { epoch: 9, .. }
        ));
        assert_eq!(ask(&mut copy, hb, &mut out), TrackerReply::Ok);
        // p2 never comes: three heartbeats later it is gone, p1 stays.
        copy.touch("p1", 1, t + Duration::from_secs(4));
        copy.expire(t + Duration::from_secs(4), Duration::from_secs(3), &mut out);
        assert_eq!(names(listed(&mut copy).1), ["p1"]);
        assert!(copy.holders_sound());
    }
}
