//! The host probe: tiny VMs that find out which guest-debug mechanisms this host's KVM really
//! delivers. One row per mechanism of the platform notes' table (docs/hosts.md shows it); the experiments
//! are those of `kvm-probe.c`, so the two agree row for row.
//!
//! Requests are routed by [`ProbeReport::delivers`], never by assumptions about the host.
//!
//! Below the mechanisms, drvisor's own rows: which CPU features a guest kernel can really use at
//! CPL0 here ([`ProbeReport::unusable_features`]), so that the guest's CPUID leaves out the rest.

pub mod cache;
mod experiments;
pub mod host_key;
mod instructions;
pub mod tiny_vm;

use std::fmt;

use kvm_ioctls::{Cap, Kvm};
use serde::{Deserialize, Serialize};

pub use experiments::{run_all, run_for_routing};
pub use instructions::InstructionRow;

use crate::cpu::CpuFeature;

/// The CPU features whose instructions this host cannot run at CPL0 (or KVM does not offer):
/// the instruction experiments alone, for a VM whose debug capabilities were given.
pub fn unusable_features(kvm: &Kvm) -> tiny_vm::Result<Vec<CpuFeature>> {
    Ok(instructions::run(kvm)?
        .into_iter()
        .filter(|r| !r.works)
        .map(|r| r.feature)
        .collect())
}

/// The line `drvisor probe` puts above the instruction rows (shorter than a label, so no row
/// parser takes it for one).
pub const INSTRUCTIONS_HEADING: &str = "drvisor only: CPU features at CPL0";

/// A mechanism the probe tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// A host exec breakpoint (`KVM_GUESTDBG_USE_HW_BP`, RW=00) exits with DR6.Bn.
    HostExecBreakpoint,
    /// RF set by the VMM resumes past a host exec breakpoint.
    RfResumesPastBreakpoint,
    /// A host write watchpoint (RW=01) exits after the write.
    HostWriteWatchpoint,
    /// `KVM_GUESTDBG_SINGLESTEP` exits after each instruction with DR6.BS.
    SingleStep,
    /// A guest write to a `KVM_MEM_READONLY` memslot exits as `KVM_EXIT_MMIO`.
    ReadonlyMemslotTrap,
    /// Host DR7.GD makes a guest MOV DR exit with DR6.BD.
    GdTrapsMovDr,
    /// The guest's own exec breakpoint still reaches its #DB handler while host debugging is on.
    GuestBreakpointLiveUnderHostDebug,
    /// Where host and guest break at one address, the host's exit comes before the guest's #DB.
    HostExitFirstAtSharedAddress,
    /// `int3` at CPL0 runs (rather than ending in an emulation failure).
    Int3Executes,
    /// CPL0 guest code runs natively (not through KVM's instruction emulator).
    NativeCpl0,
}

impl Mechanism {
    /// The row's label, as `kvm-probe.c` prints it.
    pub fn label(self, cpl: u8) -> String {
        match self {
            Mechanism::HostExecBreakpoint => format!("host exec breakpoint, guest CPL{cpl}"),
            Mechanism::RfResumesPastBreakpoint => {
                format!("  RF set by the VMM steps past it, CPL{cpl}")
            }
            Mechanism::HostWriteWatchpoint => {
                format!("host write watchpoint (8 bytes), guest CPL{cpl}")
            }
            Mechanism::SingleStep => format!("single-step, guest CPL{cpl}"),
            Mechanism::ReadonlyMemslotTrap => {
                format!("read-only memslot traps a write, guest CPL{cpl}")
            }
            Mechanism::GdTrapsMovDr => "host DR7.GD traps a guest MOV DR (DR6.BD)".into(),
            Mechanism::GuestBreakpointLiveUnderHostDebug => {
                "guest's own exec bp still live under host debug".into()
            }
            Mechanism::HostExitFirstAtSharedAddress => {
                "host exit first where host and guest bp share".into()
            }
            Mechanism::Int3Executes => "int3 executes in the guest, CPL0".into(),
            Mechanism::NativeCpl0 => "CPL0 guest code runs natively (>500 M instr/s)".into(),
        }
    }
}

/// One row: a mechanism at a privilege level, whether it works, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRow {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// Guest privilege level of the experiment.
    pub cpl: u8,
    /// Whether this host delivers it.
    pub works: bool,
    /// What the experiment observed, in `kvm-probe.c`'s words.
    pub observed: String,
}

/// The KVM capabilities the probe reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    /// KVM_CAP_SET_GUEST_DEBUG.
    pub set_guest_debug: i32,
    /// KVM_CAP_DEBUGREGS.
    pub debugregs: i32,
    /// KVM_CAP_READONLY_MEM.
    pub readonly_mem: i32,
    /// KVM_CAP_SET_GUEST_DEBUG2: the guest-debug control bits supported.
    pub set_guest_debug2: i32,
    /// KVM_CAP_NR_MEMSLOTS.
    pub nr_memslots: usize,
    /// KVM_CAP_MAX_VCPUS.
    pub max_vcpus: usize,
}

impl Caps {
    /// Reads the capabilities from `kvm`.
    pub fn read(kvm: &Kvm) -> Caps {
        Caps {
            set_guest_debug: kvm.check_extension_int(Cap::SetGuestDebug),
            debugregs: kvm.check_extension_int(Cap::Debugregs),
            readonly_mem: kvm.check_extension_int(Cap::ReadonlyMem),
            set_guest_debug2: kvm
                .check_extension_raw(kvm_bindings::KVM_CAP_SET_GUEST_DEBUG2.into()),
            nr_memslots: kvm.get_nr_memslots(),
            max_vcpus: kvm.get_max_vcpus(),
        }
    }
}

/// The probe's answer for this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Capabilities.
    pub caps: Caps,
    /// One row per experiment.
    pub rows: Vec<ProbeRow>,
    /// One row per CPU feature whose instruction was run (drvisor's own; `kvm-probe.c` has none).
    pub instructions: Vec<InstructionRow>,
}

impl ProbeReport {
    /// Whether `mechanism` works at `cpl`. A mechanism that was not probed does not work.
    pub fn delivers(&self, mechanism: Mechanism, cpl: u8) -> bool {
        self.row(mechanism, cpl).is_some_and(|r| r.works)
    }

    /// The row for `mechanism` at `cpl`.
    pub fn row(&self, mechanism: Mechanism, cpl: u8) -> Option<&ProbeRow> {
        self.rows
            .iter()
            .find(|r| r.mechanism == mechanism && r.cpl == cpl)
    }

    /// The CPU features a guest kernel cannot use here: what `--cpuid filtered` hides.
    pub fn unusable_features(&self) -> Vec<CpuFeature> {
        self.instructions
            .iter()
            .filter(|r| !r.works)
            .map(|r| r.feature)
            .collect()
    }

    /// Why `mechanism` is not available at `cpl`, for error messages; None if it works.
    pub fn why_not(&self, mechanism: Mechanism, cpl: u8) -> Option<String> {
        match self.row(mechanism, cpl) {
            Some(r) if r.works => None,
            Some(r) => Some(format!(
                "the host probe found that this KVM does not deliver \"{}\" (observed: {})",
                r.mechanism.label(r.cpl).trim(),
                r.observed
            )),
            None => Some(format!("{mechanism:?} was not probed")),
        }
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.caps;
        writeln!(
            f,
            "KVM_CAP_SET_GUEST_DEBUG={}  KVM_CAP_DEBUGREGS={}  KVM_CAP_READONLY_MEM={}  KVM_CAP_SET_GUEST_DEBUG2={:#x}",
            c.set_guest_debug, c.debugregs, c.readonly_mem, c.set_guest_debug2
        )?;
        for r in &self.rows {
            let yes = if r.works { "yes" } else { "no" };
            writeln!(
                f,
                "{:<48} {:<3} {}",
                r.mechanism.label(r.cpl),
                yes,
                r.observed
            )?;
        }
        if !self.instructions.is_empty() {
            writeln!(f, "{INSTRUCTIONS_HEADING}")?;
        }
        for r in &self.instructions {
            let yes = if r.works { "yes" } else { "no" };
            writeln!(f, "{:<48} {:<3} {}", r.label(), yes, r.observed)?;
        }
        Ok(())
    }
}
