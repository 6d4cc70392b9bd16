//! The tracker's socket loop: a ROUTER for requests, a PUB for
//! notifications, the heartbeat clock. Decisions are `handle`'s.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use zync_proto::{decode, encode, ErrorKind, Event, Notification, TrackerRequest};

use crate::backup::Backup;
use crate::handle::error;
use crate::index::Index;
use crate::{zerr, Config, Error};

/// A running tracker's sockets and state.
pub struct Tracker {
    router: zync_net::Socket,
    publisher: zync_net::Socket,
    listen: String,
    publish: String,
    cfg: Config,
    index: Index,
    /// Following a primary (`Config::backup_of`).
    backup: Option<Backup>,
}

impl Tracker {
    /// Binds the request and publish sockets (`tcp://HOST:PORT`; port `*` or 0 picks one).
    pub fn bind(
        ctx: &zync_net::Context,
        listen: &str,
        publish: &str,
        cfg: Config,
    ) -> Result<Tracker, Error> {
        let router = ctx
            .router(listen, zync_proto::MAX_MESSAGE_SIZE)
            .map_err(zerr(format!("bind {listen}")))?;
        let publisher = ctx
            .publisher(publish)
            .map_err(zerr(format!("bind {publish}")))?;
        let listen = router.endpoint().map_err(zerr("read bound endpoint"))?;
        let publish = publisher.endpoint().map_err(zerr("read bound endpoint"))?;
        let index = Index::new(rand::random::<u64>() | 1)
            .forgetting_after(cfg.forget_deleted_after)
            .paged_by(cfg.page_bytes);
        let backup = match &cfg.backup_of {
            Some(primary) => Some(Backup::new(ctx, primary, cfg.heartbeat)?),
            None => None,
        };
        Ok(Tracker {
            backup,
            router,
            publisher,
            listen,
            publish,
            cfg,
            index,
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
        match &self.backup {
            None => info!(epoch = %format!("{:016x}", self.index.epoch), listen = %self.listen,
                          publish = %self.publish, "tracker started"),
            Some(b) => info!(listen = %self.listen, publish = %self.publish, primary = %b.primary,
                             "backup tracker started: standing by"),
        }
        let timeout = self.cfg.heartbeat * 3;
        let mut next_tick = Instant::now() + self.cfg.heartbeat;
        let mut out = Vec::new();
        while !stop.is_triggered() {
            let now = Instant::now();
            let mut wait = next_tick
                .saturating_duration_since(now)
                .min(Duration::from_millis(100));
            let mut sockets = vec![&self.router];
            if let Some(b) = &self.backup {
                wait = wait.min(b.next_wait(now));
                sockets.extend(b.sockets());
            }
            let ready = zync_net::wait_any(&sockets, wait).map_err(zerr("poll"))?;
            // What came from the primary first: a takeover is decided on
            // the latest news of it.
            if let Some(b) = &mut self.backup {
                b.turn(&mut self.index, Instant::now())?;
            }
            if ready[0] {
                // Drain everything queued before looking at timers again.
                while let Ok(Some(frames)) = self.router.try_recv_frames() {
                    self.serve(frames, &mut out)?;
                }
            }
            let now = Instant::now();
            if self.backup.as_ref().is_some_and(|b| !b.active) {
                // Standing by: the primary's index, the primary's clock.
                out.clear();
                next_tick = now + self.cfg.heartbeat;
            } else if now >= next_tick {
                self.index.expire(now, timeout, &mut out);
                self.index.collect(now, self.cfg.heartbeat, &mut out);
                out.push(Notification {
                    epoch: self.index.epoch,
                    seq: self.index.seq,
                    event: Event::Hugz,
                });
                next_tick = now + self.cfg.heartbeat;
            }
            let m = crate::metrics::metrics();
            m.published.inc_by(out.len() as u64);
            for n in out.drain(..) {
                self.publisher.send(encode(&n)).map_err(zerr("publish"))?;
            }
            m.peers_live.set(self.index.peers.len() as i64);
            m.paths.set(self.index.current.len() as i64);
            m.seq.set(self.index.seq as i64);
            m.active
                .set(i64::from(self.backup.as_ref().is_none_or(|b| b.active)));
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
        let now = Instant::now();
        let mut kind = "malformed";
        let reply = match decode::<TrackerRequest>(&body) {
            Ok(_) if self.standing_by(now) => {
                kind = "standby";
                debug!("standing by: a client is sent to the primary");
                error(
                    ErrorKind::Standby,
                    "a backup tracker standing by: its primary is alive, ask it",
                )
            }
            Ok(req) => {
                kind = req.kind();
                self.index.handle(req, now, &self.cfg, &self.publish, out)
            }
            Err(e) => {
                warn!(error = %e, bytes = body.len(), "rejected request");
                error(e.kind(), e.to_string())
            }
        };
        frames.push(encode(&reply));
        let m = crate::metrics::metrics();
        m.requests.with_label_values(&[kind]).inc();
        m.latency
            .with_label_values(&[kind])
            .observe(now.elapsed().as_secs_f64());
        // A client that went away (or a full queue) loses its reply; the
        // tracker never blocks on one client.
        self.router.try_send_frames(frames).map_err(zerr("reply"))?;
        Ok(())
    }

    /// Whether a request at `now` is refused as a backup's: the primary is
    /// alive. A client that comes while it is lost makes the backup take
    /// over (Binary Star: lost primary *and* a client).
    fn standing_by(&mut self, now: Instant) -> bool {
        let Some(b) = &mut self.backup else {
            return false;
        };
        if b.active {
            return false;
        }
        if !b.primary_lost(now) {
            return true;
        }
        b.take_over(&mut self.index, now);
        false
    }
}
