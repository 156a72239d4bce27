//! How a run ends, and the process exit code each ending maps to.

use std::fmt;

/// Exit codes drvisor itself uses. Guest statuses pass through unchanged, so guests should keep
/// theirs below 64 (the test guest uses 0-4).
pub mod exit_code {
    /// The user's mistake: bad flags, a missing kernel, no access to /dev/kvm.
    pub const USAGE: u8 = 2;
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    pub const TRIPLE_FAULT: u8 = 70;
    /// KVM could not run a guest instruction (`KVM_EXIT_INTERNAL_ERROR`).
    pub const INTERNAL_ERROR: u8 = 71;
    /// The vCPU could not enter the guest (`KVM_EXIT_FAIL_ENTRY`).
    pub const FAIL_ENTRY: u8 = 72;
    /// The guest touched a port no device owns, under `--strict-ports`.
    pub const UNKNOWN_PORT: u8 = 73;
    /// A host breakpoint's action stopped the run.
    pub const HOST_STOP: u8 = 74;
    /// A KVM ioctl failed: a VMM or host problem, not the guest's.
    pub const VMM_ERROR: u8 = 75;
    /// A hit event could not be written (`--events` file or stderr): the run was stopped.
    pub const EVENTS_UNWRITABLE: u8 = 76;
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote `status` to the exit port.
    GuestExit {
        /// The status byte.
        status: u8,
    },
    /// The guest triple-faulted.
    TripleFault {
        /// Which vCPU.
        vcpu: usize,
        /// Its RIP when KVM reported the shutdown.
        rip: u64,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`, typically an instruction KVM's emulator cannot run.
    InternalError {
        /// Which vCPU.
        vcpu: usize,
        /// Its RIP.
        rip: u64,
        /// `kvm_run.internal.suberror` (1 = emulation failure).
        suberror: u32,
        /// The instruction bytes at RIP, when KVM or guest memory gave them.
        insn: Vec<u8>,
        /// What drvisor knows about the cause, if anything (e.g. a watched page with no memslot).
        note: Option<String>,
    },
    /// `KVM_EXIT_FAIL_ENTRY`.
    FailEntry {
        /// Which vCPU.
        vcpu: usize,
        /// `hardware_entry_failure_reason`.
        reason: u64,
    },
    /// A port no device owns, under `--strict-ports`.
    UnknownPort {
        /// Which vCPU.
        vcpu: usize,
        /// Its RIP.
        rip: u64,
        /// The port.
        port: u16,
    },
    /// A host breakpoint's `stop` action.
    HostStop {
        /// Which vCPU hit it.
        vcpu: usize,
        /// Its RIP.
        rip: u64,
        /// The breakpoint's id.
        id: u32,
    },
    /// The embedding program ended the run (library API; the REST API's stop).
    Requested,
    /// An event could not be written to its sink (a full disk, `/dev/full`, a closed pipe):
    /// the run was stopped rather than go on losing events.
    EventsUnwritable {
        /// Where the events went (`--events` path or `stderr`).
        sink: String,
        /// The error.
        message: String,
    },
    /// A KVM call failed.
    VmmError {
        /// Which vCPU, if one.
        vcpu: Option<usize>,
        /// What failed.
        message: String,
    },
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::GuestExit { status } => *status,
            Outcome::TripleFault { .. } => exit_code::TRIPLE_FAULT,
            Outcome::InternalError { .. } => exit_code::INTERNAL_ERROR,
            Outcome::FailEntry { .. } => exit_code::FAIL_ENTRY,
            Outcome::UnknownPort { .. } => exit_code::UNKNOWN_PORT,
            Outcome::HostStop { .. } => exit_code::HOST_STOP,
            Outcome::Requested => 0,
            Outcome::VmmError { .. } => exit_code::VMM_ERROR,
            Outcome::EventsUnwritable { .. } => exit_code::EVENTS_UNWRITABLE,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::GuestExit { status } => write!(f, "guest exited with status {status}"),
            Outcome::TripleFault { vcpu, rip } => {
                write!(f, "guest triple fault on vCPU {vcpu} at rip={rip:#x}")
            }
            Outcome::InternalError {
                vcpu,
                rip,
                suberror,
                insn,
                note,
            } => {
                let what = if *suberror == 1 {
                    "KVM could not emulate an instruction"
                } else {
                    "KVM internal error"
                };
                write!(f, "{what} (suberror {suberror}) on vCPU {vcpu} at rip={rip:#x}")?;
                if !insn.is_empty() {
                    write!(f, ", instruction bytes:")?;
                    for b in insn {
                        write!(f, " {b:02x}")?;
                    }
                }
                if let Some(note) = note {
                    write!(f, " ({note})")?;
                }
                Ok(())
            }
            Outcome::FailEntry { vcpu, reason } => {
                write!(f, "vCPU {vcpu} failed to enter the guest (hardware reason {reason:#x})")
            }
            Outcome::UnknownPort { vcpu, rip, port } => write!(
                f,
                "vCPU {vcpu} accessed port {port:#x}, which no device owns, at rip={rip:#x} (--strict-ports)"
            ),
            Outcome::HostStop { vcpu, rip, id } => {
                write!(f, "host breakpoint {id} stopped the run on vCPU {vcpu} at rip={rip:#x}")
            }
            Outcome::Requested => write!(f, "the run was ended on request"),
            Outcome::EventsUnwritable { sink, message } => write!(
                f,
                "cannot write events to {sink}: {message}; the run was stopped, and the events written before the error are intact"
            ),
            Outcome::VmmError { vcpu, message } => match vcpu {
                Some(v) => write!(f, "VMM error on vCPU {v}: {message}"),
                None => write!(f, "VMM error: {message}"),
            },
        }
    }
}
