//! How a run ends, and the process exit code each ending maps to.

use std::fmt;

/// Exit codes drvisor itself uses (see [`drvisor_api::exit_code`]).
pub use drvisor_api::exit_code;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote `status` to the exit port.
    GuestExit {
        /// The status byte.
        status: u8,
    },
    /// The guest wrote `value` to the exit port under `--exit-status qemu`: the process
    /// status is QEMU isa-debug-exit's `(value << 1) | 1`, whatever it is, because the
    /// scripts that ask for this encoding (kvm-unit-tests') read it so.
    QemuExit {
        /// The value written.
        value: u32,
    },
    /// The guest triple-faulted because a read or access page watch hid a page the CPU itself
    /// must read (page tables, GDT, IDT), or any page watch trapped the stack page it pushes an
    /// exception frame on: the user's request, not the guest's fault.
    CpuStructureWatched {
        /// Which vCPU.
        vcpu: usize,
        /// Its RIP when KVM reported the shutdown.
        rip: u64,
        /// The hidden page.
        page: u64,
        /// What it holds ("the guest's page tables", ...).
        what: String,
        /// The watch that hid it, and how the user named it.
        watch: (u32, String),
        /// The guest triple-faulted (else: it could make no progress).
        triple_fault: bool,
        /// The CPU must *write* the page (an exception frame on the stack), so a write watch
        /// fails there too.
        written: bool,
    },
    /// The guest triple-faulted.
    TripleFault {
        /// Which vCPU.
        vcpu: usize,
        /// Its RIP when KVM reported the shutdown.
        rip: u64,
        /// KVM reset the vCPU before reporting the shutdown (SVM does): `rip` is the reset
        /// vector, and where it faulted is lost.
        was_reset: bool,
        /// The RIP of the vCPU's previous exit, the last place drvisor saw it (where it was
        /// reset), if it had exited before.
        previous_exit: Option<u64>,
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
    /// A signal (SIGINT, SIGTERM, SIGHUP) stopped the run in an orderly way.
    Signalled {
        /// The signal's number.
        signal: i32,
        /// Where each vCPU was when it stopped, by index (`None`: its registers could not be
        /// read). Empty until the vCPUs have stopped: a run that hangs says where.
        stopped_at: Vec<Option<u64>>,
    },
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
            Outcome::GuestExit { status } if *status <= exit_code::GUEST_MAX => *status,
            Outcome::GuestExit { .. } => exit_code::GUEST_STATUS_OUT_OF_RANGE,
            Outcome::QemuExit { value } => ((value << 1) | 1) as u8,
            Outcome::TripleFault { .. } => exit_code::TRIPLE_FAULT,
            Outcome::CpuStructureWatched { .. } => exit_code::USAGE,
            Outcome::InternalError { .. } => exit_code::INTERNAL_ERROR,
            Outcome::FailEntry { .. } => exit_code::FAIL_ENTRY,
            Outcome::UnknownPort { .. } => exit_code::UNKNOWN_PORT,
            Outcome::HostStop { .. } => exit_code::HOST_STOP,
            Outcome::Requested => 0,
            Outcome::Signalled { signal, .. } => {
                exit_code::SIGNAL_BASE.saturating_add(u8::try_from(*signal).unwrap_or(0))
            }
            Outcome::VmmError { .. } => exit_code::VMM_ERROR,
            Outcome::EventsUnwritable { .. } => exit_code::EVENTS_UNWRITABLE,
        }
    }
}

impl Outcome {
    /// The exit code under the exit-status encoding `mode`: under
    /// [`ExitStatus::Qemu`](crate::exit_status::ExitStatus::Qemu) drvisor's own codes are even
    /// ([`exit_code::own_code_under_qemu`]).
    pub fn exit_code_under(&self, mode: crate::exit_status::ExitStatus) -> u8 {
        match mode {
            crate::exit_status::ExitStatus::Qemu if !self.is_guest_status() => {
                exit_code::own_code_under_qemu(self.exit_code())
            }
            _ => self.exit_code(),
        }
    }

    /// Whether this is the guest's own, in-range status, which needs no message from drvisor.
    pub fn is_guest_status(&self) -> bool {
        matches!(self, Outcome::GuestExit { status } if *status <= exit_code::GUEST_MAX)
            || matches!(self, Outcome::QemuExit { .. })
    }
}

/// `SIGINT` for 2, and so on; the number for a signal drvisor does not name.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        n => format!("signal {n}"),
    }
}

/// What the reader of an outcome knows beyond it: the labels of host breakpoints and the guest's
/// symbols. The library knows neither; whoever armed the breakpoints and loaded the symbols does.
#[derive(Clone, Copy)]
pub struct Names<'a> {
    /// The label of host breakpoint `id`.
    pub label: &'a dyn Fn(u32) -> Option<String>,
    /// `symbol+0xoffset` for a guest address.
    pub symbol: &'a dyn Fn(u64) -> Option<String>,
}

impl Names<'_> {
    /// No labels, no symbols.
    pub const NONE: Names<'static> = Names {
        label: &|_| None,
        symbol: &|_| None,
    };
}

/// `rip=0x...`, with the function it is in where symbols say.
struct Rip<'a>(u64, Names<'a>);

impl fmt::Display for Rip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rip={:#x}", self.0)?;
        match (self.1.symbol)(self.0) {
            Some(sym) => write!(f, " ({sym})"),
            None => Ok(()),
        }
    }
}

impl Outcome {
    /// The outcome in words, with breakpoint labels and guest symbols from `names`.
    pub fn describe(&self, names: Names<'_>) -> String {
        Described(self, names).to_string()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Described(self, Names::NONE).fmt(f)
    }
}

struct Described<'a>(&'a Outcome, Names<'a>);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.1;
        match self.0 {
            Outcome::GuestExit { status } if *status <= exit_code::GUEST_MAX => {
                write!(f, "guest exited with status {status}")
            }
            Outcome::QemuExit { value } => write!(
                f,
                "guest exited with value {value} (status {}, QEMU's encoding)",
                self.0.exit_code()
            ),
            Outcome::GuestExit { status } => write!(
                f,
                "the guest exited with status {status}, outside the guest range 0-{}; exit code {} stands for it",
                exit_code::GUEST_MAX,
                exit_code::GUEST_STATUS_OUT_OF_RANGE
            ),
            Outcome::TripleFault {
                vcpu,
                rip,
                was_reset: false,
                ..
            } => write!(f, "guest triple fault on vCPU {vcpu} at {}", Rip(*rip, names)),
            Outcome::TripleFault {
                vcpu,
                rip,
                was_reset: true,
                previous_exit,
            } => {
                write!(
                    f,
                    "guest triple fault on vCPU {vcpu}; KVM reset the vCPU before reporting it (it reads rip={rip:#x}), so where it faulted is lost; "
                )?;
                match previous_exit {
                    Some(at) => write!(f, "its previous exit was at {}", Rip(*at, names)),
                    None => f.write_str("it had not exited before"),
                }
            }
            Outcome::CpuStructureWatched {
                vcpu,
                rip,
                page,
                what,
                watch,
                triple_fault,
                written,
            } => write!(
                f,
                "page watch #{} ({}) {} page {page:#x}, which holds {what}; the CPU's own \
                 accesses to it cannot go through the page engine, so vCPU {vcpu} {} at {}. {}",
                watch.0,
                crate::quote::cut(&watch.1),
                if *written { "traps" } else { "hides" },
                if *triple_fault {
                    "triple-faulted"
                } else {
                    "could not go on"
                },
                Rip(*rip, names),
                if *written {
                    "Watch memory the CPU does not push exception frames on, or use a hardware \
                     debug-register slot where this host delivers data watchpoints"
                } else {
                    "Watch that memory for writes only (:w), which leaves it readable, or not at all"
                }
            ),
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
                write!(f, "{what} (suberror {suberror}) on vCPU {vcpu} at {}", Rip(*rip, names))?;
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
                "vCPU {vcpu} accessed port {port:#x}, which no device owns, at {}; strict port checking ends the run there",
                Rip(*rip, names)
            ),
            Outcome::HostStop { vcpu, rip, id } => {
                write!(f, "host breakpoint {id}")?;
                if let Some(label) = (names.label)(*id) {
                    write!(f, " ({label})")?;
                }
                write!(f, " stopped the run on vCPU {vcpu} at {}", Rip(*rip, names))
            }
            Outcome::Requested => write!(f, "the run was ended on request"),
            Outcome::Signalled { signal, stopped_at } => {
                write!(f, "stopped by {}; the vCPUs were stopped", signal_name(*signal))?;
                for (vcpu, rip) in stopped_at.iter().enumerate() {
                    let sep = if vcpu == 0 { " (" } else { ", " };
                    match rip {
                        Some(rip) => write!(f, "{sep}vCPU {vcpu} at {}", Rip(*rip, names))?,
                        None => write!(f, "{sep}vCPU {vcpu} where its registers could not be read")?,
                    }
                }
                if !stopped_at.is_empty() {
                    f.write_str(")")?;
                }
                f.write_str(" and the events written")
            }
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

#[cfg(test)]
mod qemu_code_tests {
    use super::*;
    use crate::exit_status::ExitStatus;

    #[test]
    fn under_qemu_no_code_of_drvisor_is_a_guest_result() {
        let guest_results: Vec<u8> = (0u32..=255).map(|v| ((v << 1) | 1) as u8).collect();
        for code in [
            exit_code::TRIPLE_FAULT,
            exit_code::INTERNAL_ERROR,
            exit_code::FAIL_ENTRY,
            exit_code::UNKNOWN_PORT,
            exit_code::HOST_STOP,
            exit_code::VMM_ERROR,
            exit_code::EVENTS_UNWRITABLE,
            exit_code::USAGE,
        ] {
            let mapped = exit_code::own_code_under_qemu(code);
            assert!(!guest_results.contains(&mapped), "{code} -> {mapped}");
        }
        let vmm = Outcome::VmmError {
            vcpu: None,
            message: String::new(),
        };
        assert_eq!(
            vmm.exit_code_under(ExitStatus::Qemu),
            exit_code::QEMU_VMM_ERROR
        );
        assert_eq!(vmm.exit_code_under(ExitStatus::Raw), exit_code::VMM_ERROR);
        // The guest's own results pass untouched, and raw mode keeps the documented codes.
        let guest = Outcome::QemuExit { value: 35 };
        assert_eq!(guest.exit_code_under(ExitStatus::Qemu), 71);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_statuses_in_range_pass_through_and_others_never_pose_as_drvisor_codes() {
        for status in 0..=63u8 {
            assert_eq!(Outcome::GuestExit { status }.exit_code(), status);
            assert!(Outcome::GuestExit { status }.is_guest_status());
        }
        for status in 64..=255u8 {
            let o = Outcome::GuestExit { status };
            assert_eq!(o.exit_code(), exit_code::GUEST_STATUS_OUT_OF_RANGE);
            assert!(!o.is_guest_status());
            assert!(o.to_string().contains(&format!("status {status}")), "{o}");
        }
    }

    #[test]
    fn reports_name_the_label_and_the_function() {
        let names = Names {
            label: &|id| (id == 3).then(|| "drv_target_2".to_owned()),
            symbol: &|rip| (rip >= 0x1000).then(|| format!("emu_fail+{:#x}", rip - 0x1000)),
        };
        let stop = Outcome::HostStop {
            vcpu: 0,
            rip: 0x1004,
            id: 3,
        };
        assert_eq!(
            stop.describe(names),
            "host breakpoint 3 (drv_target_2) stopped the run on vCPU 0 at rip=0x1004 (emu_fail+0x4)"
        );
        assert_eq!(
            stop.to_string(),
            "host breakpoint 3 stopped the run on vCPU 0 at rip=0x1004"
        );
        let emu = Outcome::InternalError {
            vcpu: 1,
            rip: 0x1010,
            suberror: 1,
            insn: vec![0xcc],
            note: None,
        };
        assert_eq!(
            emu.describe(names),
            "KVM could not emulate an instruction (suberror 1) on vCPU 1 at rip=0x1010 (emu_fail+0x10), instruction bytes: cc"
        );
        let triple = Outcome::TripleFault {
            vcpu: 0,
            rip: 0x10,
            was_reset: false,
            previous_exit: None,
        };
        assert_eq!(
            triple.describe(names),
            "guest triple fault on vCPU 0 at rip=0x10"
        );
        let reset = Outcome::TripleFault {
            vcpu: 1,
            rip: 0xfff0,
            was_reset: true,
            previous_exit: Some(0x1010),
        };
        assert_eq!(
            reset.describe(names),
            "guest triple fault on vCPU 1; KVM reset the vCPU before reporting it (it reads rip=0xfff0), so where it faulted is lost; its previous exit was at rip=0x1010 (emu_fail+0x10)"
        );
        let first = Outcome::TripleFault {
            vcpu: 0,
            rip: 0xfff0,
            was_reset: true,
            previous_exit: None,
        };
        assert!(first
            .describe(names)
            .ends_with("so where it faulted is lost; it had not exited before"));
    }

    #[test]
    fn a_signalled_stop_says_where_each_vcpu_was() {
        let names = Names {
            label: &|_| None,
            symbol: &|rip| (rip >= 0x1000).then(|| format!("spin+{:#x}", rip - 0x1000)),
        };
        let stopped = |stopped_at| Outcome::Signalled {
            signal: libc::SIGTERM,
            stopped_at,
        };
        assert_eq!(
            stopped(vec![Some(0x1004), None]).describe(names),
            "stopped by SIGTERM; the vCPUs were stopped (vCPU 0 at rip=0x1004 (spin+0x4), vCPU 1 \
             where its registers could not be read) and the events written"
        );
        assert_eq!(
            stopped(vec![]).to_string(),
            "stopped by SIGTERM; the vCPUs were stopped and the events written"
        );
    }

    #[test]
    fn signals_exit_as_shells_expect() {
        let code = |signal| {
            Outcome::Signalled {
                signal,
                stopped_at: vec![],
            }
            .exit_code()
        };
        assert_eq!(code(libc::SIGHUP), 129);
        assert_eq!(code(libc::SIGINT), 130);
        assert_eq!(code(libc::SIGTERM), 143);
    }
}
