//! The HTTP server around tiny_http, and what tiny_http leaves to its user:
//!
//! - **Timeouts.** tiny_http sets none. The listening socket gets
//!   `SO_RCVTIMEO`/`SO_SNDTIMEO`, which Linux copies to every accepted
//!   socket: a connection idle (or a client not reading) longer than that is
//!   closed, so silent connections cannot pile up. A read timeout is reset by
//!   every byte, so a request head must also arrive whole within
//!   [`Limits::head_timeout`] of its first byte (slowloris), which the
//!   vendored, patched tiny_http enforces (`vendor/README.md`).
//! - **Head size.** tiny_http would buffer an endless header line; the patch
//!   caps lines at [`MAX_HEAD_LINE`] bytes (`414`/`431`) and fields at
//!   [`MAX_HEADERS`] (`431`).
//! - **Thread growth.** tiny_http gives each connection a thread from a pool
//!   that grows without bound. At most [`Limits::max_connections`]
//!   connections are served (past that a new one gets `503` and is closed),
//!   which bounds the threads. Each request is answered on its connection's
//!   own thread (the patch's handler mode), not handed to a worker through
//!   tiny_http's queue: no thread switch per request, and a slow client
//!   (a big download, an event feed) holds only its own thread.
//! - **accept() errors.** tiny_http 0.12's accept loop ends for good on the
//!   first error (say, out of file descriptors), and panics if it cannot
//!   clone a new connection's descriptor. The patched copy backs off and
//!   retries instead (10 ms doubling to 1 s), ending only if the listener
//!   itself is unusable; then the supervisor here rebinds the same address
//!   and carries on. The descriptor limit is also raised to the hard limit
//!   at start.
//! - **Chunked encoding.** Disabled for known lengths ([`Reply`]).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::http;
use crate::reply::Body;
use crate::request::Req;
use crate::router::Router;
use crate::state::Limits;

/// Longest request line or header line accepted, in bytes (nginx's
/// `large_client_header_buffers` is 8 KiB; browsers' cookies can be more).
pub const MAX_HEAD_LINE: usize = 16 * 1024;

/// Most header fields in one request.
pub const MAX_HEADERS: usize = 128;

/// Binds `addr` with the socket options every accepted connection inherits.
pub fn bind(addr: SocketAddr, limits: &Limits) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_read_timeout(Some(limits.read_timeout))?;
    s.set_write_timeout(Some(limits.write_timeout))?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Handles one request on its connection's thread: route, respond, log.
fn handle(router: &Router, mut rq: tiny_http::Request) {
    let t = Instant::now();
    let req = Req::of(&rq);
    let reply = router.route(&req, &mut rq);
    let status = reply.status;
    let bytes = if req.method == tiny_http::Method::Head {
        0
    } else {
        reply.body_len().unwrap_or(0)
    };
    let hits = reply.hits.unwrap_or(0);
    let ok = match reply.body {
        Body::Events(rx) => send_events(rq, rx),
        _ => rq.respond(reply.into_response()).is_ok(),
    };
    let m = crate::metrics::metrics();
    let route = crate::metrics::route_of(&req.url);
    m.requests
        .with_label_values(&[route, &status.to_string()])
        .inc();
    m.latency
        .with_label_values(&[route])
        .observe(t.elapsed().as_secs_f64());
    if ok {
        m.sent_bytes.inc_by(bytes);
    }
    let client = req.remote.map(|a| a.to_string()).unwrap_or_default();
    info!(target: "zync_web::access", method = %req.method, path = %req.path_for_log(), status, bytes,
          client = %client, ms = t.elapsed().as_millis() as u64, hits, complete = ok, "request");
}

/// Writes a server-sent event stream on the raw connection, flushing each
/// event; a comment every 15 s notices a client that went away.
fn send_events(rq: tiny_http::Request, rx: crossbeam_channel::Receiver<String>) -> bool {
    use std::io::Write;
    let mut w = rq.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Connection: close\r\nServer: zync-web/{}\r\nDate: {}\r\n\r\nretry: 2000\n\n",
        env!("CARGO_PKG_VERSION"),
        http::http_date(std::time::SystemTime::now())
    );
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        return false;
    }
    loop {
        let chunk = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => format!("data: {line}\n\n"),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => ": keep-alive\n\n".to_owned(),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
        };
        if w.write_all(chunk.as_bytes())
            .and_then(|_| w.flush())
            .is_err()
        {
            return true; // the client left
        }
    }
}

/// A certificate chain and its private key, PEM, for serving HTTPS.
#[derive(Clone)]
pub struct Tls {
    certificate: Vec<u8>,
    key: zeroize::Zeroizing<Vec<u8>>,
}

/// Why the TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files do not make a usable TLS configuration.
    #[error("TLS certificate or key unusable: {0}")]
    Config(String),
}

impl Tls {
    /// Reads a PEM certificate chain and its PEM private key, and checks
    /// that they make a working TLS configuration.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Tls, TlsError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let tls = Tls {
            certificate: read(cert)?,
            key: zeroize::Zeroizing::new(read(key)?),
        };
        // Building a server checks the pair; the listener is a throwaway.
        let probe =
            TcpListener::bind("127.0.0.1:0").map_err(|e| TlsError::Config(e.to_string()))?;
        let noop: tiny_http::Handler = Arc::new(|_| {});
        tiny_http::Server::from_listener_with_handler(
            probe,
            Some(tls.config()),
            tiny_http::Limits::default(),
            noop,
        )
        .map(|s| s.unblock())
        .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(tls)
    }

    fn config(&self) -> tiny_http::SslConfig {
        tiny_http::SslConfig {
            certificate: self.certificate.clone(),
            private_key: self.key.to_vec(),
        }
    }
}

/// Serves on `listener` until `stop` fires, over TLS with `tls`,
/// rebuilding tiny_http's server if its accept loop ends.
pub fn serve(
    mut listener: TcpListener,
    router: Arc<Router>,
    tls: Option<Tls>,
    stop: zync_net::Shutdown,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    loop {
        let head = tiny_http::Limits {
            max_line: MAX_HEAD_LINE,
            max_headers: MAX_HEADERS,
            head_timeout: router.state.limits.head_timeout,
            max_connections: router.state.limits.max_connections,
        };
        let r = Arc::clone(&router);
        let handler: tiny_http::Handler = Arc::new(move |rq| handle(&r, rq));
        let server = match tiny_http::Server::from_listener_with_handler(
            listener,
            tls.as_ref().map(Tls::config),
            head,
            handler,
        ) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let weak = Arc::downgrade(&server);
        stop.on_trigger(move || {
            if let Some(s) = weak.upgrade() {
                s.unblock();
            }
        });
        // Requests are answered on their connections' threads. This thread
        // only waits for the accept loop to end, or for `unblock()` when
        // `stop` fires.
        loop {
            match server.recv() {
                Ok(rq) => handle(&router, rq), // not in handler mode; harmless
                Err(_) if stop.is_triggered() => return Ok(()),
                Err(e) => {
                    error!(error = %e, "accept loop ended; restarting the listener");
                    break;
                }
            }
        }
        drop(server);
        // The old listener was closed with the accept thread; take the address back.
        let mut wait = Duration::from_millis(50);
        listener = loop {
            match bind(addr, &router.state.limits) {
                Ok(l) => break l,
                Err(e) => {
                    warn!(error = %e, addr = %addr, retry_in = ?wait, "cannot rebind");
                    if stop.sleep(wait) {
                        return Ok(());
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        };
        info!(addr = %addr, "listening again");
    }
}
