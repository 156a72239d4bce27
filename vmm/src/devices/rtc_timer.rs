//! The thread that makes the CMOS RTC's interrupts happen on time: it sleeps until the next
//! update that can raise IRQ 8 ([`super::CmosRtc::next_interrupt`]), applies the updates, and
//! hands each alarm interrupt on (the S3 wake). With no interrupt enabled it sleeps until the
//! guest changes the RTC's enables, alarm or time ([`AlarmSignal::changed`]), or the run ends
//! ([`AlarmSignal::stop`]): a guest that never enables one costs nothing.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cmos_rtc::CmosRtc;

/// Wakes the RTC thread: a change, or the end.
#[derive(Default)]
pub struct AlarmSignal {
    /// Changes so far, and whether the thread must end.
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl AlarmSignal {
    /// The next interrupt may have moved.
    pub fn changed(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        self.cv.notify_all();
    }

    /// Ends the thread.
    pub fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.cv.notify_all();
    }

    fn generation(&self) -> (u64, bool) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a change after `seen`, the stop, or `timeout` (`None`: no timeout). Returns
    /// whether to stop.
    fn wait(&self, seen: u64, timeout: Option<Duration>) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = |s: &mut (u64, bool)| s.0 == seen && !s.1;
        let s = match timeout {
            Some(t) => {
                self.cv
                    .wait_timeout_while(s, t, unchanged)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self
                .cv
                .wait_while(s, unchanged)
                .unwrap_or_else(|e| e.into_inner()),
        };
        s.1
    }
}

/// A little past the second, so the update it waits for has happened on the clock it reads.
const SLACK: Duration = Duration::from_millis(1);

/// Starts the RTC thread for `rtc`; each alarm interrupt calls `on_alarm` (without the RTC's
/// lock held).
pub fn spawn(
    rtc: Arc<Mutex<CmosRtc>>,
    signal: Arc<AlarmSignal>,
    on_alarm: Box<dyn Fn() + Send>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("drvisor-rtc".into())
        .spawn(move || {
            crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Helper);
            loop {
                // The generation before looking: a change after the look wakes the wait.
                let (seen, stopped) = signal.generation();
                if stopped {
                    return;
                }
                let (events, next) = {
                    let mut rtc = rtc.lock().unwrap_or_else(|e| e.into_inner());
                    (rtc.catch_up(), rtc.next_interrupt())
                };
                if events.alarm_interrupt {
                    on_alarm();
                }
                if signal.wait(seen, next.map(|n| n + SLACK)) {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_wait_ends_at_a_change_the_stop_or_the_timeout() {
        let signal = Arc::new(AlarmSignal::default());
        let start = Instant::now();
        assert!(!signal.wait(0, Some(Duration::from_millis(5))), "timeout");
        assert!(start.elapsed() >= Duration::from_millis(5));
        let (seen, _) = signal.generation();
        signal.changed();
        assert!(!signal.wait(seen, None), "a change before the wait is seen");
        let s2 = signal.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.stop();
        });
        let (seen, _) = signal.generation();
        assert!(signal.wait(seen, None), "the stop");
        stopper.join().unwrap();
    }
}
