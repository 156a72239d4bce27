//! Test-only fault injection: KVM failures on demand, so that the paths that report a failed
//! KVM call (exit code 75) and `KVM_EXIT_FAIL_ENTRY` (exit code 72) are exercised end to end.
//!
//! - `kvm-run` is a real failure: KVM itself refuses vCPU 0's `KVM_RUN`.
//! - `fail-entry` is simulated at the seam where KVM's answer enters drvisor: vCPU 0's first
//!   exit is taken as `KVM_EXIT_FAIL_ENTRY` with reason [`SIMULATED_FAIL_ENTRY_REASON`], and
//!   from there the real classification, outcome, message and exit code follow. A real one
//!   cannot be provoked everywhere: our hosts' KVM (PVM) runs every guest state through its
//!   emulator and never fails an entry (it refuses a bad state at `KVM_SET_SREGS`, or the guest
//!   triple-faults), and VMX and SVM refuse different states.
//!
//! The `drvisor` binary takes the fault from the environment variable [`ENV`]; it is meant for
//! drvisor's own tests and is not a command-line flag. It is read only in builds with the
//! `test-hooks` feature (drvisor's own tests turn it on); other builds ignore it.

use std::str::FromStr;

use kvm_ioctls::VcpuFd;

/// The environment variable the `drvisor` binary reads the fault from.
pub const ENV: &str = "DRVISOR_TEST_INJECT_FAULT";

/// A fault KVM produces for real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// `fail-entry`: vCPU 0's first exit is taken as `KVM_EXIT_FAIL_ENTRY` (simulated, see
    /// the module doc).
    FailEntry,
    /// `kvm-run`: vCPU 0's `kvm_run.kvm_valid_regs` gets a bit KVM does not define, so its
    /// `KVM_RUN` fails with EINVAL (x86 `kvm_arch_vcpu_ioctl_run` checks the sync-regs masks).
    KvmRunFails,
    /// `forbidden-call`: vCPU 0's thread, once its seccomp filter is on, makes a system call
    /// no vCPU needs ([`make_a_forbidden_call`]), as a guest that took over the thread might.
    ForbiddenCall,
}

/// Opens a TCP socket, which no vCPU thread's filter allows: under `--seccomp enforce` the run
/// ends here, reported. Without a filter the socket is closed again, and a line says so.
pub fn make_a_forbidden_call() {
    // SAFETY: socket(2) with constant arguments; the descriptor, if any, is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd >= 0 {
        // SAFETY: `fd` is the descriptor socket(2) just returned, owned by nothing else.
        unsafe { libc::close(fd) };
        tracing::warn!(
            "forbidden-call: a vCPU thread opened a socket: no seccomp filter stopped it"
        );
    }
}

/// A fault name this build does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{env}={name}: unknown fault; use fail-entry, kvm-run or forbidden-call", env = ENV, name = .0)]
pub struct UnknownFault(pub String);

impl FromStr for InjectedFault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, UnknownFault> {
        match s {
            "fail-entry" => Ok(InjectedFault::FailEntry),
            "kvm-run" => Ok(InjectedFault::KvmRunFails),
            "forbidden-call" => Ok(InjectedFault::ForbiddenCall),
            other => Err(UnknownFault(crate::quote::cut(other).into_owned())),
        }
    }
}

/// The hardware reason a simulated `KVM_EXIT_FAIL_ENTRY` carries; no VMX exit reason or SVM
/// exit code has this value.
pub const SIMULATED_FAIL_ENTRY_REASON: u64 = 0xdead_0072;

/// A bit of `kvm_run.kvm_valid_regs` that no KVM defines (the valid ones are bits 0-2).
const UNDEFINED_SYNC_REG: u64 = 1 << 31;

impl InjectedFault {
    /// The fault named by [`ENV`], if it is set and this build has the `test-hooks` feature;
    /// without it, always `None`.
    pub fn from_env() -> Result<Option<InjectedFault>, UnknownFault> {
        if !cfg!(feature = "test-hooks") {
            return Ok(None);
        }
        match std::env::var(ENV) {
            Ok(v) => v.parse().map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sets vCPU 0 (`fd`, boot state already set) up for the fault. Returns the reason its
    /// first exit is to be reported with, for a simulated `KVM_EXIT_FAIL_ENTRY`.
    pub fn apply(self, fd: &mut VcpuFd) -> Option<u64> {
        match self {
            InjectedFault::FailEntry => Some(SIMULATED_FAIL_ENTRY_REASON),
            InjectedFault::KvmRunFails => {
                fd.get_kvm_run().kvm_valid_regs |= UNDEFINED_SYNC_REG;
                None
            }
            InjectedFault::ForbiddenCall => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_others_are_refused() {
        assert_eq!("fail-entry".parse(), Ok(InjectedFault::FailEntry));
        assert_eq!("kvm-run".parse(), Ok(InjectedFault::KvmRunFails));
        assert_eq!("forbidden-call".parse(), Ok(InjectedFault::ForbiddenCall));
        let e = "x".parse::<InjectedFault>().unwrap_err();
        assert_eq!(e, UnknownFault("x".into()));
        assert!(
            e.to_string()
                .contains("use fail-entry, kvm-run or forbidden-call"),
            "{e}"
        );
    }
}
