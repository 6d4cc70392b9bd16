//! Many small files from one holder, their requests pipelined on one
//! connection: a folder of small files would otherwise cost a round trip,
//! and a wakeup of every thread on the way, per file.
//!
//! Only a file of one block, which no local file holds, goes this way: its
//! one block is the whole file, so the block hash is the content hash, and
//! there is nothing to reuse or resume. Whatever does not come back right
//! from the holder (refused, a bad block, silence, a broken connection)
//! takes the ordinary path of [`Fetcher::fetch_from`], which tries the
//! other holders and the tracker; so a batch never fails more than the
//! files would one by one.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::debug;
use zync_net::{self as net, Socket};
use zync_proto::{decode, encode, FileEntry, Hash, PeerInfo, PeerReply, PeerRequest};

use super::stream::holder_failed;
use super::{partial_name, FetchError, Fetched, Fetcher, HolderError, Written};

/// Largest file that travels in a batch.
pub const SMALL_FILE: u64 = 64 * 1024;

/// Files a worker is handed at once.
pub const BATCH_FILES: usize = 16;

/// Requests in flight to the holder of a batch.
const PIPELINE: usize = 32;

/// Whether `entry` can travel in a batch: one block, small.
pub fn batchable(entry: &FileEntry) -> bool {
    !entry.deleted && entry.blocks.len() == 1 && entry.size <= SMALL_FILE
}

/// One download of a batch: the version, and the live peers said to hold it.
pub type Want = (FileEntry, Vec<PeerInfo>);

impl Fetcher {
    /// Downloads every file of `batch` into the staging folder, handing
    /// each result to `done` as it is ready (in no set order). Small files
    /// whose first holder is known and that no local file holds are asked
    /// of it together and written in `batch_dir` (a worker's own folder
    /// in staging, see [`batch_dir`]); the rest, and whatever that holder
    /// did not send right, go through [`Fetcher::fetch_from`]. Stops early
    /// when `done` returns false.
    pub fn fetch_many(
        &mut self,
        batch: Vec<Want>,
        staging: &Path,
        batch_dir: &Path,
        done: &mut dyn FnMut(FileEntry, Result<Written, FetchError>) -> bool,
    ) {
        let mut one_by_one: Vec<Want> = Vec::new();
        let mut by_holder: Vec<(PeerInfo, Vec<Want>)> = Vec::new();
        for (entry, holders) in batch {
            let first = holders
                .iter()
                .find(|h| Some(&h.name) != self.exclude.as_ref())
                .cloned();
            let here = self
                .local
                .as_ref()
                .is_none_or(|l| l.find(&entry, 0, 0).is_some());
            match first {
                Some(h) if batchable(&entry) && entry.is_consistent() && !here => {
                    match by_holder.iter_mut().find(|(g, _)| g.name == h.name) {
                        Some((_, group)) => group.push((entry, holders)),
                        None => by_holder.push((h, vec![(entry, holders)])),
                    }
                }
                _ => one_by_one.push((entry, holders)),
            }
        }
        for (holder, group) in by_holder {
            let Some(left) = self.pipelined(&holder, group, batch_dir, done) else {
                return;
            };
            // The others said to hold them, then the tracker.
            one_by_one.extend(left.into_iter().map(|(entry, mut holders)| {
                holders.retain(|h| h.name != holder.name);
                (entry, holders)
            }));
        }
        for (entry, holders) in one_by_one {
            let tracked = self.progress.as_ref().map(|p| p.track(&entry));
            let r = self.fetch_from(&entry, &holders, staging, &mut |n| {
                if let Some(t) = &tracked {
                    t.advance(n);
                }
            });
            drop(tracked);
            if !done(entry, r) {
                return;
            }
        }
    }

    /// Asks `holder` for every file of `group` on one connection, up to
    /// [`PIPELINE`] at once, writing each in `dir`; returns what it did
    /// not send right (`None` when `done` said to stop).
    fn pipelined(
        &mut self,
        holder: &PeerInfo,
        group: Vec<Want>,
        dir: &Path,
        done: &mut dyn FnMut(FileEntry, Result<Written, FetchError>) -> bool,
    ) -> Option<Vec<Want>> {
        let Some(endpoint) = net::pick_endpoint(&holder.endpoint) else {
            return Some(group);
        };
        let sock = match self.idle.iter().position(|(e, _)| *e == endpoint) {
            Some(k) => self.idle.swap_remove(k).1,
            None => match self.ctx.dealer(&endpoint) {
                Ok(s) => s,
                Err(e) => {
                    debug!(peer = %holder.name, error = %e, "cannot connect for a batch");
                    return Some(group);
                }
            },
        };
        let mut slots: Vec<Option<Want>> = group.into_iter().map(Some).collect();
        let mut left: Vec<Want> = Vec::new();
        // Request id → slot.
        let mut asked: HashMap<u64, usize> = HashMap::new();
        let mut next = 0;
        let mut heard = Instant::now();
        let mut broken = false;
        loop {
            while !broken && asked.len() < PIPELINE && next < slots.len() {
                let Some((entry, _)) = &slots[next] else {
                    next += 1;
                    continue;
                };
                let req = PeerRequest::GetBlock {
                    id: self.next_id,
                    path: entry.path.clone(),
                    sha256: entry.sha256,
                    index: 0,
                    offset: 0,
                    len: entry.size,
                };
                if asked.is_empty() {
                    heard = Instant::now();
                }
                match sock.send_frames([Vec::new(), encode(&req)]) {
                    Ok(()) => {
                        asked.insert(self.next_id, next);
                        self.next_id += 1;
                        next += 1;
                    }
                    Err(e) => {
                        debug!(peer = %holder.name, error = %e, "batch connection failed");
                        broken = true;
                    }
                }
            }
            if asked.is_empty() {
                break;
            }
            let wait = self.stall_timeout.saturating_sub(heard.elapsed());
            match sock.wait_readable(wait.max(Duration::from_millis(1))) {
                Ok(true) => {}
                Ok(false) if heard.elapsed() < self.stall_timeout => continue,
                Ok(false) | Err(_) => {
                    let why = HolderError::Silent(self.stall_timeout);
                    for k in asked.values() {
                        if let Some((entry, _)) = &slots[*k] {
                            holder_failed(&entry.path, &holder.name, &why);
                        }
                    }
                    broken = true;
                    break;
                }
            }
            loop {
                let body = match sock.try_recv_body() {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                };
                heard = Instant::now();
                let (id, data) = match decode::<PeerReply>(&body) {
                    Ok(PeerReply::Block { id, index: 0, data }) => (id, Ok(data)),
                    Ok(PeerReply::Error { id, kind, message }) => {
                        (id, Err(HolderError::Refused { kind, message }))
                    }
                    _ => continue,
                };
                let Some(k) = asked.remove(&id) else { continue };
                let Some((entry, holders)) = slots[k].take() else {
                    continue;
                };
                let fits = data.and_then(|d| {
                    let ok = d.len() as u64 == entry.size && Hash::of(&d) == entry.sha256;
                    ok.then_some(d).ok_or(HolderError::BadBlock(0))
                });
                let bytes = match fits {
                    Ok(b) => b,
                    Err(why) => {
                        holder_failed(&entry.path, &holder.name, &why);
                        left.push((entry, holders));
                        continue;
                    }
                };
                let written = write_small(&entry, &bytes, dir, &holder.name);
                if !done(entry, written) {
                    return None;
                }
            }
            if broken {
                break;
            }
        }
        // Whatever is still asked stays with this socket, which is
        // dropped; a clean one serves the next batch.
        if asked.is_empty() && !broken {
            self.idle.push((endpoint, sock));
        } else {
            drop::<Socket>(sock);
        }
        left.extend(slots.into_iter().flatten());
        Some(left)
    }
}

/// The folder in `staging` where fetch worker `worker` writes the small
/// files of its batches. Every create there takes the folder's lock, and
/// so does every rename out of it: with all workers creating in one
/// folder while the engine renames out of it, waiting on that one lock was
/// 15 % of each worker's time and 6.5 % of the engine's in a late join of
/// 200,000 small files. (A batch's file is written whole, so it is never
/// a partial download to resume: those stay in `staging` itself.) The
/// start-up clean of staging removes these folders with what was left in
/// them.
pub fn batch_dir(staging: &Path, worker: usize) -> std::path::PathBuf {
    staging.join(format!("batch-{worker}"))
}

/// Writes a small file's verified bytes to a file of its own in `dir`.
fn write_small(
    entry: &FileEntry,
    bytes: &[u8],
    dir: &Path,
    from: &str,
) -> Result<Written, FetchError> {
    let path = dir.join(partial_name(entry));
    let mut file = crate::fsops::private_file().truncate(true).open(&path)?;
    let temp = tempfile::TempPath::try_from_path(&path)?;
    file.write_all(bytes)?;
    Ok(Written::new(
        file,
        entry,
        Fetched {
            file: temp,
            from: vec![from.to_owned()],
            fetched: bytes.len() as u64,
            reused: 0,
            resumed: 0,
            stat: None,
        },
    ))
}
