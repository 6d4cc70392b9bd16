//! Metrics for Zync binaries: every crate registers its series in the
//! process's Prometheus registry (the `prometheus` crate's default one,
//! which on Linux also carries the `process_*` series: memory, CPU, open
//! files); this module renders them in the text format and serves them
//! over HTTP (`--metrics HOST:PORT` on the tracker and peers; zync-web
//! answers `/metrics` itself).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use prometheus;
use prometheus::core::Collector;
use prometheus::{Encoder, TextEncoder};

use crate::Shutdown;

/// The registry's current values in the Prometheus text format
/// (version 0.0.4).
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec fails only on a malformed family, which the
    // registry refuses at registration.
    if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut out) {
        tracing::warn!(error = %e, "cannot render the metrics");
    }
    out
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Adds `c` to the process's registry. A second registration of the same
/// series (two members in one process, as in tests) is harmless: the first
/// one is kept.
pub fn register<C: Collector + Clone + 'static>(c: &C) {
    match prometheus::register(Box::new(c.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(e) => tracing::warn!(error = %e, "a metric could not be registered"),
    }
}

/// Buckets for request latencies, in seconds: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Serves `GET /metrics` on `addr` from a thread of its own until
/// `shutdown` fires; returns the address it bound (so `:0` can be used).
/// Anything else gets a 404; a method other than GET or HEAD a 405.
pub fn serve(addr: &str, shutdown: &Shutdown) -> io::Result<SocketAddr> {
    let server = Arc::new(tiny_http::Server::http(addr).map_err(io::Error::other)?);
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("the metrics endpoint is not a TCP address"))?;
    std::thread::Builder::new()
        .name("zync-metrics".into())
        .spawn({
            let server = Arc::clone(&server);
            // Ends when the shutdown unblocks the server.
            move || server.incoming_requests().for_each(answer)
        })?;
    shutdown.on_trigger(move || server.unblock());
    tracing::info!(endpoint = %format!("http://{bound}/metrics"), "metrics served");
    Ok(bound)
}

fn answer(rq: tiny_http::Request) {
    use tiny_http::{Header, Method, Response};
    let with = |mut r: Response<_>, k: &str, v: &str| {
        if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            r.add_header(h);
        }
        r
    };
    let path = rq.url().split('?').next().unwrap_or("");
    let reply = match (rq.method(), path) {
        (Method::Get | Method::Head, "/metrics") => {
            with(Response::from_data(render()), "Content-Type", CONTENT_TYPE)
        }
        (Method::Get | Method::Head, _) => {
            Response::from_data(&b"not found: the metrics are at /metrics\n"[..])
                .with_status_code(404)
        }
        _ => with(
            Response::from_data(&b"GET /metrics\n"[..]).with_status_code(405),
            "Allow",
            "GET, HEAD",
        ),
    };
    // The scraper went away: nothing to tell it.
    let _ = rq.respond(reply);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn the_endpoint_serves_registered_series_in_the_text_format() {
        let c = prometheus::IntCounter::new("zync_test_things_total", "Things.").expect("new");
        register(&c);
        register(&c); // twice is harmless
        c.inc_by(7);
        let stop = Shutdown::new();
        let addr = serve("127.0.0.1:0", &stop).expect("serve");
        let page = get(addr, "/metrics");
        assert!(
            page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"),
            "{page}"
        );
        assert!(page.contains("text/plain; version=0.0.4"), "{page}");
        assert!(
            page.contains("# TYPE zync_test_things_total counter"),
            "{page}"
        );
        assert!(page.contains("\nzync_test_things_total 7\n"), "{page}");
        assert!(get(addr, "/other").contains(" 404 "));
        // The shutdown ends the endpoint: its port closes.
        stop.trigger();
        let closed = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::net::TcpStream::connect(addr).is_err()
        });
        assert!(closed, "still listening after the shutdown");
    }
}
