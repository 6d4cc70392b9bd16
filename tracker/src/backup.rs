//! The backup tracker's side of Binary Star (`zync-tracker --backup-of`):
//! it follows the primary, keeping a live copy of its index, and stands by;
//! it takes over only when it has lost the primary *and* a client comes to
//! it (the guide's rule against split brain: a backup that merely lost
//! sight of a primary that clients still reach never serves), and stands
//! by again as soon as it hears the primary.
//!
//! The primary needs no flag and knows nothing of its backup: the backup
//! asks it `Follow` (where it publishes), subscribes, pages a `List`
//! snapshot and applies the notifications in sequence, as a peer does.
//! Lost means: the connection to it broke (known at once, through a socket
//! monitor, when its process dies) or nothing came from it for two of its
//! heartbeats (a `Hugz` comes every one). While it is lost, the backup asks
//! `Follow` again every heartbeat; the first answer is the primary back.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use zync_net::{NetError, Socket, TrackerClient};
use zync_proto::{decode, encode, Event, Notification, TrackerReply, TrackerRequest};

use crate::index::Index;
use crate::{zerr, Error};

/// How long a snapshot page from the primary may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The primary's subscription: where, the socket, and its watch.
struct Subscription {
    endpoint: String,
    sub: Socket,
    broken: Socket,
}

/// Following a primary tracker.
pub(crate) struct Backup {
    ctx: zync_net::Context,
    /// The primary's request endpoint.
    pub(crate) primary: String,
    /// Asks `Follow` without waiting (a DEALER): the primary's liveness probe.
    asker: Socket,
    sub: Option<Subscription>,
    /// The last sign of life of the primary; `None` once lost.
    heard: Option<Instant>,
    /// The primary's heartbeat (`Hugz`) interval.
    heartbeat: Duration,
    asked: Option<Instant>,
    /// The copy is in step with the primary's notifications.
    in_step: bool,
    /// Serving clients (the primary was lost and a client came).
    pub(crate) active: bool,
}

impl Backup {
    /// A backup of the tracker whose request endpoint is `primary`.
    pub(crate) fn new(
        ctx: &zync_net::Context,
        primary: &str,
        heartbeat: Duration,
    ) -> Result<Backup, Error> {
        let primary = zync_net::tcp(primary);
        let asker = ctx
            .dealer(&primary)
            .map_err(zerr(format!("connect {primary}")))?;
        Ok(Backup {
            ctx: ctx.clone(),
            primary,
            asker,
            sub: None,
            heard: None,
            heartbeat,
            asked: None,
            in_step: false,
            active: false,
        })
    }

    /// The sockets to wait on beside the tracker's own.
    pub(crate) fn sockets(&self) -> Vec<&Socket> {
        let mut v = vec![&self.asker];
        if let Some(s) = &self.sub {
            v.push(&s.sub);
            v.push(&s.broken);
        }
        v
    }

    /// Whether the primary is lost at `now`.
    pub(crate) fn primary_lost(&self, now: Instant) -> bool {
        self.heard
            .is_none_or(|t| now.saturating_duration_since(t) > self.heartbeat * 2)
    }

    /// How long until the next thing to do with no message.
    pub(crate) fn next_wait(&self, now: Instant) -> Duration {
        match self.heard {
            // Heard lately: when it would count as lost.
            Some(t) if !self.primary_lost(now) => {
                (t + self.heartbeat * 2).saturating_duration_since(now)
            }
            // Lost: when to ask it again (not at once, over and over).
            _ => self.asked.map_or(Duration::ZERO, |t| {
                (t + self.heartbeat).saturating_duration_since(now)
            }),
        }
    }

    /// Takes over: a client came while the primary is lost.
    pub(crate) fn take_over(&mut self, index: &mut Index, now: Instant) {
        self.active = true;
        index.take_over(rand::random::<u64>() | 1, now);
        warn!(event = %"tracker_takeover", primary = %self.primary,
              files = index.current.len(), peers = index.peers.len(),
              epoch = %format!("{:016x}", index.epoch),
              "the primary tracker is lost and a client came: serving the cluster");
    }

    /// Reads whatever arrived from the primary and does what is due:
    /// follow its index, notice it is lost or back, ask it again.
    pub(crate) fn turn(&mut self, index: &mut Index, now: Instant) -> Result<(), Error> {
        while let Some(body) = self.asker.try_recv_frames().map_err(zerr("follow"))? {
            // [empty delimiter, body]
            let Some(body) = body.last() else { continue };
            match decode::<TrackerReply>(body) {
                Ok(TrackerReply::Following {
                    epoch,
                    publish,
                    heartbeat_ms,
                    ..
                }) => {
                    self.heartbeat = Duration::from_millis(heartbeat_ms.clamp(50, 60_000));
                    self.subscribe(&publish)?;
                    self.heard_from(index, now, epoch);
                }
                Ok(other) => debug!(reply = ?other, "unexpected answer to Follow"),
                Err(e) => warn!(error = %e, "undecodable answer from the primary tracker"),
            }
        }
        let mut notes = Vec::new();
        if let Some(s) = &self.sub {
            while let Some(body) = s.sub.try_recv_body().map_err(zerr("subscription"))? {
                match decode::<Notification>(&body) {
                    Ok(n) => notes.push(n),
                    Err(e) => warn!(error = %e, "undecodable notification from the primary"),
                }
            }
        }
        for n in notes {
            self.heard_from(index, now, n.epoch);
            if self.active || !self.in_step {
                continue;
            }
            let hugz = matches!(n.event, Event::Hugz);
            if n.epoch != index.epoch
                || (hugz && n.seq > index.seq)
                || (!hugz && n.seq > index.seq + 1)
            {
                debug!(
                    have = index.seq,
                    got = n.seq,
                    "missed notifications; snapshot again"
                );
                self.in_step = false;
            } else if !hugz && n.seq == index.seq + 1 {
                index.seq = n.seq;
                index.copy_event(n.event, now);
            }
        }
        // After the messages: whatever arrived before the break is read
        // first, and does not count as the primary heard after it.
        if let Some(s) = &self.sub {
            let mut broke = false;
            while s
                .broken
                .try_recv_frames()
                .map_err(zerr("monitor"))?
                .is_some()
            {
                broke = true;
            }
            if broke && self.heard.is_some() {
                info!(primary = %self.primary, "connection to the primary tracker broke");
                self.heard = None;
            }
        }
        if !self.active && !self.in_step && !self.primary_lost(now) {
            self.snapshot(index, now);
        }
        if self.primary_lost(now)
            && self
                .asked
                .is_none_or(|t| now.saturating_duration_since(t) >= self.heartbeat)
        {
            self.asked = Some(now);
            let ask = [Vec::new(), encode(&TrackerRequest::Follow)];
            // Queued until the primary is reachable; never blocks.
            self.asker.try_send_frames(ask).map_err(zerr("follow"))?;
        }
        Ok(())
    }

    /// Something came from the primary (of `epoch`).
    fn heard_from(&mut self, index: &mut Index, now: Instant, epoch: u64) {
        if self.heard.is_none() {
            info!(primary = %self.primary, "primary tracker heard");
        }
        self.heard = Some(now);
        if self.active {
            self.active = false;
            self.in_step = false;
            warn!(event = %"tracker_standby", primary = %self.primary,
                  "the primary tracker is back: standing by, peers move to it");
        }
        if epoch != index.epoch {
            self.in_step = false;
        }
    }

    /// Subscribes to the primary's `publish` endpoint (unless already).
    fn subscribe(&mut self, publish: &str) -> Result<(), Error> {
        let endpoint = zync_net::reachable(publish, zync_net::host_of(&self.primary));
        if self.sub.as_ref().is_some_and(|s| s.endpoint == endpoint) {
            return Ok(());
        }
        let sub = self
            .ctx
            .subscriber(&endpoint)
            .map_err(zerr(format!("subscribe {endpoint}")))?;
        let broken = self.ctx.disconnects(&sub).map_err(zerr("monitor"))?;
        debug!(publish = %endpoint, "subscribed to the primary tracker");
        self.sub = Some(Subscription {
            endpoint,
            sub,
            broken,
        });
        self.in_step = false;
        Ok(())
    }

    /// Replaces the copy with the primary's index, page by page. It counts
    /// as of the first page's `seq`; notifications after it follow.
    fn snapshot(&mut self, index: &mut Index, now: Instant) {
        let mut client = TrackerClient::new(&self.ctx, &self.primary, PAGE_TIMEOUT);
        let mut after = None;
        let mut copy: Option<Index> = None;
        loop {
            match client.request(&TrackerRequest::List { after }) {
                Ok(TrackerReply::Snapshot {
                    epoch,
                    seq,
                    files,
                    peers,
                    next,
                }) => {
                    let c = copy.get_or_insert_with(|| {
                        let mut c = Index::new(epoch)
                            .forgetting_after(index.forget_after)
                            .paged_by(index.page_bytes);
                        c.seq = seq;
                        c
                    });
                    if c.epoch != epoch {
                        return; // restarted while paging: next turn
                    }
                    c.copy_page(files, peers, now);
                    match next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                Ok(other) => return warn!(reply = ?other, "unexpected answer to List"),
                Err(e) => {
                    if let NetError::Timeout { .. } = e {
                        self.heard = None;
                    }
                    return warn!(error = %e, "cannot copy the primary tracker's index");
                }
            }
        }
        if let Some(c) = copy {
            info!(event = %"tracker_copied", primary = %self.primary, files = c.current.len(),
                  peers = c.peers.len(), seq = c.seq, "copied the primary tracker's index");
            *index = c;
            self.in_step = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_primary_is_asked_again_each_heartbeat_not_in_a_busy_loop() {
        let ctx = zync_net::Context::new();
        let hb = Duration::from_millis(300);
        // Nothing listens there: the primary is never heard.
        let mut b = Backup::new(&ctx, "127.0.0.1:1", hb).unwrap();
        let t = Instant::now();
        assert!(b.primary_lost(t));
        assert_eq!(b.next_wait(t), Duration::ZERO, "ask at once");
        b.asked = Some(t);
        assert_eq!(b.next_wait(t), hb);
        // Heard, then silent past two heartbeats: asked again a heartbeat
        // after the last ask.
        b.heard = Some(t);
        assert_eq!(b.next_wait(t), hb * 2, "lost only after two heartbeats");
        let later = t + hb * 3;
        assert!(b.primary_lost(later));
        b.asked = Some(later);
        assert_eq!(b.next_wait(later), hb);
    }
}
