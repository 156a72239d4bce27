//! The end of a run, shared by every thread: the first outcome wins, the main loop is woken
//! through an EventFd, and every vCPU is kicked out of `KVM_RUN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::kick::Kicker;
use crate::outcome::Outcome;

/// Shared run state.
pub struct RunControl {
    finished: AtomicBool,
    outcome: Mutex<Option<Outcome>>,
    /// Signalled when the outcome is set: timer threads sleep on it, so they end with the run
    /// rather than at their next tick (which the run's end would wait for).
    ended: Condvar,
    /// Written once when the run finishes; the event loop's shutdown subscriber waits on it.
    pub done_evt: EventFd,
    /// Reaches every vCPU thread.
    pub kicker: Kicker,
}

impl RunControl {
    /// A run that has not finished.
    pub fn new() -> std::io::Result<Self> {
        Ok(RunControl {
            finished: AtomicBool::new(false),
            outcome: Mutex::new(None),
            ended: Condvar::new(),
            done_evt: EventFd::new(EFD_NONBLOCK)?,
            kicker: Kicker::default(),
        })
    }

    /// Ends the run with `outcome`, unless it already ended.
    pub fn finish(&self, outcome: Outcome) {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        tracing::debug!("run finished: {outcome}");
        *slot = Some(outcome);
        self.finished.store(true, Ordering::SeqCst);
        drop(slot);
        self.ended.notify_all();
        let _ = self.done_evt.write(1);
        self.kicker.kick_all();
    }

    /// Whether the run has ended. Cheap: the vCPU loops check it after every exit.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Sleeps for `period`, or less if the run ends meanwhile; returns whether it has ended.
    pub fn sleep_unless_finished(&self, period: Duration) -> bool {
        let slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let (slot, _) = self
            .ended
            .wait_timeout_while(slot, period, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        slot.is_some()
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_sleeper_wakes_when_the_run_ends_not_at_its_period() {
        let control = Arc::new(RunControl::new().unwrap());
        let sleeper = {
            let control = control.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let ended = control.sleep_unless_finished(Duration::from_secs(30));
                (ended, start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        control.finish(Outcome::Requested);
        let (ended, slept) = sleeper.join().unwrap();
        assert!(ended);
        assert!(slept < Duration::from_secs(10), "{slept:?}");
        // Once ended, it does not sleep at all.
        let start = Instant::now();
        assert!(control.sleep_unless_finished(Duration::from_secs(30)));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_sleeper_times_out_while_the_run_goes_on() {
        let control = RunControl::new().unwrap();
        assert!(!control.sleep_unless_finished(Duration::from_millis(5)));
    }
}
