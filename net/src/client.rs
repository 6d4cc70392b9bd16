//! Request-reply clients that never hang (the ZeroMQ guide's Lazy Pirate: on
//! a timeout the socket is thrown away and a fresh one is made for the next
//! request).

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
    Zmq(#[from] Error),
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

/// A request-reply client for the tracker that never hangs: each request
/// gets a reply or a [`NetError::Timeout`], after which a fresh socket is used.
pub struct TrackerClient {
    ctx: Context,
    endpoint: String,
    timeout: Duration,
    sock: Option<Socket>,
}

impl TrackerClient {
    /// A client for the tracker at `addr` (`HOST:PORT` or an endpoint).
    pub fn new(ctx: &Context, addr: &str, timeout: Duration) -> TrackerClient {
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
            None => self.ctx.requester(&self.endpoint)?,
        };
        sock.send(encode(req))?;
        if !sock.wait_readable(self.timeout)? {
            // Dropping a REQ socket that is waiting for a reply resets it.
            return Err(NetError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            });
        }
        let body = sock.recv_body()?;
        self.sock = Some(sock);
        match decode::<TrackerReply>(&body) {
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
    fn ask_times_out_on_silence() {
        let ctx = Context::new();
        let t = std::time::Instant::now();
        let r = ask(&ctx, "127.0.0.1:1", b"x", Duration::from_millis(200));
        assert!(matches!(r, Err(NetError::Timeout { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
