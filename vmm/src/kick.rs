//! Kicking a vCPU thread out of `KVM_RUN`, without races.
//!
//! A real-time signal interrupts the thread's `KVM_RUN` ioctl. Its handler also sets
//! `kvm_run.immediate_exit`, so a kick that lands just *before* the thread enters `KVM_RUN` is
//! not lost: KVM returns `EINTR` at once (Documentation/virt/kvm/api.rst, "immediate_exit").
//! This is the "IPI" of the 2009 hw-breakpoint review, and what Firecracker does too.

use std::cell::Cell;
use std::ptr;
use std::sync::{Mutex, Once};

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// The `kvm_run` page of the vCPU this thread runs, or null. Const-initialised, so reading
    /// it from a signal handler allocates nothing.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|run| {
        let p = run.get();
        if !p.is_null() {
            // SAFETY: `p` is this thread's own mapped `kvm_run` page, registered by
            // `enter_vcpu_thread` and cleared by `leave_vcpu_thread` before the mapping goes
            // away; a single aligned byte store is async-signal-safe.
            unsafe { ptr::write_volatile(&mut (*p).immediate_exit, 1) };
        }
    });
}

/// The signal drvisor kicks vCPU threads with.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(kick_signal(), on_kick) {
            tracing::error!("cannot install the vCPU kick handler: {e}");
        }
    });
}

/// Marks the current thread as running the vCPU whose `kvm_run` is `run`.
pub fn enter_vcpu_thread(run: *mut kvm_run) {
    install_handler();
    KVM_RUN.with(|r| r.set(run));
}

/// Undoes [`enter_vcpu_thread`].
pub fn leave_vcpu_thread() {
    KVM_RUN.with(|r| r.set(ptr::null_mut()));
}

/// The vCPU threads of one VM, by vCPU index.
#[derive(Default)]
pub struct Kicker {
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
}

impl Kicker {
    /// Registers the calling thread as vCPU `index`. The kick handler is installed first: a
    /// kick that arrives the moment the thread is registered must find it, not the signal's
    /// default action (which ends the process).
    pub fn register_current(&self, index: usize) {
        install_handler();
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if threads.len() <= index {
            threads.resize(index + 1, None);
        }
        // SAFETY: pthread_self has no preconditions.
        threads[index] = Some(unsafe { libc::pthread_self() });
    }

    /// Forgets vCPU `index`; its thread is about to exit and must not be signalled any more.
    pub fn unregister(&self, index: usize) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = threads.get_mut(index) {
            *t = None;
        }
    }

    /// Kicks vCPU `index`, if its thread is running.
    pub fn kick(&self, index: usize) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(t)) = threads.get(index) {
            // SAFETY: `t` is a live thread: it stays registered only until it unregisters
            // itself, which it does (under this lock) before exiting.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    /// Kicks every running vCPU.
    pub fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for t in threads.iter().flatten() {
            // SAFETY: as in `kick`.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }
}
