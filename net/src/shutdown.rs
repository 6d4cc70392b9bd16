//! One shutdown token for every binary and every thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// A cheap-to-clone token that says "stop". Loops poll
/// [`Shutdown::is_triggered`] between waits, event loops put
/// [`Shutdown::receiver`] in their `select!` (it becomes ready, disconnected,
/// the moment the token fires), and blocking calls that cannot select
/// register an [`Shutdown::on_trigger`] hook to unblock them.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

struct Inner {
    fired: AtomicBool,
    /// Dropped when the token fires, which disconnects every receiver.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    hooks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A token that fires only when [`Shutdown::trigger`] is called.
    pub fn new() -> Shutdown {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Shutdown(Arc::new(Inner {
            fired: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            rx,
            hooks: Mutex::new(Vec::new()),
        }))
    }

    /// A token that also fires on SIGINT or SIGTERM.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let token = Shutdown::new();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let t = token.clone();
        std::thread::Builder::new()
            .name("zync-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    t.trigger();
                }
            })?;
        Ok(token)
    }

    /// Fires the token (again is harmless): every waiter wakes, every hook
    /// runs once.
    pub fn trigger(&self) {
        if self.0.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut tx) = self.0.tx.lock() {
            tx.take();
        }
        let hooks = self
            .0
            .hooks
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        for h in hooks {
            h();
        }
    }

    /// Whether the token has fired.
    pub fn is_triggered(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// A receiver that is ready (disconnected) once the token has fired;
    /// nothing is ever sent on it.
    pub fn receiver(&self) -> Receiver<()> {
        self.0.rx.clone()
    }

    /// Sleeps up to `d`, waking early if the token fires; returns whether it has.
    pub fn sleep(&self, d: Duration) -> bool {
        let _ = self.0.rx.recv_timeout(d);
        self.is_triggered()
    }

    /// Runs `hook` when the token fires (at once if it already has).
    pub fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) {
        if let Ok(mut h) = self.0.hooks.lock() {
            if !self.is_triggered() {
                h.push(Box::new(hook));
                return;
            }
        }
        hook();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_wakes_sleepers_and_selects_and_runs_hooks_once() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        assert!(!s.sleep(Duration::from_millis(1)));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        s.on_trigger(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let (s2, rx) = (s.clone(), s.receiver());
        let t = std::time::Instant::now();
        let sleeper = std::thread::spawn(move || s2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        s.trigger();
        assert!(sleeper.join().unwrap_or(false));
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(rx.recv().is_err(), "the receiver is disconnected");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let r = runs.clone();
        s.on_trigger(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2, "a late hook runs at once");
    }
}
