//! What this host delivers for guest debugging, as the probe measured it. Every routing
//! decision reads these flags; none assumes a host.

use drvisor_debug::BreakKind;

use crate::probe::{Mechanism, ProbeReport};

/// The probe's answers that drive the debug-register machinery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugCaps {
    /// Host exec breakpoints exit with DR6.Bn (CPL0).
    pub exec_breakpoints: bool,
    /// Host exec breakpoints also fire in CPL3 code.
    pub exec_breakpoints_cpl3: bool,
    /// RF set through `KVM_SET_REGS` resumes past a host exec breakpoint. Otherwise drvisor
    /// steps over: disarm, single-step, re-arm.
    pub rf_resumes: bool,
    /// Host data watchpoints exit.
    pub data_watchpoints: bool,
    /// `KVM_GUESTDBG_SINGLESTEP` exits with DR6.BS.
    pub single_step: bool,
    /// A host DR7.GD makes guest MOV DR exit with DR6.BD, so drvisor can trap and emulate it.
    /// Otherwise it re-syncs the guest's DR file from `KVM_GET_DEBUGREGS` at every exit.
    pub gd_trap: bool,
    /// The guest's own breakpoints stay live while host debugging is on, checked separately
    /// from the host's DR7 (this project's development hosts). Then guest slots need no
    /// physical slot. On VMX/SVM, KVM disarms them and drvisor must place them itself.
    pub guest_breakpoints_native: bool,
    /// `KVM_GUESTDBG_BLOCKIRQ` is supported (`KVM_CAP_SET_GUEST_DEBUG2`): single-steps can
    /// keep interrupts out.
    pub block_irq: bool,
}

impl DebugCaps {
    /// The capabilities the probe found.
    pub fn from_probe(probe: &ProbeReport) -> DebugCaps {
        DebugCaps {
            exec_breakpoints: probe.delivers(Mechanism::HostExecBreakpoint, 0),
            exec_breakpoints_cpl3: probe.delivers(Mechanism::HostExecBreakpoint, 3),
            rf_resumes: probe.delivers(Mechanism::RfResumesPastBreakpoint, 0),
            data_watchpoints: probe.delivers(Mechanism::HostWriteWatchpoint, 0),
            single_step: probe.delivers(Mechanism::SingleStep, 0),
            gd_trap: probe.delivers(Mechanism::GdTrapsMovDr, 0),
            guest_breakpoints_native: probe
                .delivers(Mechanism::GuestBreakpointLiveUnderHostDebug, 0),
            block_irq: probe.caps.set_guest_debug2 as u32 & kvm_bindings::KVM_GUESTDBG_BLOCKIRQ
                != 0,
        }
    }

    /// What KVM on Intel VMX delivers (KVM's x86 debug_regs selftest relies on all of it). Used
    /// by tests that drive the dispatch code with synthetic exits.
    pub const fn vmx_like() -> DebugCaps {
        DebugCaps {
            exec_breakpoints: true,
            exec_breakpoints_cpl3: true,
            rf_resumes: true,
            data_watchpoints: true,
            single_step: true,
            gd_trap: true,
            guest_breakpoints_native: false,
            block_irq: true,
        }
    }

    /// What this project's paravirtual (PVM) hosts deliver, as their probe measured it: exec
    /// breakpoints at CPL0 only, no RF, no data watchpoints, no GD trap, and the guest's own
    /// breakpoints checked apart from the host's. Used by tests with synthetic exits.
    pub const fn pvm_like() -> DebugCaps {
        DebugCaps {
            exec_breakpoints: true,
            exec_breakpoints_cpl3: false,
            rf_resumes: false,
            data_watchpoints: false,
            single_step: true,
            gd_trap: false,
            guest_breakpoints_native: true,
            block_irq: true,
        }
    }

    /// What KVM on AMD SVM delivers, as measured in the nested SVM guest
    /// (`tests/nested-svm/`): like VMX, but a guest MOV DR never exits to the VMM (KVM's SVM
    /// code emulates it in the kernel), so no GD trap.
    pub const fn svm_like() -> DebugCaps {
        DebugCaps {
            gd_trap: false,
            ..Self::vmx_like()
        }
    }

    /// Why a host breakpoint of `kind` in a hardware slot could never work on this host, if it
    /// could not: nothing would fire it, or nothing could resume the guest past it. `None` when
    /// it works. The reasons quote the probe's rows.
    pub fn refuses(&self, kind: BreakKind) -> Option<&'static str> {
        match kind {
            BreakKind::Exec if !self.exec_breakpoints => Some(
                "this host does not deliver host exec breakpoints (probe row \"host exec \
                 breakpoint, guest CPL0\": no), so nothing would ever fire it",
            ),
            BreakKind::Exec if !self.rf_resumes && !self.single_step => Some(
                "this host can neither resume past an exec breakpoint with RF nor single-step \
                 over it (probe rows \"RF set by the VMM steps past it\" and \"single-step, guest \
                 CPL0\": no), so the guest would stop at it for ever",
            ),
            BreakKind::Exec => None,
            _ if !self.data_watchpoints => Some(
                "this host does not deliver hardware data watchpoints (probe row \"host write \
                 watchpoint (8 bytes), guest CPL0\": no)",
            ),
            _ => None,
        }
    }

    /// A note for the states of exec breakpoints armed here, when they fire only in CPL0 code.
    pub fn exec_note(&self) -> Option<&'static str> {
        (self.exec_breakpoints && !self.exec_breakpoints_cpl3)
            .then_some("fires in CPL0 code only on this host")
    }
}
