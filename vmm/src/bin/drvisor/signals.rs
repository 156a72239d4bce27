//! SIGINT, SIGTERM and SIGHUP stop a run in an orderly way.
//!
//! The first signal ends the run through [`RunControl::finish`], which kicks every vCPU out of
//! `KVM_RUN`; the main thread then joins them, writes the page-trap counters and the closing
//! message as after any other ending, and exits with 128 + the signal's number, as a shell
//! reports a process the signal killed (SIGHUP 129, SIGINT 130, SIGTERM 143). Hit events are
//! written as they happen, so the events file holds every hit reported so far.
//!
//! A second signal exits at once (`_exit`), for a run that does not stop. So does a signal
//! before the VM exists: nothing has run that needs writing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use drvisor::exit_code;
use drvisor::outcome::{signal_name, Outcome};
use drvisor::run_control::RunControl;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The signals that stop a run.
pub const STOPPING: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Where a stopping signal goes: the run, once there is one.
#[derive(Default)]
pub struct Stopper {
    run: Mutex<Option<Arc<RunControl>>>,
    received: AtomicUsize,
}

impl Stopper {
    /// From now on, a first signal ends `run` instead of the process.
    pub fn attach(&self, run: Arc<RunControl>) {
        *self.run.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
    }

    fn on_signal(&self, signal: i32) {
        let name = signal_name(signal);
        let code = i32::from(exit_code::SIGNAL_BASE) + signal;
        // The messages before a forced exit go straight to stderr: one held for a guest line
        // would be lost with the process.
        if self.received.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("drvisor: {name} again: exiting at once");
            force_exit(code);
        }
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match run {
            Some(run) => {
                crate::announce::say(format!(
                    "{name}: stopping the run (send it again to exit at once)"
                ));
                run.finish(Outcome::Signalled {
                    signal,
                    stopped_at: Vec::new(),
                });
            }
            None => {
                eprintln!("drvisor: {name} before the guest started: exiting");
                force_exit(code);
            }
        }
    }
}

fn force_exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions. It skips atexit handlers and stdio flushing on
    // purpose: another thread may hold a lock they need, which is what a forced exit escapes.
    unsafe { libc::_exit(code) }
}

/// Takes SIGINT, SIGTERM and SIGHUP away from their default disposition (which kills the
/// process with nothing written) and handles them on a thread of their own.
pub fn install() -> std::io::Result<Arc<Stopper>> {
    let stopper = Arc::new(Stopper::default());
    let mut signals = Signals::new(STOPPING)?;
    let s = stopper.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            drvisor::seccomp::enter_or_exit(drvisor::seccomp::ThreadKind::Helper);
            for signal in signals.forever() {
                s.on_signal(signal);
            }
        })?;
    Ok(stopper)
}
