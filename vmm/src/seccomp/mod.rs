//! seccomp filters: each drvisor thread may make only the system calls its job needs.
//!
//! drvisor parses untrusted input (kernel images, specs, HTTP requests, gdb packets, and
//! whatever the guest does at its ports) in a process that holds `/dev/kvm` and the user's
//! files. As Firecracker and Cloud Hypervisor do, each thread installs a filter for its kind
//! when it starts ([`enter`]): a vCPU thread, for one, can run `KVM_RUN` and write its events,
//! and can neither open a file, make a socket nor start a program. A forbidden call ends the
//! run at once, reported with the thread and the call ([`report`]), with exit code
//! [`EXIT_CODE`].
//!
//! The filters are per thread, not per process: a thread inherits the filters of the thread
//! that made it, and adds its own (the kernel applies every filter a thread has, and the
//! strictest answer wins). So the main thread installs its own last, once every long-lived
//! thread is started.
//!
//! Which filters apply is the binary's choice ([`set_mode`]); a library user that never sets
//! one (the tests that run a VM in-process) gets none.

mod report;
mod rules;

use std::sync::OnceLock;

pub use report::EXIT_CODE;
pub use rules::{filter, ThreadKind};

/// What a thread's filter does with a call outside its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// End the run, reported (the default of `drvisor run`).
    Enforce,
    /// Let it through; the kernel logs it (the audit log, `dmesg`): to find what a filter
    /// lacks.
    Log,
    /// No filters (for debugging drvisor itself).
    None,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the mode for every thread that starts from now on, once per process. The first call
/// wins; later calls change nothing and say so.
pub fn set_mode(mode: Mode) -> Result<(), Error> {
    if mode == Mode::Enforce {
        report::install()?;
    }
    MODE.set(mode).map_err(|_| Error::ModeAlreadySet)
}

/// The mode set, if any.
pub fn mode() -> Option<Mode> {
    MODE.get().copied()
}

/// Installs the filter of `kind` on the calling thread, under the mode set by [`set_mode`]
/// (nothing if none was set, or `none`).
pub fn enter(kind: ThreadKind) -> Result<(), Error> {
    let action = match mode() {
        None | Some(Mode::None) => return Ok(()),
        Some(Mode::Enforce) => seccompiler::SeccompAction::Trap,
        Some(Mode::Log) => seccompiler::SeccompAction::Log,
    };
    for program in filter(kind, action)? {
        seccompiler::apply_filter(&program).map_err(|source| Error::Apply { kind, source })?;
    }
    Ok(())
}

/// [`enter`], for a thread that cannot return the error: a filter that cannot be installed
/// ends the process with a message (running unfiltered where filters were asked for would be
/// silent).
pub fn enter_or_exit(kind: ThreadKind) {
    if let Err(e) = enter(kind) {
        eprintln!("drvisor: {e}");
        std::process::exit(i32::from(EXIT_CODE));
    }
}

/// Why a filter could not be made or installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// seccompiler refused a rule (a bug in [`rules`]).
    #[error("the seccomp filter of the {kind} thread could not be built: {source}")]
    Build {
        /// Which filter.
        kind: ThreadKind,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("the seccomp filter of the {kind} thread could not be installed (a kernel without seccomp? `--seccomp none` runs without): {source}")]
    Apply {
        /// Which filter.
        kind: ThreadKind,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::Error,
    },
    /// The SIGSYS handler could not be installed.
    #[error("the handler that reports a forbidden system call could not be installed: {0}")]
    Handler(#[source] std::io::Error),
    /// [`set_mode`] was called twice.
    #[error("the seccomp mode was already set")]
    ModeAlreadySet,
}
