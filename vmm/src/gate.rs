//! The gate every vCPU passes before it enters the guest. It parks the vCPUs for an all-stop
//! pause (a breakpoint's `pause` action), and it lets the VMM *quiesce* them: wait until no
//! vCPU is inside `KVM_RUN`, for changes such as memslot updates that must not race a guest
//! access.
//!
//! The protocol is Dekker's: a vCPU publishes `in_guest` and then checks for a pause; the VMM
//! publishes the pause, kicks, and then waits for `in_guest` to clear. With sequentially
//! consistent accesses, either the vCPU sees the pause and stays out, or the VMM sees the vCPU
//! inside and waits for the kick to bring it out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::run_control::RunControl;

/// How long a waiter sleeps before re-checking that the run has not ended, and re-kicking.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// Told of every pause and resume that changes the gate (`true`: paused), with its reason.
/// It is called under the gate's lock, so the calls come in the order the changes happened; it
/// must not call back into the gate.
pub type PauseListener = Box<dyn Fn(bool, &str) + Send + Sync>;

/// The vCPUs' entry gate.
pub struct VcpuGate {
    user_paused: AtomicBool,
    /// Counts resumes, so a pause decided before a resume arrived does not undo it.
    resumes: AtomicU64,
    holds: AtomicUsize,
    in_guest: Vec<AtomicBool>,
    /// One entry each, granted while the gate is closed (a debugger's single-step).
    passes: Vec<AtomicBool>,
    lock: Mutex<()>,
    changed: Condvar,
    control: Arc<RunControl>,
    listener: OnceLock<PauseListener>,
}

/// While alive, no vCPU *enters* `KVM_RUN`; vCPUs already inside may still be running there.
/// Dropping it lets them back in.
pub struct Held<'a> {
    gate: &'a VcpuGate,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.gate.holds.fetch_sub(1, SeqCst);
        self.gate.notify();
    }
}

/// A [`Held`] that owns its gate, to keep across threads (a sleep: taken by the vCPU that asks
/// for it, dropped by the thread that wakes the machine).
pub struct OwnedHeld {
    gate: Arc<VcpuGate>,
}

impl Drop for OwnedHeld {
    fn drop(&mut self) {
        self.gate.holds.fetch_sub(1, SeqCst);
        self.gate.notify();
    }
}

/// While alive, no vCPU is inside `KVM_RUN` (or the run has ended): a [`Held`] gate that was
/// also waited empty. Dropping it lets them back in.
pub struct Quiesced<'a> {
    _held: Held<'a>,
}

impl VcpuGate {
    /// A gate for `vcpus` vCPUs of the run `control`.
    pub fn new(vcpus: usize, control: Arc<RunControl>) -> Self {
        VcpuGate {
            user_paused: AtomicBool::new(false),
            resumes: AtomicU64::new(0),
            holds: AtomicUsize::new(0),
            in_guest: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            passes: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            lock: Mutex::new(()),
            changed: Condvar::new(),
            control,
            listener: OnceLock::new(),
        }
    }

    /// Sets the one [`PauseListener`]; `false` if one is set already.
    pub fn listen(&self, listener: PauseListener) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// Sets the pause flag to `paused`; tells the listener if that changed it. Under the lock.
    /// Returns the flag as it was.
    fn set_paused(&self, paused: bool, reason: &str) -> bool {
        let was = self.user_paused.swap(paused, SeqCst);
        if was != paused {
            if let Some(tell) = self.listener.get() {
                tell(paused, reason);
            }
        }
        was
    }

    /// How many vCPUs pass this gate.
    pub fn vcpus(&self) -> usize {
        self.in_guest.len()
    }

    fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    fn closed(&self) -> bool {
        self.user_paused.load(SeqCst) || self.holds.load(SeqCst) > 0
    }

    /// Called by vCPU `index` right before `KVM_RUN`. `false`: it must not enter; park.
    pub fn try_enter(&self, index: usize) -> bool {
        let Some(flag) = self.in_guest.get(index) else {
            return true;
        };
        flag.store(true, SeqCst);
        // A pass gets past a pause, never past a hold: a quiesce promises nobody is inside.
        let held = self.holds.load(SeqCst) > 0;
        if held || (self.user_paused.load(SeqCst) && !self.passes[index].load(SeqCst)) {
            self.leave(index);
            return false;
        }
        true
    }

    /// Lets vCPU `index` enter while the gate stays closed for the others, until
    /// [`VcpuGate::end_pass`] (a debugger's single-step: the entries it takes until the
    /// instruction has run, however often a kick interrupts them).
    pub fn pass(&self, index: usize) {
        if let Some(pass) = self.passes.get(index) {
            pass.store(true, SeqCst);
            self.notify();
        }
    }

    /// Ends vCPU `index`'s pass.
    pub fn end_pass(&self, index: usize) {
        if let Some(pass) = self.passes.get(index) {
            pass.store(false, SeqCst);
        }
    }

    /// Whether vCPU `index` may enter on its pass now (it should stop parking and try): it
    /// holds one, and no hold keeps everyone out.
    pub fn has_pass(&self, index: usize) -> bool {
        self.passes.get(index).is_some_and(|p| p.load(SeqCst)) && self.holds.load(SeqCst) == 0
    }

    /// Called by vCPU `index` when `KVM_RUN` returns.
    pub fn leave(&self, index: usize) {
        if let Some(flag) = self.in_guest.get(index) {
            flag.store(false, SeqCst);
            if self.holds.load(SeqCst) > 0 {
                self.notify();
            }
        }
    }

    /// Blocks a vCPU thread while the gate is closed, until `wake` says there is work to do
    /// outside the guest, or the run ends.
    pub fn park(&self, wake: impl Fn() -> bool) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.closed() && !self.control.is_finished() && !wake() {
            guard = self
                .changed
                .wait_timeout(guard, WAIT_SLICE)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Pauses every vCPU (all-stop) until [`VcpuGate::resume`], for `reason`. vCPUs already
    /// parked (for a hold) are woken to leave their registers for clients.
    pub fn pause(&self, reason: &str) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.set_paused(true, reason);
        self.changed.notify_all();
        drop(guard);
        self.control.kicker.kick_all();
    }

    /// Ends a pause, for `reason`; whether the VM was paused. Not paused, it still cancels a
    /// pause announced and not yet taken (see [`VcpuGate::resume_mark`]).
    pub fn resume(&self, reason: &str) -> bool {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.resumes.fetch_add(1, SeqCst);
        let was_paused = self.set_paused(false, reason);
        self.changed.notify_all();
        was_paused
    }

    /// A mark to give [`VcpuGate::pause_unless_resumed_since`]: take it before announcing a
    /// pause that is about to happen (a `pause` hit's event), so a client that answers the
    /// announcement with a resume at once is not overtaken by the pause.
    pub fn resume_mark(&self) -> u64 {
        self.resumes.load(SeqCst)
    }

    /// Pauses every vCPU for `reason`, unless a resume arrived after `mark` was taken. Whether
    /// it paused.
    pub fn pause_unless_resumed_since(&self, mark: u64, reason: &str) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.resumes.load(SeqCst) != mark {
            return false;
        }
        self.set_paused(true, reason);
        drop(guard);
        self.control.kicker.kick_all();
        true
    }

    /// Whether the VM is paused by [`VcpuGate::pause`].
    pub fn is_paused(&self) -> bool {
        self.user_paused.load(SeqCst)
    }

    /// Keeps vCPUs from entering the guest until the returned guard is dropped, without waiting
    /// for the ones inside to come out: they finish what they run, and cannot start anything
    /// new.
    pub fn hold(&self) -> Held<'_> {
        self.holds.fetch_add(1, SeqCst);
        Held { gate: self }
    }

    /// [`VcpuGate::hold`], with a guard that owns the gate.
    pub fn hold_owned(self: &Arc<Self>) -> OwnedHeld {
        self.holds.fetch_add(1, SeqCst);
        OwnedHeld { gate: self.clone() }
    }

    /// Wakes the parked vCPUs to look at their `wake` condition again (see
    /// [`VcpuGate::park`]) without opening the gate.
    pub fn wake_parked(&self) {
        self.notify();
    }

    /// Keeps every vCPU out of the guest until the returned guard is dropped. Returns once none
    /// is inside `KVM_RUN` (or the run has ended). Callable from a vCPU thread: that one is, by
    /// definition, not inside `KVM_RUN`.
    pub fn quiesce(&self) -> Quiesced<'_> {
        let held = self.hold();
        self.control.kicker.kick_all();
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.in_guest.iter().any(|f| f.load(SeqCst)) && !self.control.is_finished() {
            guard = self
                .changed
                .wait_timeout(guard, WAIT_SLICE)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            self.control.kicker.kick_all();
        }
        Quiesced { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(n: usize) -> VcpuGate {
        VcpuGate::new(n, Arc::new(RunControl::new().unwrap()))
    }

    #[test]
    fn a_closed_gate_keeps_vcpus_out() {
        let g = gate(2);
        assert!(g.try_enter(0));
        g.leave(0);
        g.pause("test");
        assert!(!g.try_enter(0));
        g.resume("test");
        assert!(g.try_enter(1));
        g.leave(1);
    }

    #[test]
    fn a_resume_after_the_mark_is_not_undone_by_the_pause() {
        let g = gate(1);
        let mark = g.resume_mark();
        // The pause was announced; the client resumed before the vCPU got to pause.
        g.resume("test");
        assert!(!g.pause_unless_resumed_since(mark, "hit"));
        assert!(!g.is_paused());
        let mark = g.resume_mark();
        assert!(g.pause_unless_resumed_since(mark, "hit"));
        assert!(g.is_paused());
    }

    #[test]
    fn the_listener_hears_each_change_once_in_order() {
        let g = gate(1);
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        assert!(g.listen(Box::new(move |paused, why| {
            log.lock().unwrap().push(format!("{paused} {why}"))
        })));
        g.pause("a");
        g.pause("again: no change");
        let mark = g.resume_mark();
        g.resume("b");
        assert!(!g.pause_unless_resumed_since(mark, "declined: no change"));
        g.resume("not paused: no change");
        let mark = g.resume_mark();
        assert!(g.pause_unless_resumed_since(mark, "c"));
        assert_eq!(*heard.lock().unwrap(), ["true a", "false b", "true c"]);
        assert!(!g.listen(Box::new(|_, _| {})), "one listener");
    }

    #[test]
    fn a_pass_lets_one_vcpu_in_until_it_ends() {
        let g = gate(2);
        g.pause("test");
        g.pass(1);
        assert!(g.has_pass(1) && !g.has_pass(0));
        assert!(!g.try_enter(0), "the others stay out");
        assert!(g.try_enter(1), "the pass holder enters");
        g.leave(1);
        assert!(g.try_enter(1), "until the pass ends");
        g.leave(1);
        {
            let _held = g.hold();
            assert!(!g.has_pass(1) && !g.try_enter(1), "never past a hold");
        }
        g.end_pass(1);
        assert!(!g.try_enter(1), "then it parks with the others");
    }

    #[test]
    fn an_owned_hold_keeps_vcpus_out_until_dropped_on_any_thread() {
        let g = Arc::new(gate(1));
        let held = g.hold_owned();
        assert!(!g.try_enter(0));
        std::thread::spawn(move || drop(held)).join().unwrap();
        assert!(g.try_enter(0));
        g.leave(0);
    }

    #[test]
    fn quiesce_waits_for_the_vcpu_inside() {
        let g = Arc::new(gate(1));
        assert!(g.try_enter(0));
        let g2 = g.clone();
        let left = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let left2 = left.clone();
        let leaver = std::thread::spawn(move || {
            // The pause only gives a quiesce that does not wait the chance to return first.
            std::thread::sleep(Duration::from_millis(50));
            left2.store(true, SeqCst);
            g2.leave(0);
        });
        let q = g.quiesce();
        // Ordering, not time: quiesce returned only after the vCPU left.
        assert!(left.load(SeqCst), "quiesce returned with the vCPU inside");
        assert!(!g.try_enter(0), "closed while quiesced");
        drop(q);
        assert!(g.try_enter(0), "open again");
        leaver.join().unwrap();
    }
}
