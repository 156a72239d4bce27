//! The end of a run, shared by every thread: the first outcome wins, the main loop is woken
//! through an EventFd, and every vCPU is kicked out of `KVM_RUN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::outcome::Outcome;
use crate::vcpu::kick::Kicker;

/// Shared run state.
pub struct RunControl {
    finished: AtomicBool,
    outcome: Mutex<Option<Outcome>>,
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
        let _ = self.done_evt.write(1);
        self.kicker.kick_all();
    }

    /// Whether the run has ended. Cheap: the vCPU loops check it after every exit.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
