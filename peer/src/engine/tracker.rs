//! The tracker session carried out: registering, the paged snapshot,
//! notifications, and the outbox of local versions. What state the session
//! is in, and what each event does to it, is [`crate::session::Session`]'s.

use super::*;

/// Entries of a snapshot page applied per turn of the engine's loop
/// (some milliseconds' work).
const PAGE_SLICE: usize = 1024;

/// Batches of a registration read from the index ahead of the one being
/// sent.
const REGISTER_AHEAD: usize = 2;

/// Most bytes of entries in one batch of a registration. Smaller than a
/// page: the batches read ahead, the one being sent and its encrypted copy
/// in libzmq are all in memory at once (at [`PAGE_BYTES`], ~70 MB of a
/// restarted peer's peak at a million files), and the sender thread keeps
/// small batches overlapping as well as large ones.
const REGISTER_BYTES: usize = 1 << 20;

/// Most notifications held while a snapshot page comes; past it, the
/// snapshot is taken again instead.
const MAX_HELD_NOTES: usize = 65_536;

impl Engine {
    /// True if a heartbeat sent under `generation` was sent after the latest
    /// registration (else what it found out is already out of date).
    pub(super) fn is_current(&self, generation: u64) -> bool {
        generation == self.registration.generation.load(Ordering::Acquire)
    }

    /// Registers (the session has taken the attempt as started).
    pub(super) fn register(&mut self) {
        // Registering reports the whole index: record it first.
        if let Err(e) = self.folder.save() {
            return self.register_failed(format!("cannot save the index first: {e}"));
        }
        // Read from the index batch by batch, as they are sent: memory
        // holds a few batches, whatever the size of the folder.
        let (name, device) = (self.s.name.clone(), self.folder.device());
        let mut batches = batch(self.folder.entries().map(|le| le.entry), REGISTER_BYTES);
        let first = batches.next().unwrap_or_default();
        let req = TrackerRequest::Register {
            name: name.clone(),
            device,
            endpoint: self.s.advertise.clone(),
            files: first,
        };
        // From the first tracker of the list that answers; after the one
        // in use went silent, from the next one.
        let first = match self.session.after_silence() {
            true => self.tracker.request_next(&req),
            false => self.tracker.request_first(&req),
        };
        let tracker = &mut self.tracker;
        let reply = first.and_then(|r| {
            // The rest as updates, sent from a thread of their own: this
            // thread reads the next batch from the index while the tracker
            // takes in the last one.
            std::thread::scope(|scope| {
                let (tx, rx) = crossbeam_channel::bounded::<Vec<FileEntry>>(REGISTER_AHEAD);
                let sender = scope.spawn(move || {
                    for files in rx {
                        let (name, device) = (name.clone(), device);
                        tracker.request(&TrackerRequest::Update {
                            name,
                            device,
                            files,
                        })?;
                    }
                    Ok::<_, NetError>(())
                });
                for files in batches {
                    if tx.send(files).is_err() {
                        break; // the sender failed: its error says why
                    }
                }
                drop(tx);
                // A panic there is one here, as when this thread sent.
                sender
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })?;
            Ok(r)
        });
        match reply {
            Ok(TrackerReply::Registered {
                epoch,
                publish,
                heartbeat_ms,
            }) => {
                if self.session.registered(epoch) {
                    info!(event = %"tracker_restarted", tracker = %self.tracker.endpoint(),
                          epoch = %format!("{epoch:016x}"), "tracker restarted; re-registered");
                }
                let tracker = self.tracker.endpoint().to_owned();
                match self.s.choice.get() {
                    0 => {
                        info!(tracker = %tracker, files = self.folder.len(), "registered with tracker")
                    }
                    _ => warn!(event = %"tracker_failover", tracker = %tracker,
                               preferred = %self.tracker.endpoints()[0], files = self.folder.len(),
                               "the preferred tracker does not answer; registered with a backup"),
                }
                self.registration
                    .heartbeat_ms
                    .store(heartbeat_ms, Ordering::Relaxed);
                self.registration.generation.fetch_add(1, Ordering::Release);
                self.forget_pages();
                let host = net::host_of(&tracker).to_owned();
                let _ = self.sub_endpoints.send(net::reachable(&publish, &host));
                self.outbox.clear();
                if self.fault.as_deref() == Some("no-saves-after-registering") {
                    warn!("ZYNC_FAULT: the index is not saved from now on");
                    self.folder.stop_saving();
                }
            }
            Ok(_) => self.register_failed("unexpected reply".into()),
            Err(e) => self.register_failed(e.to_string()),
        }
    }

    pub(super) fn register_failed(&mut self, why: String) {
        let wait = self.session.register_failed(Instant::now());
        warn!(trackers = %self.tracker.endpoints().join(","), error = %why, retry_in = %humantime::format_duration(wait),
              "cannot register with tracker");
    }

    /// The preferred tracker answers again while we are registered with a
    /// backup: say goodbye to the backup and register with the preferred
    /// one, so every peer ends up with the first tracker that answers it.
    pub(super) fn fail_back(&mut self) {
        info!(event = %"tracker_failback", from = %self.tracker.endpoint(),
              tracker = %self.tracker.endpoints()[0], "the preferred tracker is back; moving to it");
        let req = TrackerRequest::Unregister {
            name: self.s.name.clone(),
            device: self.folder.device(),
        };
        let _ = self.tracker.request(&req);
        self.session.lost(Instant::now(), true);
    }

    /// Fetches the cluster index page by page and applies each page as it
    /// comes, as long as the download queue has room: a page is asked for
    /// only while fewer than `backlog` downloads are in progress
    /// ([`crate::Config::backlog`]) with what is left of the last page, so
    /// a late joiner queues at most that many and one page, however large
    /// the cluster's index. Downloads waiting out a backoff (their holders
    /// gone, say) do not count: they must not keep the rest of the index
    /// from being learnt.
    ///
    /// Pages are asked of the [`Pager`], one at a time, and applied a slice
    /// per turn of the loop: the engine goes on installing downloads while
    /// the tracker builds the next page and while a page is applied.
    /// Notifications that come meanwhile are held and applied after the
    /// page, in sequence ([`crate::session`] says why that is sound).
    pub(super) fn snapshot(&mut self) {
        self.apply_page_slice();
        if self.page_asked.is_some() {
            return;
        }
        let Some(after) = self.session.next_page() else {
            return;
        };
        if self.downloads.in_progress() + self.page_left.len() >= self.s.backlog {
            return; // the loop asks again as downloads finish
        }
        self.page_asks += 1;
        if self.s.pager.ask(self.page_asks, after.clone()) {
            self.page_asked = Some((self.page_asks, after));
        } else {
            error!("the pager's thread is gone; cannot fetch the cluster index");
        }
    }

    /// The pager's reply to a page asked for.
    pub(super) fn on_page(&mut self, Page { id, reply }: Page) {
        let after = match self.page_asked.take() {
            Some((asked, after)) if asked == id => after,
            other => {
                // Asked before the session started over: of no use now.
                self.page_asked = other;
                return debug!(
                    ask = id,
                    "dropping a snapshot page asked for before the session started over"
                );
            }
        };
        if self.session.next_page().as_ref() != Some(&after) {
            return debug!("dropping a snapshot page the session no longer wants");
        }
        match reply {
            Ok(TrackerReply::Snapshot {
                epoch,
                seq,
                files,
                next,
                peers,
            }) => {
                let more = next.is_some();
                if !self.session.page(Instant::now(), epoch, seq, next) {
                    // A tracker other than the one we registered with: start over.
                    return;
                }
                debug!(
                    seq,
                    files = files.len(),
                    more,
                    queued = self.downloads.len(),
                    "applying snapshot page"
                );
                self.peers = peers
                    .into_iter()
                    .filter(|p| p.name != self.s.name)
                    .map(|p| (p.name.clone(), p))
                    .collect();
                self.page_left.extend(files);
                self.page_last = !more;
                self.apply_page_slice();
            }
            // Still snapshotting: the next turn of the loop asks again.
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "cannot fetch the cluster index");
                self.session.lost(Instant::now(), false);
            }
        }
    }

    /// Applies the next slice of the last page; once the snapshot's last
    /// page is applied whole, tells the observer.
    fn apply_page_slice(&mut self) {
        if self.page_left.is_empty() {
            return;
        }
        for _ in 0..PAGE_SLICE {
            let Some(f) = self.page_left.pop_front() else {
                break;
            };
            self.apply_cluster_file(f);
        }
        if self.page_left.is_empty() && std::mem::take(&mut self.page_last) {
            if let Some(o) = &self.s.observer {
                let _ = o.try_send(crate::Observed::Snapshot);
            }
        }
    }

    /// Applies the notifications held while a page was asked for or
    /// applied, once neither is so.
    pub(super) fn release_held_notes(&mut self) {
        if self.held_notes.is_empty() || self.page_pending() {
            return;
        }
        for n in std::mem::take(&mut self.held_notes) {
            self.on_note(n);
        }
    }

    /// Starts the snapshot over with nothing of an earlier one pending:
    /// a reply to a page asked for before is dropped when it comes.
    fn forget_pages(&mut self) {
        self.page_asked = None;
        self.page_left.clear();
        self.page_last = false;
        self.held_notes.clear();
    }

    /// Whether a snapshot page is asked for or not yet applied whole:
    /// notifications wait for it.
    fn page_pending(&self) -> bool {
        self.page_asked.is_some() || !self.page_left.is_empty()
    }

    pub(super) fn on_note(&mut self, n: Notification) {
        if self.page_pending() {
            if self.held_notes.len() < MAX_HELD_NOTES {
                return self.held_notes.push(n);
            }
            // So many changes while one page came: take the index again.
            warn!(
                held = self.held_notes.len(),
                "too many notifications while a snapshot page came; fetching the snapshot again"
            );
            self.forget_pages();
            return self.session.resync();
        }
        let (before, hugz) = (self.session.seq(), matches!(n.event, Event::Hugz));
        match self.session.note(Instant::now(), n.epoch, n.seq, hugz) {
            NoteVerdict::Ignore => {
                if self.session.wants_snapshot() && n.seq > before + 1 && !hugz {
                    debug!(
                        have = before,
                        got = n.seq,
                        "missed notifications; fetching a snapshot"
                    );
                }
            }
            NoteVerdict::Apply => {
                if let Some(o) = &self.s.observer {
                    let _ = o.try_send(crate::Observed::Note(Box::new(n.clone())));
                }
                let event = n.event;
                match event {
                    Event::FileChanged { file } => self.apply_cluster_file(file),
                    Event::PeerJoined { peer } if peer.name != self.s.name => {
                        info!(event = %"peer_joined", peer = %peer.name, endpoint = %peer.endpoint, "peer joined");
                        self.peers.insert(peer.name.clone(), peer);
                        // A new source: retry what was waiting for one.
                        self.downloads.wake_all(Instant::now());
                    }
                    Event::Forgotten { entry } => self.forget(&entry),
                    Event::PeerLeft { name } if name != self.s.name => {
                        info!(event = %"peer_left", peer = %name, "peer left");
                        self.peers.remove(&name);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The cluster forgot the deletion `entry`: so do we, if it is ours.
    fn forget(&mut self, entry: &FileEntry) {
        if self.folder.forget(entry) {
            info!(event = %"forgotten", path = %entry.path, version = %entry.version,
                  "the cluster forgot this deletion; so do we");
        }
    }

    /// Queues a new local version for the tracker. Until the peer is
    /// registered there is nothing to queue: registering sends the whole
    /// index (and a first scan of a large folder would queue all of it).
    pub(super) fn report(&mut self, entry: FileEntry) {
        if entry.path.components().last() == Some(IGNORE_FILE) {
            self.ignore_changed(&entry.path);
        }
        if self.session.is_registered() {
            self.outbox.push(entry);
        }
    }

    /// A `.zyncignore` changed here (an edit, or the cluster's version put
    /// in place): with new rules, a path no longer ignored is looked at
    /// again, here (a rescan) and in the cluster (the index fetched again);
    /// one now ignored is left as it is.
    fn ignore_changed(&mut self, file: &RelPath) {
        if self.ignore.reload(file) {
            info!(event = %"ignore_changed", path = %file, "ignore patterns changed; looking at the folder and the cluster again");
            self.scan(Cause::Scan);
            self.session.resync();
        }
    }

    /// Logs, once, when the tracker has acknowledged every file the first
    /// scan found (registration sends the index as the walk left it, and
    /// the files still being hashed then follow as updates) and the peer
    /// has taken in the cluster's index. From this line on, the cluster
    /// can fetch every file this peer had at start, and the peer knows
    /// what it lacks.
    pub(super) fn note_scan_reported(&mut self) {
        if self.scan_reported
            || !self.scanned_once
            || self.scanning.is_some()
            || !self.hashing.is_empty()
            || !self.unstable.is_empty()
            || !self.outbox.is_empty()
            || !self.session.is_registered()
            || self.session.wants_snapshot()
            || !self.page_left.is_empty()
        {
            return;
        }
        self.scan_reported = true;
        info!(event = %"scan_reported", tracker = %self.tracker.endpoint(), files = self.folder.len(),
              "the tracker knows every file found at start");
    }

    pub(super) fn flush_outbox(&mut self) {
        if self.outbox.is_empty() || !self.session.is_registered() {
            return;
        }
        // Recorded before reported: a crash after this loses no change the
        // cluster has heard of.
        if let Err(e) = self.folder.flush_journal() {
            return error!(error = %e, "cannot journal local changes; not reporting them yet");
        }
        for files in batch(std::mem::take(&mut self.outbox), PAGE_BYTES) {
            let req = TrackerRequest::Update {
                name: self.s.name.clone(),
                device: self.folder.device(),
                files,
            };
            match self.tracker.request(&req) {
                Ok(_) => {}
                Err(NetError::Refused {
                    kind: zync_proto::ErrorKind::UnknownPeer,
                    ..
                }) => {
                    self.session.lost(Instant::now(), true);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot report changes to the tracker");
                    // Registration sends the whole index, so nothing is lost.
                    self.session.lost(Instant::now(), false);
                    return;
                }
            }
        }
    }
}
