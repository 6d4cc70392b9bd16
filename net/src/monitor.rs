//! Watching security handshakes through libzmq's socket monitor.
//!
//! libzmq tells nobody when a CURVE handshake fails: a client's requests
//! stay queued forever and a server drops the connection silently. A
//! monitor (an inproc PAIR that receives the socket's events) makes both
//! visible: a client fails at once with "not a member of this cluster",
//! and a server logs what it refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::socket::Error;

/// The handshake failures a monitor reports.
fn failures() -> i32 {
    use zmq::SocketEvent as E;
    (E::HANDSHAKE_FAILED_NO_DETAIL.to_raw()
        | E::HANDSHAKE_FAILED_PROTOCOL.to_raw()
        | E::HANDSHAKE_FAILED_AUTH.to_raw()) as i32
}

/// A fresh inproc endpoint for one monitor.
fn monitor_endpoint() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "inproc://zync-monitor-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts monitoring `events` of `s`: the PAIR socket that receives them.
pub(crate) fn attach(
    ctx: &zmq::Context,
    s: &zmq::Socket,
    events: i32,
) -> Result<zmq::Socket, Error> {
    let endpoint = monitor_endpoint();
    s.monitor(&endpoint, events)?;
    let pair = ctx.socket(zmq::PAIR)?;
    pair.set_linger(0)?;
    pair.connect(&endpoint)?;
    Ok(pair)
}

/// One monitor event: its number (libzmq's `ZMQ_EVENT_*`) and value.
/// `None` for a message that is not one (libzmq sends two frames: six
/// bytes of event and value, then the endpoint).
fn event(frames: &[Vec<u8>]) -> Option<(u16, u32)> {
    let head = frames.first()?;
    let number = u16::from_le_bytes(head.get(0..2)?.try_into().ok()?);
    let value = u32::from_le_bytes(head.get(2..6)?.try_into().ok()?);
    Some((number, value))
}

/// What a handshake failure event means, in words.
fn reason(number: u16, value: u32) -> String {
    use zmq::SocketEvent as E;
    if number == E::HANDSHAKE_FAILED_AUTH.to_raw() {
        format!("refused by the cluster's authentication (ZAP status {value})")
    } else if number == E::HANDSHAKE_FAILED_PROTOCOL.to_raw() {
        // libzmq's ZMQ_PROTOCOL_ERROR_ZMTP_* codes.
        match value {
            0x1100_0002 => format!(
                "security mechanism mismatch: one side runs without a key (error {value:#x})"
            ),
            0x1100_0001 => {
                format!("CURVE could not decrypt: another cluster's key (error {value:#x})")
            }
            _ => format!("security handshake broken (error {value:#x})"),
        }
    } else {
        // HANDSHAKE_FAILED_NO_DETAIL: the other end broke the handshake
        // off; the value is an errno.
        format!(
            "handshake broken off (errno {value}): the other side has no key, or another cluster's"
        )
    }
}

/// A client socket's watch on its handshake.
pub(crate) struct Handshake {
    pair: zmq::Socket,
    endpoint: String,
}

impl Handshake {
    /// Watches `s`, a client about to connect to `endpoint`.
    pub(crate) fn watch(
        ctx: &zmq::Context,
        s: &zmq::Socket,
        endpoint: &str,
    ) -> Result<Handshake, Error> {
        Ok(Handshake {
            pair: attach(ctx, s, failures())?,
            endpoint: endpoint.to_owned(),
        })
    }

    /// For zmq_poll, beside the data socket.
    pub(crate) fn poll_item(&self) -> zmq::PollItem<'_> {
        self.pair.as_poll_item(zmq::POLLIN)
    }

    /// Reads the events queued; a handshake failure among them is an
    /// [`Error::NotMember`].
    pub(crate) fn check(&self) -> Result<(), Error> {
        loop {
            let frames = match self.pair.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if let Some((number, value)) = event(&frames) {
                if i32::from(number) & failures() != 0 {
                    tracing::debug!(endpoint = %self.endpoint, reason = %reason(number, value),
                                    "security handshake refused");
                    return Err(Error::NotMember {
                        endpoint: self.endpoint.clone(),
                    });
                }
            }
        }
    }
}

/// How often a server logs refused handshakes at most: a stranger with
/// another cluster's key retries ten times a second, forever.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs the handshakes the server socket `s` (about to bind `endpoint`)
/// refuses, on a thread of its own that ends when `s` is closed. A ZAP
/// refusal is logged by the ZAP handler, which knows the client's address;
/// this catches the rest (a client with another cluster's key, or none),
/// which libzmq refuses before asking ZAP. The monitor knows only the
/// listening endpoint, not the client's.
pub(crate) fn log_refusals(
    ctx: &zmq::Context,
    s: &zmq::Socket,
    endpoint: &str,
) -> Result<(), Error> {
    use zmq::SocketEvent as E;
    let events = failures() & !i32::from(E::HANDSHAKE_FAILED_AUTH.to_raw())
        | i32::from(E::MONITOR_STOPPED.to_raw());
    let pair = attach(ctx, s, events)?;
    let endpoint = endpoint.to_owned();
    std::thread::Builder::new()
        .name("zync-monitor".into())
        .spawn(move || {
            let mut last: Option<Instant> = None;
            let mut unlogged = 0u64;
            loop {
                let frames = match pair.recv_multipart(0) {
                    Ok(f) => f,
                    Err(zmq::Error::EINTR) => continue,
                    Err(_) => return, // the context is ending
                };
                let Some((number, value)) = event(&frames) else {
                    continue;
                };
                if number == E::MONITOR_STOPPED.to_raw() {
                    return;
                }
                if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
                    unlogged += 1;
                    continue;
                }
                last = Some(Instant::now());
                tracing::warn!(event = %"refused", at = %endpoint, reason = %reason(number, value),
                               also_refused = unlogged,
                               "connection refused: not a member of this cluster (wrong or missing key)");
                unlogged = 0;
            }
        })
        .map_err(Error::Thread)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_event_is_read_and_a_short_one_is_not() {
        let mut head = 0x0800u16.to_le_bytes().to_vec();
        head.extend_from_slice(&0x1100_0001u32.to_le_bytes());
        assert_eq!(
            event(&[head, b"tcp://x".to_vec()]),
            Some((0x0800, 0x1100_0001))
        );
        assert_eq!(event(&[vec![1, 2, 3]]), None);
        assert_eq!(event(&[]), None);
    }
}
