//! Verified blocks of one file version, streamed from its holders: the
//! blocks wanted (all, a range, or only those no local file has), up to
//! `window` requests in flight to one holder, the next holder taking over
//! from the first block not yet returned when one fails.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{debug, warn};
use zync_net::{self as net, Context, Message, Socket};
use zync_proto::{block_len, decode, encode, FileEntry, Hash, PeerInfo, PeerReply, PeerRequest};

use super::{FetchError, HolderError};

/// Verified blocks of one file version, in order, pulled from its holders
/// with up to `window` requests in flight. Early arrivals wait in `pending`
/// (at most one window's worth), so memory is bounded by the window.
pub struct BlockStream {
    pub(super) ctx: Context,
    pub(super) entry: FileEntry,
    pub(super) holders: Vec<PeerInfo>,
    pub(super) current: usize,
    /// The connection to the current holder, with the endpoint it went to.
    pub(super) sock: Option<(String, Socket)>,
    pub(super) window: usize,
    pub(super) stall: Duration,
    /// The block indices wanted, ascending.
    pub(super) wanted: Vec<u64>,
    /// Position in `wanted` of the next block to request.
    pub(super) next_req: usize,
    /// Position in `wanted` of the next block to return.
    pub(super) next_out: usize,
    pub(super) in_flight: usize,
    pub(super) next_id: u64,
    pub(super) first_id: u64,
    pub(super) pending: BTreeMap<u64, Block>,
    /// The holders that sent verified blocks, in order.
    pub(super) senders: Vec<String>,
    /// Verified bytes received.
    pub(super) received: u64,
}

impl BlockStream {
    /// The holder blocks are currently coming from (empty when none was needed).
    pub fn source(&self) -> &str {
        self.holders
            .get(self.current)
            .map_or("", |h| h.name.as_str())
    }

    /// The holders that sent verified blocks, in order.
    pub fn senders(&self) -> &[String] {
        &self.senders
    }

    /// Verified bytes received from holders so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next wanted block (verified against its hash), or `None` at the
    /// end. A holder that refuses, stalls or sends a bad block is dropped
    /// and the next one continues from the first block not yet returned.
    pub fn next_block(&mut self) -> Result<Option<Block>, FetchError> {
        loop {
            let Some(&index) = self.wanted.get(self.next_out) else {
                return Ok(None);
            };
            if let Some(b) = self.pending.remove(&index) {
                self.next_out += 1;
                return Ok(Some(b));
            }
            if let Err(why) = self.pump() {
                let name = self.source().to_owned();
                warn!(event = %"holder_failed", path = %self.entry.path, peer = %name, reason = %why,
                      "skipping holder");
                self.current += 1;
                self.sock = None;
                self.in_flight = 0;
                self.next_req = self.next_out;
                self.first_id = self.next_id;
                if self.current >= self.holders.len() {
                    return Err(FetchError::AllHoldersFailed {
                        path: self.entry.path.clone(),
                        peer: name,
                        last: why,
                    });
                }
            }
        }
    }

    /// Tops up requests to the current holder and takes one reply.
    fn pump(&mut self) -> Result<(), HolderError> {
        let sock = match &mut self.sock {
            Some((_, s)) => &*s,
            slot @ None => {
                let h = &self.holders[self.current];
                let ep = net::pick_endpoint(&h.endpoint)
                    .ok_or_else(|| HolderError::NoEndpoint(h.endpoint.clone()))?;
                let s = self.ctx.dealer(&ep)?;
                &slot.insert((ep, s)).1
            }
        };
        while self.in_flight < self.window && self.next_req < self.wanted.len() {
            let index = self.wanted[self.next_req];
            if !self.pending.contains_key(&index) {
                let req = PeerRequest::GetBlock {
                    id: self.next_id,
                    path: self.entry.path.clone(),
                    sha256: self.entry.sha256,
                    index,
                };
                self.next_id += 1;
                sock.send_frames([Vec::new(), encode(&req)])?;
                self.in_flight += 1;
            }
            self.next_req += 1;
        }
        if !sock.wait_readable(self.stall)? {
            return Err(HolderError::Silent(self.stall));
        }
        let body = sock.recv_body()?;
        let (index, at) = match decode::<PeerReply>(&body) {
            Ok(PeerReply::Block { id, index, data }) if id >= self.first_id => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let still_wanted = self.wanted[self.next_out..].binary_search(&index).is_ok();
                if !still_wanted || self.pending.contains_key(&index) {
                    debug!(index, "unrequested or duplicate block ignored");
                    return Ok(());
                }
                let want = self.entry.blocks.get(index as usize);
                let len_ok = data.len() as u64 == block_len(self.entry.size, index);
                if !len_ok || want != Some(&Hash::of(&data)) {
                    return Err(HolderError::BadBlock(index));
                }
                (index, Block::locate(&body, data))
            }
            Ok(PeerReply::Block { .. }) | Ok(PeerReply::Pong) => return Ok(()),
            Ok(PeerReply::Error { kind, message, .. }) => {
                return Err(HolderError::Refused { kind, message })
            }
            Err(e) => return Err(e.into()),
        };
        let block = Block::new(body, at);
        self.received += block.len() as u64;
        let name = &self.holders[self.current].name;
        if !self.senders.contains(name) {
            self.senders.push(name.clone());
        }
        self.pending.insert(index, block);
        Ok(())
    }
}

/// One verified block, left in the message it arrived in: receiving,
/// verifying and writing it copy nothing but into the writer's aligned
/// buffer.
pub struct Block {
    msg: Message,
    range: std::ops::Range<usize>,
}

/// Where a block's bytes are: inside the message, or (if the decoder ever
/// hands them over copied) on their own.
enum At {
    Range(std::ops::Range<usize>),
    Copied(Vec<u8>),
}

impl Block {
    fn locate(body: &[u8], data: std::borrow::Cow<'_, [u8]>) -> At {
        if let std::borrow::Cow::Borrowed(d) = &data {
            let start = (d.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
            if start <= body.len() && d.len() <= body.len() - start {
                return At::Range(start..start + d.len());
            }
        }
        At::Copied(data.into_owned())
    }

    fn new(body: Message, at: At) -> Block {
        match at {
            At::Range(range) => Block { msg: body, range },
            At::Copied(v) => Block {
                range: 0..v.len(),
                msg: Message::from(v),
            },
        }
    }
}

impl From<Vec<u8>> for Block {
    fn from(v: Vec<u8>) -> Block {
        Block::new(Message::default(), At::Copied(v))
    }
}

impl Default for Block {
    fn default() -> Block {
        Block {
            msg: Message::default(),
            range: 0..0,
        }
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.msg.get(self.range.clone()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_decoded_block_stays_in_its_message_and_reads_back_exactly() {
        use zync_proto::{decode, encode, PeerReply};
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let wire = encode(&PeerReply::Block {
            id: 7,
            index: 3,
            data: data.as_slice().into(),
        });
        let msg = Message::from(&wire[..]);
        let at = match decode::<PeerReply>(&msg).unwrap() {
            PeerReply::Block { data, .. } => Block::locate(&msg, data),
            other => panic!("{other:?}"),
        };
        assert!(matches!(at, At::Range(_)), "the bytes were copied");
        assert_eq!(&Block::new(msg, at)[..], &data[..]);
        // Bytes from anywhere else are kept as they are, not misread.
        let elsewhere = Block::locate(b"unrelated", data.as_slice().into());
        assert!(matches!(elsewhere, At::Copied(_)));
        assert_eq!(&Block::new(Message::default(), elsewhere)[..], &data[..]);
        assert!(Block::default().is_empty());
    }
}
