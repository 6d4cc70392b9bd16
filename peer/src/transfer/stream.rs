//! Verified blocks of one file version, streamed from its holders (a
//! swarm): the blocks wanted (all, a range, or only those no local file
//! has) are asked of up to [`MAX_SOURCES`] holders at once, each with its
//! own window of requests in flight. A holder gets a new request whenever
//! one of its replies comes back, so the faster ones send more. A holder
//! that refuses, sends a bad block or goes silent is dropped and its
//! outstanding blocks go to the others; silence is [`SWARM_STALL`] while
//! another holder is sending, the stream's stall timeout when it is the
//! last. Blocks come out in order; requests never run more than
//! [`AHEAD`] windows past the first block not yet returned, which bounds
//! memory however slow one holder is. When there is nothing new to ask
//! for (the last blocks, or the bound reached), a holder with room asks
//! again for a block another has kept waiting well past the usual reply
//! time (each block once; the first reply wins), so one slow holder does
//! not hold up the end of a download (BitTorrent's endgame).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use zync_net::{self as net, Context, Message, Socket};
use zync_proto::{decode, encode, ErrorKind, FileEntry, Hash, PeerInfo, PeerReply, PeerRequest};

use super::{FetchError, HolderError};

/// Most holders a download takes blocks from at once.
pub const MAX_SOURCES: usize = 4;

/// How long a holder may stay silent, with requests outstanding, while
/// another holder is sending, before its blocks go to the others.
pub const SWARM_STALL: Duration = Duration::from_secs(1);

/// Requests run at most this many windows (of every source) ahead of the
/// first block not yet returned.
const AHEAD: usize = 2;

/// A request is asked again of another holder once it has waited this
/// long, and [`HEDGE_FACTOR`] times the usual reply time, with nothing new
/// to ask for.
const HEDGE_AFTER: Duration = Duration::from_millis(150);

/// See [`HEDGE_AFTER`].
const HEDGE_FACTOR: u32 = 4;

/// One holder's connection and what it was asked.
struct Source {
    /// Index into the stream's holders.
    holder: usize,
    endpoint: String,
    sock: Socket,
    /// Requests in flight: id → (block index, when asked).
    asked: BTreeMap<u64, (u64, Instant)>,
    /// When it last sent anything (or was first asked).
    heard: Instant,
}

/// Verified blocks of one file version, in order, pulled from its holders.
/// Early arrivals wait in `pending`, bounded by the requests allowed ahead.
pub struct BlockStream {
    pub(super) ctx: Context,
    pub(super) entry: FileEntry,
    /// Each block's offset and length.
    spans: Vec<(u64, u64)>,
    pub(super) holders: Vec<PeerInfo>,
    /// The next holder to open a connection to.
    pub(super) next_holder: usize,
    sources: Vec<Source>,
    /// Idle connections handed over by the fetcher, by endpoint; what is
    /// left (and every clean source) goes back at the end.
    pub(super) idle: Vec<(String, Socket)>,
    pub(super) window: usize,
    pub(super) stall: Duration,
    /// The block indices wanted, ascending.
    pub(super) wanted: Vec<u64>,
    /// Position in `wanted` of the next block never requested.
    pub(super) next_req: usize,
    /// Position in `wanted` of the next block to return.
    pub(super) next_out: usize,
    /// Blocks to ask again, their holder having failed.
    retry: BTreeSet<u64>,
    pub(super) next_id: u64,
    pub(super) pending: BTreeMap<u64, Block>,
    /// The holders that sent verified blocks, in order.
    pub(super) senders: Vec<String>,
    /// Verified bytes received.
    pub(super) received: u64,
    /// Why the last holder was dropped.
    last_failure: Option<(String, HolderError)>,
    /// Each block is checked against its hash as it arrives (else only its
    /// length: the whole-file hash will check it).
    check: bool,
    /// Blocks asked of a second holder, one having kept them waiting.
    hedged: BTreeSet<u64>,
    /// Moving average of the time from request to verified reply.
    reply_time: Option<Duration>,
    /// Holders whose blocks were asked of another (logged once each).
    slow: Vec<usize>,
}

impl BlockStream {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ctx: Context,
        entry: FileEntry,
        holders: Vec<PeerInfo>,
        idle: Vec<(String, Socket)>,
        window: usize,
        stall: Duration,
        wanted: Vec<u64>,
        next_id: u64,
    ) -> BlockStream {
        BlockStream {
            ctx,
            spans: entry.spans().collect(),
            entry,
            holders,
            next_holder: 0,
            sources: Vec::new(),
            idle,
            window: window.max(1),
            stall,
            wanted,
            next_req: 0,
            next_out: 0,
            retry: BTreeSet::new(),
            next_id,
            pending: BTreeMap::new(),
            senders: Vec::new(),
            received: 0,
            last_failure: None,
            check: true,
            hedged: BTreeSet::new(),
            reply_time: None,
            slow: Vec::new(),
        }
    }

    /// Leaves checking each block's hash to the caller's whole-file hash
    /// (which must then check every byte, and look again block by block if
    /// it fails).
    pub(super) fn unchecked(&mut self) {
        self.check = false;
    }

    /// The holder blocks came from first (empty when none was needed).
    pub fn source(&self) -> &str {
        self.senders.first().map_or("", String::as_str)
    }

    /// The holders that sent verified blocks, in order.
    pub fn senders(&self) -> &[String] {
        &self.senders
    }

    /// Verified bytes received from holders so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Connections with nothing in flight, for the next download, and the
    /// request id to go on from.
    pub(super) fn finish(self) -> (Vec<(String, Socket)>, u64) {
        let mut idle = self.idle;
        for s in self.sources {
            if s.asked.is_empty() {
                idle.push((s.endpoint, s.sock));
            }
        }
        (idle, self.next_id)
    }

    /// The next wanted block (verified against its hash), or `None` at the
    /// end.
    pub fn next_block(&mut self) -> Result<Option<Block>, FetchError> {
        loop {
            let Some(&index) = self.wanted.get(self.next_out) else {
                return Ok(None);
            };
            if let Some(b) = self.pending.remove(&index) {
                self.next_out += 1;
                return Ok(Some(b));
            }
            self.connect();
            if self.sources.is_empty() {
                let (peer, last) = self.last_failure.take().unwrap_or_else(|| {
                    (String::new(), HolderError::NoEndpoint("no holder".into()))
                });
                return Err(FetchError::AllHoldersFailed {
                    path: self.entry.path.clone(),
                    peer,
                    last,
                });
            }
            self.ask();
            self.pump()?;
        }
    }

    /// Opens connections to more holders while there are some, up to
    /// [`MAX_SOURCES`] (one for a download that fits in one window).
    fn connect(&mut self) {
        let left = self.wanted.len() - self.next_out;
        let want = if left > self.window { MAX_SOURCES } else { 1 };
        while self.sources.len() < want && self.next_holder < self.holders.len() {
            let i = self.next_holder;
            self.next_holder += 1;
            let h = &self.holders[i];
            let opened = match net::pick_endpoint(&h.endpoint) {
                None => Err(HolderError::NoEndpoint(h.endpoint.clone())),
                Some(ep) => match self.idle.iter().position(|(e, _)| *e == ep) {
                    Some(k) => Ok(self.idle.swap_remove(k)),
                    None => self
                        .ctx
                        .dealer(&ep)
                        .map(|s| (ep, s))
                        .map_err(HolderError::from),
                },
            };
            match opened {
                Ok((endpoint, sock)) => self.sources.push(Source {
                    holder: i,
                    endpoint,
                    sock,
                    asked: BTreeMap::new(),
                    heard: Instant::now(),
                }),
                Err(why) => self.fail_holder(i, why),
            }
        }
    }

    /// Tops up every source's window, the least busy first: blocks to ask
    /// again, then new ones, never past the bound on what may wait; then,
    /// with nothing new to ask, blocks another source keeps waiting.
    fn ask(&mut self) {
        let limit = self.next_out + AHEAD * self.window * self.sources.len().max(1);
        let mut order: Vec<usize> = (0..self.sources.len()).collect();
        order.sort_by_key(|&k| self.sources[k].asked.len());
        for k in order {
            while self.sources[k].asked.len() < self.window {
                let index = match self.retry.pop_first() {
                    Some(i) => i,
                    None => {
                        // Skip what is already here or already asked.
                        while self.next_req < self.wanted.len()
                            && self.pending.contains_key(&self.wanted[self.next_req])
                        {
                            self.next_req += 1;
                        }
                        if self.next_req >= self.wanted.len() || self.next_req >= limit {
                            break;
                        }
                        self.next_req += 1;
                        self.wanted[self.next_req - 1]
                    }
                };
                if !self.send(k, index) {
                    return; // indices moved; the next round tops up
                }
            }
        }
        let nothing_new = self.next_req >= self.wanted.len() || self.next_req >= limit;
        if self.retry.is_empty() && nothing_new && self.sources.len() > 1 {
            self.hedge();
        }
    }

    /// Asks a source with room for each block another source has kept
    /// waiting past the hedge time (each block once).
    fn hedge(&mut self) {
        let usual = self.reply_time.unwrap_or_default() * HEDGE_FACTOR;
        let late_after = HEDGE_AFTER.max(usual);
        let now = Instant::now();
        let mut late: Vec<(u64, usize)> = Vec::new();
        for (k, src) in self.sources.iter().enumerate() {
            for &(index, asked_at) in src.asked.values() {
                if now.duration_since(asked_at) >= late_after
                    && !self.hedged.contains(&index)
                    && !self.pending.contains_key(&index)
                {
                    late.push((index, k));
                }
            }
        }
        late.sort_unstable();
        for (index, slow) in late {
            let spare = (0..self.sources.len())
                .filter(|&k| k != slow && self.sources[k].asked.len() < self.window)
                .min_by_key(|&k| self.sources[k].asked.len());
            let Some(k) = spare else { return };
            let (slow_holder, to) = (self.sources[slow].holder, self.sources[k].holder);
            if !self.slow.contains(&slow_holder) {
                self.slow.push(slow_holder);
                info!(event = %"hedged", path = %self.entry.path, peer = %self.holders[slow_holder].name,
                      to = %self.holders[to].name, after_ms = late_after.as_millis() as u64,
                      "a slow holder's blocks asked of another");
            }
            self.hedged.insert(index);
            if !self.send(k, index) {
                return;
            }
        }
    }

    /// Asks source `k` for block `index`; false if its socket failed (the
    /// source is dropped and the block goes to the others).
    fn send(&mut self, k: usize, index: u64) -> bool {
        let (offset, len) = self.spans.get(index as usize).copied().unwrap_or_default();
        let req = PeerRequest::GetBlock {
            id: self.next_id,
            path: self.entry.path.clone(),
            sha256: self.entry.sha256,
            index,
            offset,
            len,
        };
        let src = &mut self.sources[k];
        let now = Instant::now();
        if src.asked.is_empty() {
            src.heard = now;
        }
        match src.sock.send_frames([Vec::new(), encode(&req)]) {
            Ok(()) => {
                src.asked.insert(self.next_id, (index, now));
                self.next_id += 1;
                true
            }
            Err(e) => {
                self.retry.insert(index);
                self.drop_source(k, HolderError::Socket(e));
                false
            }
        }
    }

    /// Takes the replies that are there (waiting a little for one), and
    /// drops the holders that failed or went silent.
    fn pump(&mut self) -> Result<(), FetchError> {
        let ready = {
            let socks: Vec<&Socket> = self.sources.iter().map(|s| &s.sock).collect();
            net::wait_any(&socks, Duration::from_millis(100))
                .map_err(|e| FetchError::Io(std::io::Error::other(format!("poll: {e}"))))?
        };
        let mut failed: Vec<(usize, HolderError)> = Vec::new();
        for (k, ready) in ready.into_iter().enumerate() {
            if !ready {
                continue;
            }
            loop {
                match self.sources[k].sock.try_recv_body() {
                    Ok(Some(body)) => {
                        if let Err(why) = self.take(k, body) {
                            failed.push((k, why));
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed.push((k, HolderError::Socket(e)));
                        break;
                    }
                }
            }
        }
        // Silence: short while another source can take over (it is sending,
        // or has nothing to do), long for the last one.
        let now = Instant::now();
        let others_alive = |me: usize, srcs: &[Source]| {
            srcs.iter().enumerate().any(|(j, s)| {
                j != me && (s.asked.is_empty() || now.duration_since(s.heard) < SWARM_STALL)
            })
        };
        for k in 0..self.sources.len() {
            let s = &self.sources[k];
            if s.asked.is_empty() || failed.iter().any(|(j, _)| *j == k) {
                continue;
            }
            let limit = if others_alive(k, &self.sources) {
                SWARM_STALL
            } else {
                self.stall
            };
            if now.duration_since(s.heard) >= limit {
                failed.push((k, HolderError::Silent(limit)));
            }
        }
        failed.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
        for (k, why) in failed {
            self.drop_source(k, why);
        }
        Ok(())
    }

    /// One reply from source `k`.
    fn take(&mut self, k: usize, body: Message) -> Result<(), HolderError> {
        let src = &mut self.sources[k];
        let (index, at) = match decode::<PeerReply>(&body) {
            Ok(PeerReply::Block { id, index, data }) => {
                let Some((asked, asked_at)) = src.asked.remove(&id) else {
                    debug!(id, "reply to a request no longer in flight ignored");
                    return Ok(());
                };
                src.heard = Instant::now();
                let took = src.heard.duration_since(asked_at);
                self.reply_time = Some(match self.reply_time {
                    Some(avg) => (avg * 7 + took) / 8,
                    None => took,
                });
                let want = self.entry.blocks.get(index as usize);
                let len_ok = self
                    .spans
                    .get(index as usize)
                    .is_some_and(|&(_, n)| data.len() as u64 == n);
                let hash_ok = || want == Some(&Hash::of(&data));
                if asked != index || !len_ok || (self.check && !hash_ok()) {
                    // Someone else must send it.
                    self.retry.insert(asked);
                    return Err(HolderError::BadBlock(index));
                }
                (index, Block::locate(&body, data))
            }
            Ok(PeerReply::Pong) => return Ok(()),
            Ok(PeerReply::Error { id, kind, message }) => {
                if let Some((asked, _)) = src.asked.remove(&id) {
                    self.retry.insert(asked);
                }
                return Err(HolderError::Refused { kind, message });
            }
            Err(e) => return Err(e.into()),
        };
        let delivered = self.wanted[..self.next_out].binary_search(&index).is_ok();
        if delivered || self.pending.contains_key(&index) {
            return Ok(()); // asked twice, after its first holder was dropped
        }
        self.retry.remove(&index);
        let block = Block::new(body, at);
        self.received += block.len() as u64;
        let name = &self.holders[self.sources[k].holder].name;
        if !self.senders.contains(name) {
            self.senders.push(name.clone());
        }
        self.pending.insert(index, block);
        Ok(())
    }

    /// Drops source `k`: what it was asked goes to the others.
    fn drop_source(&mut self, k: usize, why: HolderError) {
        let src = self.sources.swap_remove(k);
        for (_, (index, _)) in src.asked {
            if !self.pending.contains_key(&index) {
                self.retry.insert(index);
            }
        }
        self.fail_holder(src.holder, why);
    }

    fn fail_holder(&mut self, holder: usize, why: HolderError) {
        let name = self.holders[holder].name.clone();
        holder_failed(&self.entry.path, &name, &why);
        self.last_failure = Some((name, why));
    }
}

/// Logs that holder `peer` was given up for `path`. A holder that no
/// longer has the content (it moved on to a newer version, or deleted it)
/// is the ordinary race of a busy folder, not a fault worth a warning.
pub(super) fn holder_failed(path: &zync_proto::RelPath, peer: &str, why: &HolderError) {
    let moved_on = matches!(why, HolderError::Refused { kind, .. } if *kind == ErrorKind::NotFound);
    if moved_on {
        info!(event = %"holder_failed", path = %path, peer = %peer, reason = %why, "skipping holder");
    } else {
        warn!(event = %"holder_failed", path = %path, peer = %peer, reason = %why, "skipping holder");
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
