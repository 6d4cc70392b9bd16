//! Sockets with Zync's defaults, one constructor per role.

use std::time::Duration;

use std::sync::Arc;

use zync_proto::MAX_MESSAGE_SIZE;

use crate::monitor;
use crate::security::{ClusterKey, KeyPair, MEMBER_USER_ID};

/// A socket operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libzmq refused an operation (bind, connect, send, receive).
    #[error(transparent)]
    Zmq(#[from] zmq::Error),
    /// The other end refused this process at the security handshake: it
    /// holds another cluster's key, or none where one is needed, or the
    /// other end runs without one.
    #[error(
        "not a member of this cluster: wrong or missing key ({endpoint} refused the handshake)"
    )]
    NotMember {
        /// Who refused.
        endpoint: String,
    },
    /// A socket's helper thread (its monitor) could not start.
    #[error("starting a socket monitor thread: {0}")]
    Thread(std::io::Error),
}

/// Why a secured [`Context`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// This libzmq was built without CURVE.
    #[error("this libzmq was built without CURVE (libsodium)")]
    NoCurve,
    /// libzmq refused to set up the ZAP handler's socket.
    #[error(transparent)]
    Zmq(#[from] Error),
    /// The ZAP handler's thread could not start.
    #[error("starting the ZAP handler thread: {0}")]
    Thread(std::io::Error),
}

/// Whether this libzmq can encrypt and authenticate with CURVE. The
/// workspace builds libzmq with libsodium (vendor/zmq-sys), so it can;
/// a build against another libzmq might not, and must say so at start.
pub fn has_curve() -> bool {
    zmq::has("curve").unwrap_or(false)
}

/// The sockets' shared I/O context: one per process is enough. Cheap to
/// clone. Its security (plaintext, or CURVE from a [`ClusterKey`]) applies
/// to every socket it makes: no socket can be made another way.
#[derive(Clone, Default)]
pub struct Context {
    zmq: zmq::Context,
    curve: Option<Arc<Curve>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("secured", &self.is_secured())
            .finish()
    }
}

/// The key pairs a secured context's sockets use.
struct Curve {
    server: KeyPair,
    member: KeyPair,
}

/// Which end of a connection a socket is: the one that binds is the CURVE
/// server.
#[derive(Clone, Copy)]
enum Role {
    Server,
    Client,
}

/// How long a server waits for a client's security handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Largest frame a PUB takes from a subscriber: subscribers send only
/// subscriptions (Zync's are one byte) and, before them, the security
/// handshake (its largest command, INITIATE, is a few hundred bytes).
const MAX_SUBSCRIPTION: i64 = 4096;

/// The domain a secured server asks its ZAP handler about.
const ZAP_DOMAIN: &str = "zync";

impl Context {
    /// A plaintext context: anyone who reaches a socket can talk to it.
    pub fn new() -> Context {
        Context::default()
    }

    /// A context whose sockets all use CURVE with `key`'s key pairs: a
    /// server admits only clients holding the member key, and a client
    /// talks only to servers holding the server key. Starts the ZAP handler
    /// that admits them, before any socket exists (a CURVE server with no
    /// handler would admit anyone).
    pub fn secured(key: &ClusterKey) -> Result<Context, SecureError> {
        if !has_curve() {
            return Err(SecureError::NoCurve);
        }
        let zmq = zmq::Context::new();
        let curve = Curve {
            server: key.server(),
            member: key.member(),
        };
        let handler = zmq.socket(zmq::REP).map_err(Error::Zmq)?;
        handler.set_linger(0).map_err(Error::Zmq)?;
        handler.bind("inproc://zeromq.zap.01").map_err(Error::Zmq)?;
        let admit = curve.member.public;
        std::thread::Builder::new()
            .name("zync-zap".into())
            .spawn(move || zap(handler, admit))
            .map_err(SecureError::Thread)?;
        Ok(Context {
            zmq,
            curve: Some(Arc::new(curve)),
        })
    }

    /// Whether its sockets use CURVE.
    pub fn is_secured(&self) -> bool {
        self.curve.is_some()
    }

    fn socket(&self, kind: zmq::SocketType, role: Role) -> Result<zmq::Socket, Error> {
        let mut s = self.zmq.socket(kind)?;
        // Dropping a socket with unsent messages must never block the context.
        s.set_linger(0)?;
        s.set_maxmsgsize(MAX_MESSAGE_SIZE as i64)?;
        s.set_tcp_keepalive(1)?;
        if let Some(c) = &self.curve {
            match role {
                Role::Server => {
                    // An outsider's connection is held this long at most
                    // before it is dropped unauthenticated (libzmq: 30 s).
                    s.set_handshake_ivl(millis(HANDSHAKE) as i32)?;
                    s.set_curve_server(true)?;
                    s.set_curve_secretkey(&c.server.secret)?;
                    s.set_zap_domain(ZAP_DOMAIN)?;
                    // Without a ZAP handler libzmq would admit every
                    // client; with this, it admits none instead.
                    enforce_zap_domain(&mut s)?;
                }
                Role::Client => {
                    s.set_curve_serverkey(&c.server.public)?;
                    s.set_curve_publickey(&c.member.public)?;
                    s.set_curve_secretkey(&c.member.secret)?;
                }
            }
        }
        Ok(s)
    }

    /// A server socket of a secured context logs the handshakes it refuses
    /// (a ZAP refusal is logged by the handler, with the address).
    fn log_refusals(&self, s: &zmq::Socket, endpoint: &str) -> Result<(), Error> {
        if self.curve.is_some() {
            monitor::log_refusals(&self.zmq, s, endpoint)?;
        }
        Ok(())
    }

    /// A ROUTER bound at `endpoint` (`tcp://HOST:PORT`; port `*` or 0 picks
    /// one): a server answering many clients, each frame list starting with
    /// the client's identity. A client that sends (or starts to send) a
    /// frame over `max_request` bytes is disconnected at its frame header,
    /// handshake or not.
    pub fn router(&self, endpoint: &str, max_request: usize) -> Result<Socket, Error> {
        let s = self.socket(zmq::ROUTER, Role::Server)?;
        s.set_maxmsgsize(max_request.min(MAX_MESSAGE_SIZE) as i64)?;
        self.log_refusals(&s, endpoint)?;
        s.bind(endpoint)?;
        Ok(Socket::new(s))
    }

    /// A PUB bound at `endpoint`. It queues up to 100,000 messages per slow
    /// subscriber, then drops (ZeroMQ's PUB never blocks).
    pub fn publisher(&self, endpoint: &str) -> Result<Socket, Error> {
        let s = self.socket(zmq::PUB, Role::Server)?;
        s.set_sndhwm(100_000)?;
        s.set_maxmsgsize(MAX_SUBSCRIPTION)?;
        self.log_refusals(&s, endpoint)?;
        s.bind(endpoint)?;
        Ok(Socket::new(s))
    }

    /// A SUB connected to `endpoint`, subscribed to everything, queueing up
    /// to 100,000 messages.
    pub fn subscriber(&self, endpoint: &str) -> Result<Socket, Error> {
        let s = self.socket(zmq::SUB, Role::Client)?;
        s.set_subscribe(b"")?;
        s.set_rcvhwm(100_000)?;
        s.connect(endpoint)?;
        Ok(Socket::new(s))
    }

    /// A DEALER connected to `endpoint`: several requests in flight to a
    /// ROUTER (send an empty delimiter frame first).
    pub fn dealer(&self, endpoint: &str) -> Result<Socket, Error> {
        let s = self.socket(zmq::DEALER, Role::Client)?;
        s.connect(endpoint)?;
        Ok(Socket::new(s))
    }

    /// A REQ connected to `endpoint`: one request, then its reply. A REQ
    /// whose reply never comes must be dropped (see [`crate::TrackerClient`]).
    ///
    /// It watches its security handshake: when the other end refuses it
    /// (another cluster's key, or none), [`Socket::wait_readable`] fails at
    /// once with [`Error::NotMember`] instead of waiting out its timeout
    /// (libzmq itself would say nothing and never deliver a reply).
    pub fn requester(&self, endpoint: &str) -> Result<Socket, Error> {
        let s = self.socket(zmq::REQ, Role::Client)?;
        let watch = monitor::Handshake::watch(&self.zmq, &s, endpoint)?;
        s.connect(endpoint)?;
        Ok(Socket {
            sock: s,
            handshake: Some(watch),
        })
    }
}

impl Context {
    /// A socket that becomes readable each time an established connection
    /// of `s` breaks (libzmq's `ZMQ_EVENT_DISCONNECTED`, through a
    /// monitor): the process at the other end died or closed, known at once
    /// instead of after a timeout. Each event is one message; read and drop
    /// them with [`Socket::try_recv_frames`]. A machine that vanishes
    /// without closing its connections sends nothing: pair this with a
    /// timeout.
    pub fn disconnects(&self, s: &Socket) -> Result<Socket, Error> {
        let mask = i32::from(zmq::SocketEvent::DISCONNECTED.to_raw());
        let pair = monitor::attach(&self.zmq, &s.sock, mask)?;
        Ok(Socket::new(pair))
    }
}

/// Sets `ZMQ_ZAP_ENFORCE_DOMAIN`, which the `zmq` crate does not wrap: a
/// CURVE server then refuses every client when no ZAP handler answers,
/// instead of admitting them all (libzmq's default, for compatibility).
#[allow(unsafe_code)]
fn enforce_zap_domain(s: &mut zmq::Socket) -> Result<(), Error> {
    /// `ZMQ_ZAP_ENFORCE_DOMAIN` in libzmq 4.3's zmq.h.
    const ZMQ_ZAP_ENFORCE_DOMAIN: std::ffi::c_int = 93;
    let on: std::ffi::c_int = 1;
    // SAFETY: `s` is a live socket (we hold it mutably, so no other thread
    // uses it), and the option value is a C int passed with its size, as
    // zmq_setsockopt(3) documents for this option.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            s.as_mut_ptr(),
            ZMQ_ZAP_ENFORCE_DOMAIN,
            (&on as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: reads the calling thread's libzmq errno, set by the call above.
        Err(Error::Zmq(zmq::Error::from_raw(unsafe {
            zmq_sys::zmq_errno()
        })))
    }
}

/// The ZAP handler (RFC 27) of a secured context: admits a CURVE client
/// whose public key is `admit` (a member), refuses everything else. Runs
/// for the life of the context.
fn zap(handler: zmq::Socket, admit: [u8; 32]) {
    loop {
        let frames = match handler.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::ETERM) => return,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "ZAP handler stopped; no connection will be admitted");
                return;
            }
        };
        // version, request id, domain, address, identity, mechanism, credentials...
        let field = |i: usize| frames.get(i).map(Vec::as_slice).unwrap_or_default();
        let (version, request_id, address, mechanism) = (field(0), field(1), field(3), field(5));
        let member = mechanism == b"CURVE" && field(6) == admit;
        let (code, text, user): (&[u8], &[u8], &[u8]) = if member {
            (b"200", b"OK", MEMBER_USER_ID.as_bytes())
        } else {
            tracing::warn!(event = %"refused", from = %String::from_utf8_lossy(address),
                           mechanism = %String::from_utf8_lossy(mechanism),
                           "connection refused: not a member of this cluster (wrong or missing key)");
            (b"400", b"not a member of this cluster", b"")
        };
        let reply: [&[u8]; 6] = [version, request_id, code, text, user, b""];
        if handler.send_multipart(reply, 0).is_err() {
            return;
        }
    }
}

/// A socket made by [`Context`]. `Send`, not `Sync`: one thread uses it.
pub struct Socket {
    sock: zmq::Socket,
    /// A client's watch on its security handshake (REQ sockets).
    handshake: Option<monitor::Handshake>,
}

impl Socket {
    fn new(sock: zmq::Socket) -> Socket {
        Socket {
            sock,
            handshake: None,
        }
    }

    /// The endpoint the socket is bound to, with the port the OS chose.
    pub fn endpoint(&self) -> Result<String, Error> {
        Ok(match self.sock.get_last_endpoint()? {
            Ok(ep) => ep,
            Err(raw) => String::from_utf8_lossy(&raw).into_owned(),
        })
    }

    /// Waits up to `timeout` for a message to read. A signal ends the wait
    /// early with `false`.
    ///
    /// A socket that watches its handshake fails with [`Error::NotMember`]
    /// as soon as the other end refuses it.
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool, Error> {
        let Some(handshake) = &self.handshake else {
            let mut items = [self.sock.as_poll_item(zmq::POLLIN)];
            return match zmq::poll(&mut items, millis(timeout)) {
                Ok(_) => Ok(items[0].is_readable()),
                Err(zmq::Error::EINTR) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut items = [self.sock.as_poll_item(zmq::POLLIN), handshake.poll_item()];
            match zmq::poll(&mut items, millis(left)) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            if items[0].is_readable() {
                return Ok(true);
            }
            if items[1].is_readable() {
                handshake.check()?;
                continue;
            }
            return Ok(false);
        }
    }

    /// Sends a one-frame message (waits for room if the socket blocks; a PUB
    /// never does).
    pub fn send(&self, body: impl Into<Message>) -> Result<(), Error> {
        Ok(self.sock.send(body.into().0, 0)?)
    }

    /// Sends a multi-frame message, waiting for room.
    pub fn send_frames<I, T>(&self, frames: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<Message>,
    {
        Ok(self
            .sock
            .send_multipart(frames.into_iter().map(|f| f.into().0), 0)?)
    }

    /// Sends a multi-frame message if it can go now: `Ok(false)` when a
    /// ROUTER has no route to its first frame (the client went away) or the
    /// queue is full, so a server never blocks on one client.
    pub fn try_send_frames<I, T>(&self, frames: I) -> Result<bool, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<Message>,
    {
        let frames = frames.into_iter().map(|f| f.into().0);
        match self.sock.send_multipart(frames, zmq::DONTWAIT) {
            Ok(()) => Ok(true),
            Err(zmq::Error::EHOSTUNREACH | zmq::Error::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Receives one message, waiting for it, and returns its frames.
    pub fn recv_frames(&self) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.sock.recv_multipart(0)?)
    }

    /// Receives one message if one is queued: its frames, or `None`.
    pub fn try_recv_frames(&self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        match self.sock.recv_multipart(zmq::DONTWAIT) {
            Ok(f) => Ok(Some(f)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Receives one message, waiting for it, and returns its last frame (the
    /// body, after any envelope), left in libzmq's buffer rather than copied
    /// out: a block reply is 256 KiB, and every copy of a 1 GiB transfer
    /// costs a pass over it.
    pub fn recv_body(&self) -> Result<Message, Error> {
        let mut msg = self.sock.recv_msg(0)?;
        while msg.get_more() {
            msg = self.sock.recv_msg(0)?;
        }
        Ok(Message(msg))
    }

    /// Receives the body of one message if one is queued.
    pub fn try_recv_body(&self) -> Result<Option<Message>, Error> {
        match self.sock.recv_msg(zmq::DONTWAIT) {
            Ok(mut msg) => {
                while msg.get_more() {
                    msg = self.sock.recv_msg(0)?;
                }
                Ok(Some(Message(msg)))
            }
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A timeout as zmq_poll takes it.
/// Waits up to `timeout` until one of `sockets` has a message to read, and
/// says which do (none if the time ran out, or a signal ended the wait).
/// For sockets that do not watch a handshake (dealers).
pub fn wait_any(sockets: &[&Socket], timeout: Duration) -> Result<Vec<bool>, Error> {
    let mut items: Vec<zmq::PollItem<'_>> = sockets
        .iter()
        .map(|s| s.sock.as_poll_item(zmq::POLLIN))
        .collect();
    match zmq::poll(&mut items, millis(timeout)) {
        Ok(_) => Ok(items.iter().map(|i| i.is_readable()).collect()),
        Err(zmq::Error::EINTR) => Ok(vec![false; sockets.len()]),
        Err(e) => Err(e.into()),
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// One message frame, owned by libzmq (received bytes are not copied out).
pub struct Message(zmq::Message);

impl Default for Message {
    fn default() -> Message {
        Message(zmq::Message::new())
    }
}

impl std::ops::Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Message {
        Message(zmq::Message::from(v))
    }
}

impl From<Message> for Vec<u8> {
    fn from(m: Message) -> Vec<u8> {
        m.to_vec()
    }
}

impl From<&[u8]> for Message {
    fn from(v: &[u8]) -> Message {
        Message(zmq::Message::from(v))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn router_and_dealer_exchange_frames_and_report_their_port() {
        let ctx = Context::new();
        let server = ctx.router("tcp://127.0.0.1:*", MAX_MESSAGE_SIZE).unwrap();
        let ep = server.endpoint().unwrap();
        assert!(!ep.ends_with(":0") && !ep.ends_with(":*"), "{ep}");
        let client = ctx.dealer(&ep).unwrap();
        client.send_frames([&b""[..], b"hello"]).unwrap();
        assert!(server.wait_readable(Duration::from_secs(5)).unwrap());
        let mut frames = server.try_recv_frames().unwrap().unwrap();
        assert_eq!(frames.len(), 3, "identity, delimiter, body");
        assert_eq!(frames.pop().unwrap(), b"hello");
        frames.push(b"world".to_vec());
        assert!(server.try_send_frames(frames).unwrap());
        assert!(client.wait_readable(Duration::from_secs(5)).unwrap());
        assert_eq!(&*client.recv_body().unwrap(), b"world");
        assert!(server.try_recv_frames().unwrap().is_none());
    }

    #[test]
    fn a_broken_connection_is_reported_at_once() {
        let ctx = Context::new();
        let publisher = ctx.publisher("tcp://127.0.0.1:*").unwrap();
        let sub = ctx.subscriber(&publisher.endpoint().unwrap()).unwrap();
        let broken = ctx.disconnects(&sub).unwrap();
        // Connected: a message gets through, and nothing is reported.
        let t = std::time::Instant::now();
        while !sub.wait_readable(Duration::from_millis(10)).unwrap() {
            publisher.send(&b"hello"[..]).unwrap();
            assert!(t.elapsed() < Duration::from_secs(5), "never connected");
        }
        assert!(!broken.wait_readable(Duration::from_millis(50)).unwrap());
        // The publisher goes away: the subscriber's watch says so.
        drop(publisher);
        assert!(
            broken.wait_readable(Duration::from_secs(5)).unwrap(),
            "no disconnect event"
        );
        assert!(broken.try_recv_frames().unwrap().is_some());
    }

    #[test]
    fn a_reply_to_a_client_gone_away_is_dropped_not_blocked_on() {
        let ctx = Context::new();
        let server = ctx.router("tcp://127.0.0.1:*", MAX_MESSAGE_SIZE).unwrap();
        // Returns at once, without an error, whatever libzmq did with it.
        let t = std::time::Instant::now();
        server
            .try_send_frames([&b"nobody"[..], b"", b"reply"])
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn an_oversized_message_is_refused_by_the_receiver() {
        let ctx = Context::new();
        let server = ctx.router("tcp://127.0.0.1:*", MAX_MESSAGE_SIZE).unwrap();
        let client = ctx.dealer(&server.endpoint().unwrap()).unwrap();
        client
            .send_frames([Vec::new(), vec![0u8; MAX_MESSAGE_SIZE + 1]])
            .unwrap();
        client.send_frames([&b""[..], b"small"]).unwrap();
        // The oversized message costs the sender its connection and is never
        // delivered; the DEALER reconnects and the next message arrives.
        assert!(server.wait_readable(Duration::from_secs(10)).unwrap());
        let frames = server.try_recv_frames().unwrap().unwrap();
        assert_eq!(frames.last().map(Vec::as_slice), Some(&b"small"[..]));
    }

    #[test]
    fn a_subscriber_gets_what_is_published() {
        let ctx = Context::new();
        let publisher = ctx.publisher("tcp://127.0.0.1:*").unwrap();
        let sub = ctx.subscriber(&publisher.endpoint().unwrap()).unwrap();
        // The subscription travels asynchronously: publish until one arrives.
        let t = std::time::Instant::now();
        loop {
            publisher.send(&b"note"[..]).unwrap();
            if sub.wait_readable(Duration::from_millis(50)).unwrap() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "nothing arrived");
        }
        assert_eq!(&*sub.try_recv_body().unwrap().unwrap(), b"note");
    }

    use crate::security::ClusterKey;

    #[test]
    fn this_libzmq_has_curve() {
        // vendor/zmq-sys builds libzmq with libsodium; the stock zmq-sys
        // does not, and this fails.
        assert!(has_curve(), "libzmq was built without CURVE");
    }

    #[test]
    fn a_client_that_knows_the_server_key_but_not_the_member_key_is_refused() {
        // Server public keys are not secret. A client that has one, with a
        // key pair of its own, passes CURVE's handshake checks: only the
        // ZAP handler's check of its public key keeps it out.
        let key = ClusterKey::generate();
        let ctx = Context::secured(&key).unwrap();
        let server = ctx.router("tcp://127.0.0.1:*", MAX_MESSAGE_SIZE).unwrap();
        let ep = server.endpoint().unwrap();
        let raw = zmq::Context::new();
        let own = zmq::CurveKeyPair::new().unwrap();
        let intruder = raw.socket(zmq::DEALER).unwrap();
        intruder.set_linger(0).unwrap();
        intruder.set_curve_serverkey(&key.server().public).unwrap();
        intruder.set_curve_publickey(&own.public_key).unwrap();
        intruder.set_curve_secretkey(&own.secret_key).unwrap();
        intruder.connect(&ep).unwrap();
        intruder.send_multipart([&b""[..], b"GetBlock"], 0).unwrap();
        assert!(
            !server.wait_readable(Duration::from_millis(1000)).unwrap(),
            "the server got a message from a client without the member key"
        );
        // A member with the same server key gets through.
        let member = Context::secured(&key).unwrap().dealer(&ep).unwrap();
        member.send_frames([&b""[..], b"hello"]).unwrap();
        assert!(server.wait_readable(Duration::from_secs(5)).unwrap());
    }
}
