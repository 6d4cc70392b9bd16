//! Request-reply clients that never hang (the ZeroMQ guide's Lazy Pirate: on
//! a timeout the socket is thrown away and a fresh one is made for the next
//! request).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zync_proto::{decode, encode, DecodeError, ErrorKind, TrackerReply, TrackerRequest};

use crate::endpoint::tcp;
use crate::socket::{Context, Error, Message, Socket};

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No reply within the deadline.
    #[error("{endpoint} did not answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Who was asked.
        endpoint: String,
        /// How long we waited.
        after: Duration,
    },
    /// libzmq refused an operation.
    #[error("zmq: {0}")]
    Zmq(Error),
    /// The other side refused this process at the security handshake.
    #[error(
        "not a member of this cluster: wrong or missing key ({endpoint} refused the handshake)"
    )]
    NotMember {
        /// Who refused.
        endpoint: String,
    },
    /// The reply could not be decoded.
    #[error("bad reply from {endpoint}: {source}")]
    Decode {
        /// Who replied.
        endpoint: String,
        /// Why it was refused.
        source: DecodeError,
    },
    /// The other side answered with an error.
    #[error("{endpoint} refused: {message} ({kind:?})")]
    Refused {
        /// Who refused.
        endpoint: String,
        /// Error kind.
        kind: ErrorKind,
        /// Reason given.
        message: String,
    },
    /// The other side answered with the wrong message.
    #[error("unexpected reply from {0}")]
    Unexpected(String),
}

impl From<Error> for NetError {
    fn from(e: Error) -> NetError {
        match e {
            Error::NotMember { endpoint } => NetError::NotMember { endpoint },
            other => NetError::Zmq(other),
        }
    }
}

impl NetError {
    /// Whether no tracker answered at all (silent, unreachable, or refusing
    /// us at the handshake), or a backup tracker said to ask its primary,
    /// so another one of a list may be tried.
    pub fn unanswered(&self) -> bool {
        matches!(
            self,
            NetError::Timeout { .. }
                | NetError::Zmq(_)
                | NetError::NotMember { .. }
                | NetError::Refused {
                    kind: ErrorKind::Standby,
                    ..
                }
        )
    }
}

/// Sends `body` to the REQ-REP server at `addr` (`HOST:PORT` or an
/// endpoint) on a fresh socket and waits up to `timeout` for the reply body.
pub fn ask(ctx: &Context, addr: &str, body: &[u8], timeout: Duration) -> Result<Message, NetError> {
    let endpoint = tcp(addr);
    let sock = ctx.requester(&endpoint)?;
    sock.send(body)?;
    if !sock.wait_readable(timeout)? {
        return Err(NetError::Timeout {
            endpoint,
            after: timeout,
        });
    }
    Ok(sock.recv_body()?)
}

/// Which of a list of tracker endpoints is in use: an index into the list,
/// shared by every [`TrackerClient`] of a process that follows one choice
/// (the peer's engine chooses when it registers; its heartbeat and fetch
/// workers follow).
#[derive(Clone, Debug, Default)]
pub struct Choice(Arc<AtomicUsize>);

impl Choice {
    /// The endpoint index in use.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, i: usize) {
        self.0.store(i, Ordering::Release);
    }
}

/// Splits a list of trackers as users write it (`HOST:PORT,HOST:PORT`, the
/// first one preferred) into endpoints.
pub fn tracker_endpoints(addrs: &str) -> Vec<String> {
    let v: Vec<String> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(tcp)
        .collect();
    if v.is_empty() {
        vec![tcp(addrs)]
    } else {
        v
    }
}

/// A request-reply client for a tracker that never hangs: each request gets
/// a reply or an error within its timeout, after which a fresh socket is
/// used (Lazy Pirate).
///
/// It knows a *list* of trackers, the first preferred (the guide's Binary
/// Star from the client side). [`TrackerClient::request`] asks the one in
/// use, as the [`Choice`] says; [`TrackerClient::request_first`] asks each
/// in order from the first until one answers, and makes that one the choice.
pub struct TrackerClient {
    ctx: Context,
    endpoints: Vec<String>,
    choice: Choice,
    /// The endpoint `sock` is connected to.
    used: usize,
    timeout: Duration,
    sock: Option<Socket>,
}

impl TrackerClient {
    /// A client for the trackers `addrs` (`HOST:PORT` or endpoints,
    /// comma-separated, the first preferred), with a choice of its own.
    pub fn new(ctx: &Context, addrs: &str, timeout: Duration) -> TrackerClient {
        TrackerClient::following(ctx, addrs, timeout, Choice::default())
    }

    /// A client that uses whichever tracker `choice` says, and changes it
    /// when [`TrackerClient::request_first`] finds another.
    pub fn following(
        ctx: &Context,
        addrs: &str,
        timeout: Duration,
        choice: Choice,
    ) -> TrackerClient {
        TrackerClient {
            ctx: ctx.clone(),
            endpoints: tracker_endpoints(addrs),
            used: choice.get(),
            choice,
            timeout,
            sock: None,
        }
    }

    /// The choice this client follows.
    pub fn choice(&self) -> Choice {
        self.choice.clone()
    }

    /// Every tracker it knows, the first preferred.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The index of the endpoint in use.
    fn current(&self) -> usize {
        self.choice.get().min(self.endpoints.len() - 1)
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current()]
    }

    /// Sends `req` to the tracker in use and waits for the reply. A
    /// tracker-side `Error` reply is returned as [`NetError::Refused`].
    pub fn request(&mut self, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        self.request_at(self.current(), req)
    }

    /// Sends `req` to each tracker in turn, from the first, until one
    /// answers (a refusal is an answer), and makes that one the choice.
    /// Returns the last error if none answers.
    pub fn request_first(&mut self, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        self.request_from(0, req)
    }

    /// Like [`TrackerClient::request_first`], but from the tracker after
    /// the one in use, wrapping around to it last: after the one in use
    /// went silent, the others are asked before it (Binary Star's client
    /// fails over on a timeout instead of waiting on the dead one again).
    pub fn request_next(&mut self, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        self.request_from(self.current() + 1, req)
    }

    fn request_from(
        &mut self,
        start: usize,
        req: &TrackerRequest,
    ) -> Result<TrackerReply, NetError> {
        let mut last = None;
        let n = self.endpoints.len();
        for i in (start..start + n).map(|i| i % n) {
            match self.request_at(i, req) {
                Err(e) if e.unanswered() => last = Some(e),
                answered => {
                    self.choice.set(i);
                    return answered;
                }
            }
        }
        Err(last.unwrap_or_else(|| NetError::Unexpected("no tracker endpoint".into())))
    }

    /// Sends `req` to the tracker in use; if it does not answer, to each
    /// other in turn ([`TrackerClient::request_next`]). For a client that
    /// only reads (the CLI, zync-web): whichever tracker answers will do.
    pub fn request_any(&mut self, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        match self.request(req) {
            Err(e) if e.unanswered() && self.endpoints.len() > 1 => self.request_next(req),
            answered => answered,
        }
    }

    fn request_at(&mut self, i: usize, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        if i != self.used {
            self.sock = None;
            self.used = i;
        }
        let endpoint = &self.endpoints[i];
        let sock = match self.sock.take() {
            Some(s) => s,
            None => self.ctx.requester(endpoint)?,
        };
        sock.send(encode(req))?;
        if !sock.wait_readable(self.timeout)? {
            // Dropping a REQ socket that is waiting for a reply resets it.
            return Err(NetError::Timeout {
                endpoint: endpoint.clone(),
                after: self.timeout,
            });
        }
        let body = sock.recv_body()?;
        self.sock = Some(sock);
        match decode::<TrackerReply>(&body) {
            Ok(TrackerReply::Error { kind, message }) => Err(NetError::Refused {
                endpoint: endpoint.clone(),
                kind,
                message,
            }),
            Ok(r) => Ok(r),
            Err(source) => Err(NetError::Decode {
                endpoint: endpoint.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_tracker_times_out_instead_of_hanging() {
        let ctx = Context::new();
        // Nothing listens on port 1 of the loopback.
        let mut c = TrackerClient::new(&ctx, "127.0.0.1:1", Duration::from_millis(200));
        let t = std::time::Instant::now();
        assert!(matches!(
            c.request(&TrackerRequest::Peers),
            Err(NetError::Timeout { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(2));
        // And the client is usable again afterwards.
        assert!(matches!(
            c.request(&TrackerRequest::Peers),
            Err(NetError::Timeout { .. })
        ));
    }

    #[test]
    fn a_list_of_trackers_is_split_and_the_first_is_preferred() {
        assert_eq!(
            tracker_endpoints("a:1, b:2,,tcp://c:3"),
            ["tcp://a:1", "tcp://b:2", "tcp://c:3"]
        );
        assert_eq!(tracker_endpoints("a:1"), ["tcp://a:1"]);
        let ctx = Context::new();
        let c = TrackerClient::new(&ctx, "a:1,b:2", Duration::from_millis(10));
        assert_eq!(c.endpoint(), "tcp://a:1");
    }

    #[test]
    fn request_first_moves_to_the_first_tracker_that_answers_and_followers_follow() {
        let ctx = Context::new();
        // A tracker stand-in on an ephemeral port that refuses everything:
        // a refusal is an answer.
        let rep = ctx
            .router("tcp://127.0.0.1:*", zync_proto::MAX_MESSAGE_SIZE)
            .unwrap();
        let live = rep.endpoint().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let frames = rep.recv_frames().unwrap();
                let mut reply: Vec<Vec<u8>> = frames[..frames.len() - 1].to_vec();
                reply.push(encode(&TrackerReply::Error {
                    kind: ErrorKind::UnknownPeer,
                    message: "who?".into(),
                }));
                rep.send_frames(reply).unwrap();
            }
        });
        let addrs = format!("127.0.0.1:1,{live}");
        let mut c = TrackerClient::new(&ctx, &addrs, Duration::from_millis(200));
        let mut follower =
            TrackerClient::following(&ctx, &addrs, Duration::from_millis(200), c.choice());
        // The one in use (the first) is silent: a plain request fails ...
        assert!(matches!(
            c.request(&TrackerRequest::Peers),
            Err(NetError::Timeout { .. })
        ));
        // ... and request_first finds the second and chooses it.
        assert!(matches!(
            c.request_first(&TrackerRequest::Peers),
            Err(NetError::Refused {
                kind: ErrorKind::UnknownPeer,
                ..
            })
        ));
        assert_eq!(c.endpoint(), live);
        // A follower now asks the chosen one.
        assert_eq!(follower.endpoint(), live);
        assert!(matches!(
            follower.request(&TrackerRequest::Peers),
            Err(NetError::Refused { .. })
        ));
        server.join().unwrap();
    }

    /// A tracker stand-in on an ephemeral port that answers `n` requests
    /// with `reply`.
    fn stand_in(
        ctx: &Context,
        reply: TrackerReply,
        n: usize,
    ) -> (String, std::thread::JoinHandle<()>) {
        let rep = ctx
            .router("tcp://127.0.0.1:*", zync_proto::MAX_MESSAGE_SIZE)
            .unwrap();
        let endpoint = rep.endpoint().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..n {
                let frames = rep.recv_frames().unwrap();
                let mut out: Vec<Vec<u8>> = frames[..frames.len() - 1].to_vec();
                out.push(encode(&reply));
                rep.send_frames(out).unwrap();
            }
        });
        (endpoint, server)
    }

    #[test]
    fn a_standby_backup_sends_clients_on_to_the_next_tracker() {
        let ctx = Context::new();
        let standby = TrackerReply::Error {
            kind: ErrorKind::Standby,
            message: "ask the primary".into(),
        };
        let (backup, b) = stand_in(&ctx, standby, 2);
        let (primary, p) = stand_in(&ctx, TrackerReply::Peers { peers: vec![] }, 2);
        // Listed first, the standby backup is asked first and passed over.
        let mut c =
            TrackerClient::new(&ctx, &format!("{backup},{primary}"), Duration::from_secs(5));
        let r = c.request_first(&TrackerRequest::Peers);
        assert!(matches!(r, Ok(TrackerReply::Peers { .. })), "{r:?}");
        assert_eq!(c.endpoint(), primary);
        // request_next starts after the one in use and wraps: the backup
        // (still standing by) is asked, then the primary again.
        let r = c.request_next(&TrackerRequest::Peers);
        assert!(matches!(r, Ok(TrackerReply::Peers { .. })), "{r:?}");
        assert_eq!(c.endpoint(), primary);
        b.join().unwrap();
        p.join().unwrap();
    }

    #[test]
    fn ask_times_out_on_silence() {
        let ctx = Context::new();
        let t = std::time::Instant::now();
        let r = ask(&ctx, "127.0.0.1:1", b"x", Duration::from_millis(200));
        assert!(matches!(r, Err(NetError::Timeout { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
