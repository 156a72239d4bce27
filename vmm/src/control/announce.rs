//! A breakpoint exists for clients from its `added` event on. Its hits (and its mapping
//! changes) may come from a vCPU the moment it is armed, which is before the session has
//! published `added`; they wait for it here, so the stream never shows a hit of a breakpoint it
//! has not announced yet.
//!
//! The wait is bounded by the arming command itself (it publishes `added` right after the
//! engine armed it, or gives up on error), and a vCPU waits at most [`ANNOUNCE_WAIT`]
//! whatever happens: a hit is never lost, at worst it comes before its `added`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use drvisor_api::HitAction;

use crate::debug::{HitContext, OnHit};

/// The longest a vCPU waits for a breakpoint's `added` before it reports the hit anyway.
pub const ANNOUNCE_WAIT: Duration = Duration::from_secs(5);

/// Whether a breakpoint's `added` event is out.
#[derive(Default)]
pub struct Announcement {
    out: Mutex<bool>,
    told: Condvar,
}

impl Announcement {
    /// A new, not yet announced breakpoint.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// `added` is out (or the arming failed): every waiter goes on.
    pub fn open(&self) {
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.told.notify_all();
    }

    /// Waits until `added` is out, at most [`ANNOUNCE_WAIT`].
    pub fn wait(&self) {
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let (out, timeout) = self
            .told
            .wait_timeout_while(out, ANNOUNCE_WAIT, |out| !*out)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() && !*out {
            tracing::warn!("a hit waited {ANNOUNCE_WAIT:?} for its breakpoint's added event");
        }
    }

    /// `on_hit`, called once `added` is out.
    pub fn gate(self: &Arc<Self>, on_hit: OnHit) -> OnHit {
        let announced = self.clone();
        Arc::new(move |hit: &HitContext| -> HitAction {
            announced.wait();
            on_hit(hit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    #[test]
    fn a_waiter_goes_on_when_it_opens_and_not_before() {
        let a = Announcement::new();
        let done = Arc::new(AtomicBool::new(false));
        let (a2, d2) = (a.clone(), done.clone());
        let waiter = std::thread::spawn(move || {
            a2.wait();
            d2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst), "went on before `added`");
        a.open();
        waiter.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn an_open_announcement_costs_no_wait() {
        let a = Announcement::new();
        a.open();
        let t = Instant::now();
        a.wait();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
