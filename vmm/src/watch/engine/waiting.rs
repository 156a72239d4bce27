//! Guest-virtual watches that wait for the guest to map their bytes.
//!
//! A kernel's own addresses (`0xffffffff8...`) mean nothing until it sets up paging, so a watch
//! on one, given before the kernel runs, is the common case, not a mistake. It is kept with the
//! reason it waits, under the id it will keep, and tried again
//! - at the vCPUs' debug and page-fault exits, and
//! - from a thread of its own, which looks every [`TIMER_EVERY`] while the guest runs,
//!
//! each time at most once per wait ([`Pace`]): 2 ms at first, doubled by every try that arms
//! nothing, up to [`LONGEST_WAIT`] (a try takes every vCPU out of the guest to translate), and
//! back to 2 ms when a watch starts waiting or one is armed.
//!
//! until its bytes translate to RAM; then it is armed exactly as if it had translated at once,
//! and the engine's listener (the control session, which tells every client) hears of it.
//! Accesses before that moment are not seen: docs/watchpoints.md says so. The same timer follows armed
//! watches that the guest maps elsewhere ([`super::remap`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drvisor_debug::HostBpId;

use super::{MappingChange, PageWatchEngine, PageWatchRequest, Resolved};
use crate::run_control::RunControl;

/// The first wait between two tries.
pub const FIRST_WAIT: Duration = Duration::from_millis(2);
/// The longest wait between two tries.
pub const LONGEST_WAIT: Duration = Duration::from_millis(160);
/// How often the timer tries while anything waits.
pub const TIMER_EVERY: Duration = Duration::from_millis(20);

struct Entry {
    id: HostBpId,
    request: PageWatchRequest,
    reason: String,
    /// It cannot be armed however the guest maps it: no more tries.
    failed: bool,
}

impl Entry {
    fn fail(&mut self, reason: String) {
        tracing::warn!("page watch #{}: {reason}", self.id.0);
        self.reason = reason;
        self.failed = true;
    }
}

/// The waiting watches.
#[derive(Default)]
pub struct Waiting {
    entries: Mutex<Vec<Entry>>,
    any: AtomicBool,
    /// The vCPUs' exits and the timer each keep their own pace: a try of the timer that found
    /// nothing mapped must not make the next exit's try wait. An exit is where the guest has
    /// just run (a guest that maps the bytes and then touches a watched page exits there), so
    /// its try is the one that catches the mapping before the guest's next accesses; with one
    /// shared pace, a timer's failed try up to 160 ms before it skipped that try, and the
    /// watch armed only after the accesses it should have seen (seen on nested SVM).
    exit_pace: Mutex<Pace>,
    timer_pace: Mutex<Pace>,
}

/// Who tries the waiting watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryBy {
    /// A vCPU's debug or page-fault exit.
    Exit,
    /// The timer.
    Timer,
}

/// When the next try is due: an exponential backoff between [`FIRST_WAIT`] and
/// [`LONGEST_WAIT`].
#[derive(Debug)]
struct Pace {
    last: Option<Instant>,
    wait: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            last: None,
            wait: FIRST_WAIT,
        }
    }
}

impl Pace {
    /// Whether a try is due at `now`; if so, it counts as made.
    fn take(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|t| now.duration_since(t) < self.wait) {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// A try armed something (back to the first wait) or nothing (twice as long, at most the
    /// longest).
    fn tried(&mut self, armed: bool) {
        self.wait = match armed {
            true => FIRST_WAIT,
            false => (self.wait * 2).min(LONGEST_WAIT),
        };
    }
}

impl Waiting {
    fn pace(&self, by: RetryBy) -> std::sync::MutexGuard<'_, Pace> {
        match by {
            RetryBy::Exit => &self.exit_pace,
            RetryBy::Timer => &self.timer_pace,
        }
        .lock()
        .unwrap_or_else(|e| e.into_inner())
    }

    /// Both paces back to the first wait: a watch started waiting, or one was armed.
    fn restart_paces(&self) {
        *self.pace(RetryBy::Exit) = Pace::default();
        *self.pace(RetryBy::Timer) = Pace::default();
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PageWatchEngine {
    /// Keeps `request` waiting for the guest to map its bytes, as `id`; returns it.
    pub(super) fn wait_for_mapping(
        &self,
        id: HostBpId,
        request: PageWatchRequest,
        reason: String,
    ) -> HostBpId {
        tracing::info!(
            "page watch #{} ({}) waits: {reason}",
            id.0,
            crate::quote::cut(&request.label)
        );
        let mut entries = self.waiting.entries();
        entries.push(Entry {
            id,
            request,
            reason,
            failed: false,
        });
        self.waiting.any.store(true, Ordering::SeqCst);
        self.waiting.restart_paces();
        id
    }

    /// Why watch `id` waits, if it does, and whether it is still tried (`false`: it cannot be
    /// armed however the guest maps it).
    pub fn waiting_reason(&self, id: HostBpId) -> Option<(String, bool)> {
        let entries = self.waiting.entries();
        entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| (e.reason.clone(), !e.failed))
    }

    /// Drops waiting watch `id`; whether it was waiting.
    pub(super) fn stop_waiting(&self, id: HostBpId) -> bool {
        let mut entries = self.waiting.entries();
        let before = entries.len();
        entries.retain(|e| e.id != id);
        self.waiting
            .any
            .store(!entries.is_empty(), Ordering::SeqCst);
        entries.len() != before
    }

    /// A vCPU's exit, or the timer (`by`): tries the waiting watches, unless none waits (one
    /// load) or the next try of `by` is not due yet ([`Pace`]). Callable from a vCPU thread.
    pub fn retry_waiting_when_due(&self, by: RetryBy) {
        if !self.waiting.any.load(Ordering::Relaxed) {
            return;
        }
        if !self.waiting.pace(by).take(Instant::now()) {
            return;
        }
        let armed = self.retry_waiting();
        if armed {
            self.waiting.restart_paces();
        } else {
            self.waiting.pace(by).tried(false);
        }
    }

    /// Tries every waiting watch once: one whose bytes now translate to RAM is armed. One that
    /// translates but cannot be armed (no memslot left, an executable page...) stops waiting
    /// and keeps that reason as its state. The list stays locked throughout, so a removal
    /// waits for the try and then finds the watch armed, never half-way.
    /// Whether it armed one.
    pub fn retry_waiting(&self) -> bool {
        let mut armed = Vec::new();
        {
            let mut entries = self.waiting.entries();
            for entry in entries.iter_mut().filter(|e| !e.failed) {
                match self.resolve(entry.request.range) {
                    Ok(Resolved::NotYet(reason)) => entry.reason = reason,
                    Ok(Resolved::Ranges(ranges)) => {
                        match self.install_watch(Some(entry.id), entry.request.clone(), ranges) {
                            Ok(id) => armed.push(id),
                            Err(e) => entry.fail(format!(
                                "its bytes translate now, but it cannot be armed: {e}"
                            )),
                        }
                    }
                    Err(e) => entry.fail(format!("its bytes cannot be translated: {e}")),
                }
            }
            entries.retain(|e| !armed.contains(&e.id));
            self.waiting
                .any
                .store(entries.iter().any(|e| !e.failed), Ordering::SeqCst);
        }
        // Told with the list unlocked: the listener looks the watch up, which reads it.
        let any = !armed.is_empty();
        for id in armed {
            tracing::info!(
                "page watch #{} is armed: the guest maps its bytes now",
                id.0
            );
            self.tell(id, MappingChange::Armed);
        }
        any
    }

    /// Starts the timer that tries the waiting watches, and follows the armed ones the guest
    /// maps elsewhere, every [`TIMER_EVERY`] until the run ends. It quiesces the vCPUs only
    /// while a watch waits, or to move one.
    pub fn spawn_mapping_timer(
        self: &Arc<Self>,
        control: Arc<RunControl>,
    ) -> std::io::Result<JoinHandle<()>> {
        let engine = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("drvisor-mapping".into())
            .spawn(move || {
                crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Helper);
                loop {
                    // Ends with the run at once: the run's end joins this thread.
                    if control.sleep_unless_finished(TIMER_EVERY) {
                        return;
                    }
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.retry_waiting_when_due(RetryBy::Timer);
                    engine.follow_remaps_from_timer();
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_back_off_exponentially_and_start_over_once_one_arms() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        assert!(pace.take(t0), "the first try is due at once");
        assert!(!pace.take(t0 + Duration::from_millis(1)));
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            pace.tried(false);
            waits.push(pace.wait.as_millis());
            at += pace.wait;
            assert!(!pace.take(at - Duration::from_micros(1)), "early");
            assert!(pace.take(at), "due after its wait");
        }
        assert_eq!(waits, [4, 8, 16, 32, 64, 128, 160, 160, 160, 160]);
        pace.tried(true);
        assert_eq!(pace.wait, FIRST_WAIT);
    }
}
