//! The cluster index's snapshot pages, fetched off the engine's thread.
//!
//! A page of tens of thousands of entries takes the tracker a while to
//! build and send. Asked on the engine's own thread, that wait stopped
//! everything else the engine does: a late joiner's installs (the fetch
//! workers ran dry meanwhile) and a restarted peer's applying of the page
//! before. The pager asks on a connection of its own and hands the reply
//! to the engine as an input, so the tracker builds the next page while
//! the engine applies the last one and goes on with its downloads.
//!
//! The engine still decides when a page is asked for (one at a time, and
//! only while its download queue has room) and what a reply means; each
//! ask carries a number, so a reply to an ask from before the session
//! started over is recognised and dropped.

use crossbeam_channel::{unbounded, Sender};
use zync_net::{self as net, NetError, TrackerClient};
use zync_proto::{RelPath, TrackerReply, TrackerRequest};

use super::{Input, TRACKER_TIMEOUT};

/// One page asked for: the page after `after`, for the ask numbered `id`.
struct Ask {
    id: u64,
    after: Option<RelPath>,
}

/// A reply to an ask, as the engine is told it.
pub struct Page {
    /// The ask's number.
    pub id: u64,
    /// The tracker's reply, or why there is none.
    pub reply: Result<TrackerReply, NetError>,
}

/// The handle the engine asks through; the thread ends when it is dropped.
pub struct Pager {
    asks: Sender<Ask>,
}

impl Pager {
    /// Starts the pager's thread, asking whichever of `trackers` `choice`
    /// says and waiting for an answer as long as the engine's own requests
    /// do; replies go to `out`.
    pub fn spawn(
        ctx: &net::Context,
        trackers: &str,
        choice: net::Choice,
        out: Sender<Input>,
    ) -> std::io::Result<Pager> {
        let (asks, rx) = unbounded::<Ask>();
        let mut tracker = TrackerClient::following(ctx, trackers, TRACKER_TIMEOUT, choice);
        std::thread::Builder::new()
            .name("zync-pager".into())
            .spawn(move || {
                for Ask { id, after } in rx {
                    let reply = tracker.request(&TrackerRequest::List { after });
                    if out.send(Input::Page(Page { id, reply })).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Pager { asks })
    }

    /// Asks for the page after `after` (the first page for `None`);
    /// false if the pager's thread is gone.
    pub fn ask(&self, id: u64, after: Option<RelPath>) -> bool {
        self.asks.send(Ask { id, after }).is_ok()
    }
}
