//! The block server: answers other peers' [`PeerRequest`]s on this peer's
//! ROUTER socket, reading blocks straight from the folder.
//!
//! It only serves content the folder's index holds on disk, as its
//! [`ServedView`] says (path → content hash), so it never hands out a file
//! that is half-written, being pulled, or changed since it was indexed. The receiver verifies every block
//! against its hash anyway.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use zync_proto::{
    block_reply_head, decode, encode, ErrorKind, Hash, PeerReply, PeerRequest, RelPath,
    MAX_BLOCK_SIZE,
};

use zync_net::{Context, Shutdown, Socket};

use crate::folder::ServedView;

/// Open files kept between requests for the same file (a transfer asks for
/// many blocks in a row). Bounded.
const OPEN_FILES: usize = 16;

/// Serves blocks until `stop` is set.
pub struct BlockServer {
    sock: Socket,
    servable: ServedView,
    open: Vec<(RelPath, Hash, File)>,
}

impl BlockServer {
    /// Binds the transfer socket at `endpoint`.
    pub fn bind(
        ctx: &Context,
        endpoint: &str,
        servable: ServedView,
    ) -> Result<BlockServer, zync_net::Error> {
        let sock = ctx.router(endpoint, zync_proto::MAX_PEER_REQUEST)?;
        Ok(BlockServer {
            sock,
            servable,
            open: Vec::new(),
        })
    }

    /// The bound endpoint (with the port chosen).
    pub fn endpoint(&self) -> Result<String, zync_net::Error> {
        self.sock.endpoint()
    }

    /// Serves until `stop` fires.
    pub fn run(mut self, stop: Shutdown) {
        while !stop.is_triggered() {
            match self.sock.wait_readable(Duration::from_millis(200)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "block server poll failed");
                    continue;
                }
            }
            while let Ok(Some(mut frames)) = self.sock.try_recv_frames() {
                if frames.len() < 2 {
                    continue;
                }
                let body = frames.pop().unwrap_or_default();
                let started = Instant::now();
                let (kind, reply) = self.answer(&body);
                let m = crate::metrics::metrics();
                m.served.with_label_values(&[kind]).inc();
                m.serve_latency
                    .with_label_values(&[kind])
                    .observe(started.elapsed().as_secs_f64());
                frames.push(reply);
                if let Err(e) = self.sock.send_frames(frames) {
                    debug!(error = %e, "could not send reply");
                }
            }
        }
    }

    /// The request's type (`malformed` when it did not decode) and the
    /// encoded reply to the encoded request `body`.
    fn answer(&mut self, body: &[u8]) -> (&'static str, Vec<u8>) {
        let req = match decode::<PeerRequest>(body) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, bytes = body.len(), "rejected transfer request");
                let reply = encode(&PeerReply::Error {
                    id: 0,
                    kind: e.kind(),
                    message: e.to_string(),
                });
                return ("malformed", reply);
            }
        };
        let kind = req.kind();
        let reply = match req {
            PeerRequest::Ping => encode(&PeerReply::Pong),
            PeerRequest::GetBlock {
                id,
                path,
                sha256,
                index,
                offset,
                len,
            } => {
                // The block is read from disk straight in after the reply's
                // head: served bytes are copied once, by the read. (Room is
                // made only for a length that can be valid; `read_block`
                // refuses the others before reading.)
                let room = if len <= MAX_BLOCK_SIZE {
                    len as usize
                } else {
                    0
                };
                let reply = match block_reply_head(id, index, room) {
                    Some(head) => self.read_block(head, &path, sha256, offset, len),
                    None => Err((ErrorKind::Internal, "cannot encode a block reply".into())),
                };
                match reply {
                    Ok(block) => {
                        crate::metrics::metrics().served_bytes.inc_by(len);
                        block
                    }
                    Err((kind, message)) => encode(&PeerReply::Error { id, kind, message }),
                }
            }
        };
        (kind, reply)
    }

    /// Appends the `len` bytes at `offset` of `path` (with content
    /// `sha256`) to `buf`, which has room for them.
    fn read_block(
        &mut self,
        mut buf: Vec<u8>,
        path: &RelPath,
        sha256: Hash,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, (ErrorKind, String)> {
        let (have, size) = self
            .servable
            .lookup(path)
            .ok_or_else(|| (ErrorKind::NotFound, format!("{path} is not available here")))?;
        if have != sha256 {
            return Err((
                ErrorKind::NotFound,
                format!("{path} has other content here ({})", have.short()),
            ));
        }
        let within = offset.checked_add(len).is_some_and(|end| end <= size);
        if len == 0 || len > MAX_BLOCK_SIZE || !within {
            let why = format!("{path}: no block of {len} bytes at {offset} in {size}");
            return Err((ErrorKind::Invalid, why));
        }
        let pos = self
            .open
            .iter()
            .position(|(p, h, _)| p == path && *h == sha256);
        let pos = match pos {
            Some(i) => i,
            None => {
                let f = self
                    .servable
                    .open(path)
                    .map_err(|e| (ErrorKind::NotFound, format!("{path}: {e}")))?;
                if self.open.len() >= OPEN_FILES {
                    self.open.remove(0);
                }
                self.open.push((path.clone(), sha256, f));
                self.open.len() - 1
            }
        };
        // Read into spare capacity: a zero-filled buffer would cost a pass
        // over every byte served.
        buf.reserve_exact(len as usize);
        let mut file = &self.open[pos].2;
        let read = file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| file.take(len).read_to_end(&mut buf));
        match read {
            Ok(n) if n as u64 == len => Ok(buf),
            Ok(n) => {
                self.open.remove(pos);
                let why = format!("{path}: short read ({n} of {len} bytes); changed on disk?");
                Err((ErrorKind::Internal, why))
            }
            Err(e) => {
                self.open.remove(pos);
                Err((ErrorKind::Internal, format!("{path}: {e}")))
            }
        }
    }
}
