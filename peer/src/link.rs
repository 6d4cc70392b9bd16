//! The peer's two background links to the tracker, each on its own thread
//! with its own socket: the subscriber (notifications in) and the heartbeat
//! (liveness out). Both report to the engine over its input channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, warn};
use zync_proto::{decode, ErrorKind, Notification, TrackerRequest};

use zync_net::{Context, NetError, Shutdown, Socket, TrackerClient};

/// What the links tell the engine.
pub enum LinkEvent {
    /// A notification from the tracker's PUB socket.
    Note(Box<Notification>),
    /// Heartbeats stopped getting answers, or the subscription's connection
    /// broke. `generation` is the [`Registration::generation`] the failing
    /// heartbeat was sent (or the subscription made) under.
    TrackerLost {
        /// Registration the heartbeat belonged to.
        generation: u64,
    },
    /// The tracker answered but does not know us (it restarted, or dropped us).
    ForgotUs {
        /// Registration the heartbeat belonged to.
        generation: u64,
    },
    /// We are registered with a backup tracker and the preferred one (the
    /// first of the list) answers again.
    PreferredBack {
        /// Registration the heartbeat belonged to.
        generation: u64,
    },
}

/// What the engine shares with the heartbeat thread.
#[derive(Debug)]
pub struct Registration {
    /// The heartbeat interval the tracker asked for.
    pub heartbeat_ms: AtomicU64,
    /// Counts successful registrations. A heartbeat answered "unknown peer"
    /// (or not at all) that was sent before the latest registration says
    /// nothing about it: the engine drops such events instead of registering
    /// again (a peer whose first scan takes longer than a heartbeat would
    /// otherwise register twice at every start).
    pub generation: AtomicU64,
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            heartbeat_ms: AtomicU64::new(1000),
            generation: AtomicU64::new(0),
        }
    }
}

/// The subscription in use: its endpoint, the socket, the watch on its
/// connection, and the registration it was made for.
struct Subscription {
    endpoint: String,
    sock: Socket,
    broken: Socket,
    generation: u64,
}

/// Subscribes to whatever endpoint arrives on `endpoints` (switching when a
/// new one arrives) and forwards every decodable notification. When the
/// connection to the tracker breaks (its process died: the kernel closes
/// its sockets), it reports the tracker lost at once, without waiting for
/// a heartbeat to go unanswered.
pub fn subscriber(
    ctx: Context,
    endpoints: Receiver<String>,
    registration: Arc<Registration>,
    out: Sender<LinkEvent>,
    stop: Shutdown,
) {
    let mut current: Option<Subscription> = None;
    while !stop.is_triggered() {
        // Until registered there is nothing to read: wait for an endpoint.
        let next = match current {
            None => endpoints.recv_timeout(Duration::from_millis(200)).ok(),
            Some(_) => endpoints.try_iter().last(),
        };
        if let Some(ep) = next {
            // Sent after the registration it belongs to.
            let generation = registration.generation.load(Ordering::Acquire);
            match &mut current {
                Some(s) if s.endpoint == ep => s.generation = generation,
                _ => current = subscribe(&ctx, ep, generation),
            }
        }
        let Some(s) = &current else { continue };
        let ready = match zync_net::wait_any(&[&s.sock, &s.broken], Duration::from_millis(200)) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "subscriber poll failed");
                continue;
            }
        };
        while let Ok(Some(bytes)) = s.sock.try_recv_body() {
            match decode::<Notification>(&bytes) {
                Ok(n) => {
                    if out.send(LinkEvent::Note(Box::new(n))).is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "ignored undecodable notification"),
            }
        }
        // After the notifications: what arrived before the break is applied.
        if ready[1] {
            let mut broke = false;
            while let Ok(Some(_)) = s.broken.try_recv_frames() {
                broke = true;
            }
            let generation = s.generation;
            if broke && out.send(LinkEvent::TrackerLost { generation }).is_err() {
                return;
            }
        }
    }
}

fn subscribe(ctx: &Context, endpoint: String, generation: u64) -> Option<Subscription> {
    let made = ctx
        .subscriber(&endpoint)
        .and_then(|sock| Ok((ctx.disconnects(&sock)?, sock)));
    match made {
        Ok((broken, sock)) => Some(Subscription {
            endpoint,
            sock,
            broken,
            generation,
        }),
        Err(e) => {
            warn!(error = %e, endpoint = %endpoint, "cannot subscribe");
            None
        }
    }
}

/// How long a heartbeat waits for the tracker's answer.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);

/// While registered with a backup tracker, how often the preferred one is
/// asked whether it is back, and how long it has to answer.
const PROBE_EVERY: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The heartbeat link: beats the tracker in use (its client follows the
/// engine's choice) every `registration.heartbeat_ms`, which the engine may
/// change, and reports transitions: lost, forgotten, preferred one back.
pub struct Heartbeat {
    /// Follows the engine's choice of tracker.
    pub tracker: TrackerClient,
    /// Our name.
    pub name: String,
    /// Our device id.
    pub device: u64,
    /// Shared with the engine.
    pub registration: Arc<Registration>,
    /// The downloads under way, reported with each beat.
    pub progress: crate::transfer::Progress,
}

impl Heartbeat {
    /// Runs until `stop` fires or the engine is gone.
    pub fn run(mut self, ctx: Context, out: Sender<LinkEvent>, stop: Shutdown) {
        let preferred = self.tracker.endpoints()[0].clone();
        let mut probe = TrackerClient::new(&ctx, &preferred, PROBE_TIMEOUT);
        let mut probed = Instant::now();
        let mut reachable = true;
        loop {
            let interval = self
                .registration
                .heartbeat_ms
                .load(Ordering::Relaxed)
                .clamp(50, 60_000);
            if stop.sleep(Duration::from_millis(interval)) {
                return;
            }
            let generation = self.registration.generation.load(Ordering::Acquire);
            let (failing, errors) = self.progress.failures();
            let req = TrackerRequest::Heartbeat {
                name: self.name.clone(),
                device: self.device,
                transfers: self.progress.report(),
                failing,
                errors,
            };
            let mut event = match self.tracker.request(&req) {
                Ok(_) => {
                    reachable = true;
                    None
                }
                Err(NetError::Refused {
                    kind: ErrorKind::UnknownPeer,
                    ..
                }) => {
                    reachable = true;
                    Some(LinkEvent::ForgotUs { generation })
                }
                Err(e) => {
                    debug!(error = %e, "heartbeat failed");
                    let was = std::mem::replace(&mut reachable, false);
                    was.then_some(LinkEvent::TrackerLost { generation })
                }
            };
            // On a backup: is the preferred tracker back? Any answer says so
            // (it will not know us).
            if event.is_none()
                && self.tracker.choice().get() != 0
                && probed.elapsed() >= PROBE_EVERY
            {
                probed = Instant::now();
                let back = match probe.request(&req) {
                    Ok(_) => true,
                    // A refusal is an answer, unless it says "ask another".
                    Err(e) => !e.unanswered(),
                };
                if back {
                    event = Some(LinkEvent::PreferredBack { generation });
                }
            }
            if let Some(ev) = event {
                if out.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}
