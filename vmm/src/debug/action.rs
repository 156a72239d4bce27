//! What a host breakpoint does when it is hit: a callback that sees the hit and decides.

use std::fmt;
use std::sync::Arc;

use drvisor_api::{AccessEvent, BreakKind, HitAction, Registers};
use drvisor_debug::HostBpId;

use super::Engine;
use crate::guest_paging::SystemRegisters;

/// Everything known about one host hit.
#[derive(Clone, Debug)]
pub struct HitContext {
    /// The breakpoint.
    pub id: HostBpId,
    /// Its label (symbol or address, as the user gave it).
    pub label: Arc<str>,
    /// The vCPU that hit it.
    pub vcpu: usize,
    /// RIP: the instruction (exec, a fault) or the one after the access (data, a trap).
    pub rip: u64,
    /// The breakpoint's address.
    pub addr: u64,
    /// What fired.
    pub kind: BreakKind,
    /// The engine that carried it.
    pub engine: Engine,
    /// The physical debug-register slot that reported it (hw engine).
    pub slot: Option<u8>,
    /// The guest access behind it (page engine).
    pub access: Option<AccessEvent>,
    /// This breakpoint's hit count, including this hit.
    pub count: u64,
    /// General registers at the hit.
    pub regs: Registers,
    /// The system registers that locate the guest's page tables, where the exit brought them
    /// (synced registers): to read guest-virtual memory at the hit without an ioctl.
    pub paging: Option<SystemRegisters>,
}

impl HitContext {
    /// Why the VM pauses when this hit's action is `pause`.
    pub fn pause_reason(&self) -> String {
        format!("hit #{} on vCPU {}", self.id.0, self.vcpu)
    }
}

/// The callback run on each hit. It runs on the vCPU's thread while that vCPU is stopped, so it
/// should be quick; it must not add or remove breakpoints synchronously from inside itself.
pub type OnHit = Arc<dyn Fn(&HitContext) -> HitAction + Send + Sync>;

/// A callback that always answers `action`.
pub fn always(action: HitAction) -> OnHit {
    Arc::new(move |_| action)
}

impl fmt::Display for HitContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host breakpoint {} ({}) hit #{} on vCPU {} at rip={:#x}",
            self.id.0, self.label, self.count, self.vcpu, self.rip
        )
    }
}

/// `kvm_regs` in wire form.
pub fn registers(r: &kvm_bindings::kvm_regs) -> Registers {
    Registers {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}
