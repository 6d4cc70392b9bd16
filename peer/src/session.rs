//! The tracker session as an explicit state machine, with no I/O (the time
//! is an argument): the ZeroMQ guide's Clone pattern from the client side.
//!
//! ```text
//!   Unregistered ──register ok──► Snapshotting ──first page──► Paging ──last page──► Live
//!        ▲  │ fail: backoff 250 ms doubling to 10 s                 │  gap in seq,     │
//!        │  └──────────────┐                                        │  Hugz ahead      │
//!        │                 ▼                                        ▼                  ▼
//!        └──── lost: silence, forgotten, new epoch ◄── Snapshotting (from the first page)
//! ```
//!
//! While unregistered nothing is reported (registering sends the whole
//! index) and no notification is applied; until the snapshot's first page
//! notifications are dropped too, since the snapshot covers them. The
//! snapshot counts as of its first page's `seq`, and from then on
//! notifications are applied strictly in sequence, while the other pages
//! are still coming (a page is never older than a notification before it,
//! so applying both is harmless) as once live. A gap or a `Hugz` ahead of
//! us means another snapshot. Pages come when the engine asks for them,
//! so it can take the next only once it has room for it.

use std::time::{Duration, Instant};

use zync_proto::RelPath;

/// First wait before registering again after a failure; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Not registered; the next attempt is due at this time (`None`: one
    /// is in flight).
    Unregistered(Option<Instant>),
    /// Registered; the index snapshot is to be fetched from its first page.
    Snapshotting,
    /// Part of the snapshot is applied; the pages after this path are to
    /// come. In step with the notifications meanwhile.
    Paging(RelPath),
    /// Registered and in step with the notifications.
    Live,
}

/// What to do with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteVerdict {
    /// Apply it: it is the next in sequence.
    Apply,
    /// Drop it (old, a repeat, a `Hugz` in step, or not live).
    Ignore,
}

/// The session with one tracker.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// The epoch of the tracker last registered with.
    epoch: Option<u64>,
    /// The last notification applied (or the snapshot's).
    seq: u64,
    backoff: Duration,
    /// Lost because the tracker went silent (not because it forgot us):
    /// the next registration asks the other trackers of the list first.
    silent: bool,
}

impl Session {
    /// A session that registers at `now`.
    pub fn new(now: Instant) -> Session {
        Session {
            phase: Phase::Unregistered(Some(now)),
            epoch: None,
            seq: 0,
            backoff: FIRST_BACKOFF,
            silent: false,
        }
    }

    /// Registered (snapshotting or live): changes are reported one by one.
    pub fn is_registered(&self) -> bool {
        !matches!(self.phase, Phase::Unregistered(_))
    }

    /// Whether (more of) the index snapshot is to be fetched.
    pub fn wants_snapshot(&self) -> bool {
        self.next_page().is_some()
    }

    /// The snapshot page to fetch next, if one is: the one after this path
    /// (`Some(None)`: the first).
    pub fn next_page(&self) -> Option<Option<RelPath>> {
        match &self.phase {
            Phase::Snapshotting => Some(None),
            Phase::Paging(after) => Some(Some(after.clone())),
            _ => None,
        }
    }

    /// When the next registration attempt is due, if one is.
    pub fn register_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Unregistered(at) => at,
            _ => None,
        }
    }

    /// Whether a registration attempt is due at `now`; if so, it is taken
    /// as started.
    pub fn start_register(&mut self, now: Instant) -> bool {
        if self.register_at().is_some_and(|at| at <= now) {
            self.phase = Phase::Unregistered(None);
            return true;
        }
        false
    }

    /// The tracker accepted the registration; returns whether it is a
    /// different tracker start (epoch) from the last one.
    pub fn registered(&mut self, epoch: u64) -> bool {
        self.silent = false;
        let restarted = self.epoch.is_some_and(|e| e != epoch);
        self.epoch = Some(epoch);
        self.phase = Phase::Snapshotting;
        self.backoff = FIRST_BACKOFF;
        restarted
    }

    /// The registration failed; returns how long until the next attempt.
    pub fn register_failed(&mut self, now: Instant) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.phase = Phase::Unregistered(Some(now + wait));
        wait
    }

    /// The tracker was lost (silent, unreachable) or forgot us: register
    /// again, at once if `at_once` (it answers, but does not know us), else
    /// after the current backoff. A pending attempt is not postponed.
    pub fn lost(&mut self, now: Instant, at_once: bool) {
        self.silent = !at_once;
        let at = if at_once {
            self.backoff = FIRST_BACKOFF;
            now
        } else {
            match self.phase {
                Phase::Unregistered(Some(at)) => at,
                _ => now + self.backoff,
            }
        };
        self.phase = Phase::Unregistered(Some(at));
    }

    /// Whether the tracker in use went silent since the last registration:
    /// then the others of the list are asked first (the guide's Binary
    /// Star client fails over instead of waiting on the dead one again).
    pub fn after_silence(&self) -> bool {
        self.silent
    }

    /// The snapshot page [`Session::next_page`] asked for arrived from the
    /// tracker of `epoch`, taken at notification `seq`, with more after
    /// `next` if that is set: whether to apply it (a page from another
    /// tracker start means registering again). The first page's `seq` is
    /// the snapshot's.
    pub fn page(&mut self, now: Instant, epoch: u64, seq: u64, next: Option<RelPath>) -> bool {
        if self.epoch != Some(epoch) {
            self.lost(now, true);
            return false;
        }
        match self.phase {
            Phase::Snapshotting => self.seq = seq,
            Phase::Paging(_) => {}
            _ => return false,
        }
        self.phase = next.map_or(Phase::Live, Phase::Paging);
        true
    }

    /// Notification `seq` of tracker start `epoch` arrived (`hugz`: the
    /// heartbeat that repeats the last `seq`).
    pub fn note(&mut self, now: Instant, epoch: u64, seq: u64, hugz: bool) -> NoteVerdict {
        if !matches!(self.phase, Phase::Live | Phase::Paging(_)) {
            return NoteVerdict::Ignore;
        }
        if self.epoch != Some(epoch) {
            self.lost(now, true);
            return NoteVerdict::Ignore;
        }
        if hugz {
            if seq > self.seq {
                self.phase = Phase::Snapshotting;
            }
            return NoteVerdict::Ignore;
        }
        if seq <= self.seq {
            return NoteVerdict::Ignore;
        }
        if seq > self.seq + 1 {
            self.phase = Phase::Snapshotting;
            return NoteVerdict::Ignore;
        }
        self.seq = seq;
        NoteVerdict::Apply
    }

    /// Fetches the index snapshot again from its first page (what the
    /// peer takes of it changed), if registered; else registering does.
    pub fn resync(&mut self) {
        if matches!(self.phase, Phase::Live | Phase::Paging(_)) {
            self.phase = Phase::Snapshotting;
        }
    }

    /// The last notification applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session just registered with the tracker of `epoch`.
    fn registered(epoch: u64) -> (Session, Instant) {
        let t = Instant::now();
        let mut s = Session::new(t);
        assert!(s.start_register(t));
        s.registered(epoch);
        (s, t)
    }

    fn live(epoch: u64, seq: u64) -> (Session, Instant) {
        let (mut s, t) = registered(epoch);
        assert!(s.page(t, epoch, seq, None));
        (s, t)
    }

    #[test]
    fn after_silence_the_other_trackers_come_first_until_registered() {
        let (mut s, t) = live(1, 5);
        assert!(!s.after_silence());
        s.lost(t, false);
        assert!(s.after_silence());
        assert!(s.start_register(t + Duration::from_secs(1)));
        s.register_failed(t + Duration::from_secs(1));
        assert!(s.after_silence(), "a failed attempt changes nothing");
        s.registered(2);
        assert!(!s.after_silence());
        // Forgotten (the tracker answers): from the first again.
        s.lost(t, true);
        assert!(!s.after_silence());
    }

    #[test]
    fn a_new_session_registers_at_once_then_snapshots_then_is_live() {
        let t = Instant::now();
        let mut s = Session::new(t);
        assert!(!s.is_registered());
        assert_eq!(s.register_at(), Some(t));
        assert!(s.start_register(t));
        assert!(!s.start_register(t), "one attempt at a time");
        assert!(!s.registered(7), "a first registration is no restart");
        assert!(s.is_registered() && s.wants_snapshot());
        assert!(s.page(t, 7, 40, None));
        assert!(!s.wants_snapshot());
        assert_eq!(s.seq(), 40);
    }

    #[test]
    fn failed_registrations_back_off_doubling_to_ten_seconds() {
        let t = Instant::now();
        let mut s = Session::new(t);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(s.start_register(t + Duration::from_secs(60)));
            waits.push(s.register_failed(t).as_millis());
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(s.register_at(), Some(t + Duration::from_secs(10)));
        assert!(!s.start_register(t + Duration::from_secs(9)));
        // Success resets the backoff.
        assert!(s.start_register(t + Duration::from_secs(10)));
        s.registered(1);
        s.lost(t, false);
        assert_eq!(s.register_at(), Some(t + FIRST_BACKOFF));
    }

    #[test]
    fn notifications_apply_in_sequence_and_repeats_are_dropped() {
        let (mut s, t) = live(7, 10);
        assert_eq!(s.note(t, 7, 11, false), NoteVerdict::Apply);
        assert_eq!(s.note(t, 7, 11, false), NoteVerdict::Ignore);
        assert_eq!(s.note(t, 7, 9, false), NoteVerdict::Ignore);
        assert_eq!(s.note(t, 7, 12, false), NoteVerdict::Apply);
        assert_eq!(s.seq(), 12);
    }

    #[test]
    fn a_gap_in_the_sequence_means_a_new_snapshot() {
        let (mut s, t) = live(7, 10);
        assert_eq!(s.note(t, 7, 12, false), NoteVerdict::Ignore);
        assert!(s.wants_snapshot() && s.is_registered());
        // Nothing applies until the snapshot is in.
        assert_eq!(s.note(t, 7, 13, false), NoteVerdict::Ignore);
        assert_eq!(s.next_page(), Some(None), "from the first page");
        assert!(s.page(t, 7, 13, None));
        assert_eq!(s.note(t, 7, 14, false), NoteVerdict::Apply);
    }

    #[test]
    fn a_paged_snapshot_counts_as_of_its_first_page_and_notes_apply_meanwhile() {
        let (mut s, t) = registered(7);
        let p = |x: &str| RelPath::new(x).unwrap();
        assert_eq!(s.note(t, 7, 20, false), NoteVerdict::Ignore, "no page yet");
        assert!(s.page(t, 7, 20, Some(p("m"))));
        assert_eq!(s.next_page(), Some(Some(p("m"))));
        assert_eq!(
            s.note(t, 7, 20, false),
            NoteVerdict::Ignore,
            "the page covers it"
        );
        assert_eq!(
            s.note(t, 7, 21, false),
            NoteVerdict::Apply,
            "in step while paging"
        );
        // A later page does not move the snapshot's seq.
        assert!(s.page(t, 7, 25, Some(p("t"))));
        assert_eq!(s.seq(), 21);
        assert_eq!(s.note(t, 7, 22, false), NoteVerdict::Apply);
        // A gap while paging starts the snapshot over.
        assert_eq!(s.note(t, 7, 24, false), NoteVerdict::Ignore);
        assert_eq!(s.next_page(), Some(None));
        assert!(s.page(t, 7, 30, Some(p("m"))));
        assert!(s.page(t, 7, 31, None));
        assert!(!s.wants_snapshot());
        assert_eq!(s.note(t, 7, 31, false), NoteVerdict::Apply);
    }

    #[test]
    fn a_hugz_ahead_of_us_means_the_last_change_was_lost() {
        let (mut s, t) = live(7, 10);
        assert_eq!(s.note(t, 7, 10, true), NoteVerdict::Ignore);
        assert!(!s.wants_snapshot(), "in step");
        assert_eq!(s.note(t, 7, 11, true), NoteVerdict::Ignore);
        assert!(s.wants_snapshot());
    }

    #[test]
    fn a_new_epoch_means_the_tracker_restarted_register_at_once() {
        let (mut s, t) = live(7, 10);
        assert_eq!(s.note(t, 8, 1, false), NoteVerdict::Ignore);
        assert!(!s.is_registered());
        assert_eq!(s.register_at(), Some(t));
        assert!(s.start_register(t));
        assert!(s.registered(8), "told apart from the first registration");
    }

    #[test]
    fn a_snapshot_page_from_another_tracker_start_restarts_the_session() {
        let (mut s, t) = registered(7);
        assert!(s.page(t, 7, 5, Some(RelPath::new("a").unwrap())));
        assert!(!s.page(t, 9, 5, None));
        assert!(!s.is_registered());
        assert_eq!(s.register_at(), Some(t));
        assert!(!s.page(t, 7, 5, None), "a late page does not bring it back");
        assert!(!s.is_registered());
    }

    #[test]
    fn silence_waits_the_backoff_but_a_forgotten_peer_registers_at_once() {
        let (mut s, t) = live(7, 10);
        s.lost(t, false);
        assert_eq!(s.register_at(), Some(t + FIRST_BACKOFF));
        // Lost again before the attempt: the attempt is not postponed.
        s.lost(t + Duration::from_millis(100), false);
        assert_eq!(s.register_at(), Some(t + FIRST_BACKOFF));
        let (mut s, t) = live(7, 10);
        s.lost(t, true);
        assert_eq!(s.register_at(), Some(t));
    }

    #[test]
    fn nothing_applies_while_unregistered() {
        let t = Instant::now();
        let mut s = Session::new(t);
        assert_eq!(s.note(t, 7, 1, false), NoteVerdict::Ignore);
        assert!(!s.is_registered());
    }

    #[test]
    fn a_resync_fetches_the_snapshot_again_only_when_registered() {
        let now = Instant::now();
        let mut s = Session::new(now);
        s.resync();
        assert!(
            !s.is_registered() && !s.wants_snapshot(),
            "registering does it"
        );
        assert!(s.start_register(now));
        assert!(!s.registered(7), "the first tracker start");
        assert!(s.page(now, 7, 3, None));
        assert!(!s.wants_snapshot(), "live");
        s.resync();
        assert_eq!(s.next_page(), Some(None), "from the first page");
        assert!(s.is_registered());
    }
}
