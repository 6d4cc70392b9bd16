//! Transport: the only module of the peer that touches ZeroMQ.
//!
//! Socket construction with Zync's defaults (linger 0, bounded message size),
//! endpoint helpers, and [`TrackerClient`], a REQ client that survives a dead
//! or restarted tracker (the ZeroMQ guide's Lazy Pirate: on a timeout the
//! socket is thrown away and a fresh one is made for the next request).

use std::time::Duration;

use zync_proto::{
    decode, encode, DecodeError, ErrorKind, TrackerReply, TrackerRequest, MAX_MESSAGE_SIZE,
};

/// A transport failure.
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
    Zmq(#[from] zmq::Error),
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

/// `HOST:PORT` → `tcp://HOST:PORT`; anything already holding `://` is kept.
pub fn tcp(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("tcp://{addr}")
    }
}

/// The host part of an endpoint (`tcp://h:1` → `h`).
pub fn host_of(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

/// The port part of an endpoint (`tcp://h:1` → `1`).
pub fn port_of(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or("", |(_, p)| p)
}

/// Rewrites a bound endpoint whose host is a wildcard (`0.0.0.0`, `*`, `[::]`)
/// to use `host` instead, so it can be handed to someone who must connect.
pub fn reachable(bound: &str, host: &str) -> String {
    match host_of(bound) {
        "0.0.0.0" | "*" | "[::]" | "::" => format!("tcp://{host}:{}", port_of(bound)),
        _ => tcp(bound),
    }
}

/// A peer may advertise several endpoints, comma-separated (say, its name on
/// a container network and a port published on the host). Picks the first
/// whose host resolves from here, as a `tcp://` endpoint.
pub fn pick_endpoint(advertised: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    advertised
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .find_map(|e| {
            let ep = tcp(e);
            let hostport = ep.trim_start_matches("tcp://");
            hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|_| ep.clone())
        })
}

/// Creates a socket with Zync's defaults: linger 0 (dropping it never blocks
/// the context), a bounded incoming message size, TCP keepalive.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> Result<zmq::Socket, zmq::Error> {
    let s = ctx.socket(kind)?;
    s.set_linger(0)?;
    s.set_maxmsgsize(MAX_MESSAGE_SIZE as i64)?;
    s.set_tcp_keepalive(1)?;
    Ok(s)
}

/// The endpoint a socket is bound to, with the port the OS chose.
pub fn bound_endpoint(s: &zmq::Socket) -> Result<String, zmq::Error> {
    Ok(match s.get_last_endpoint()? {
        Ok(ep) => ep,
        Err(raw) => String::from_utf8_lossy(&raw).into_owned(),
    })
}

/// Waits up to `timeout` for `s` to become readable.
pub fn wait_readable(s: &zmq::Socket, timeout: Duration) -> Result<bool, zmq::Error> {
    let mut items = [s.as_poll_item(zmq::POLLIN)];
    match zmq::poll(&mut items, timeout.as_millis().min(i64::MAX as u128) as i64) {
        Ok(_) => Ok(items[0].is_readable()),
        Err(zmq::Error::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Receives one whole message and returns its last frame (the body, after
/// any envelope), left in libzmq's buffer rather than copied out: a block
/// reply is 256 KiB, and every copy of a 1 GiB transfer costs a pass over it.
pub fn recv_body(s: &zmq::Socket) -> Result<zmq::Message, zmq::Error> {
    let mut msg = s.recv_msg(0)?;
    while msg.get_more() {
        msg = s.recv_msg(0)?;
    }
    Ok(msg)
}

/// A request-reply client for the tracker that never hangs: each request
/// gets a reply or a [`NetError::Timeout`], after which a fresh socket is used.
pub struct TrackerClient {
    ctx: zmq::Context,
    endpoint: String,
    timeout: Duration,
    sock: Option<zmq::Socket>,
}

impl TrackerClient {
    /// A client for the tracker at `addr` (`HOST:PORT` or an endpoint).
    pub fn new(ctx: &zmq::Context, addr: &str, timeout: Duration) -> TrackerClient {
        TrackerClient {
            ctx: ctx.clone(),
            endpoint: tcp(addr),
            timeout,
            sock: None,
        }
    }

    /// The tracker's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `req` and waits for the reply. A tracker-side `Error` reply is
    /// returned as [`NetError::Refused`].
    pub fn request(&mut self, req: &TrackerRequest) -> Result<TrackerReply, NetError> {
        let sock = match self.sock.take() {
            Some(s) => s,
            None => {
                let s = socket(&self.ctx, zmq::REQ)?;
                s.connect(&self.endpoint)?;
                s
            }
        };
        sock.send(encode(req), 0)?;
        if !wait_readable(&sock, self.timeout)? {
            // Dropping a REQ socket that is waiting for a reply resets it.
            return Err(NetError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            });
        }
        let bytes = sock.recv_bytes(0)?;
        self.sock = Some(sock);
        match decode::<TrackerReply>(&bytes) {
            Ok(TrackerReply::Error { kind, message }) => Err(NetError::Refused {
                endpoint: self.endpoint.clone(),
                kind,
                message,
            }),
            Ok(r) => Ok(r),
            Err(source) => Err(NetError::Decode {
                endpoint: self.endpoint.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_helpers() {
        assert_eq!(tcp("a:1"), "tcp://a:1");
        assert_eq!(tcp("tcp://a:1"), "tcp://a:1");
        assert_eq!(host_of("tcp://tracker:5556"), "tracker");
        assert_eq!(port_of("tcp://0.0.0.0:5556"), "5556");
        assert_eq!(
            reachable("tcp://0.0.0.0:5556", "tracker"),
            "tcp://tracker:5556"
        );
        assert_eq!(
            reachable("tcp://127.0.0.1:9", "tracker"),
            "tcp://127.0.0.1:9"
        );
    }

    #[test]
    fn picks_the_first_resolvable_endpoint() {
        assert_eq!(
            pick_endpoint("no-such-host.invalid:7001, 127.0.0.1:7001").as_deref(),
            Some("tcp://127.0.0.1:7001")
        );
        assert_eq!(
            pick_endpoint("tcp://127.0.0.1:9").as_deref(),
            Some("tcp://127.0.0.1:9")
        );
        assert_eq!(pick_endpoint("no-such-host.invalid:1"), None);
        assert_eq!(pick_endpoint(""), None);
    }

    #[test]
    fn unreachable_tracker_times_out_instead_of_hanging() {
        let ctx = zmq::Context::new();
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
}
