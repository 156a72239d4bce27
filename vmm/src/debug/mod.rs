//! Debug-register virtualization on KVM: the controller that owns the host breakpoints and
//! plans, and each vCPU's dispatch of `#DB` exits. Every slot and ownership decision is made by
//! the pure `drvisor-debug` crate; this module applies them through the narrow [`DebugVcpu`]
//! seam.

mod action;
mod caps;
mod controller;
mod emulate;
mod engine;
mod kvm_vcpu;
pub mod mov_dr;
pub mod plan_view;
mod resume;
mod vcpu_debug;

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod emulation_tests;
#[cfg(test)]
mod fake_vcpu;

pub use action::{always, registers, HitContext, OnHit};
pub use caps::DebugCaps;
pub use controller::{
    DebugController, Error, HitTarget, HitTargets, HostRequest, LateGuestSlot, LateListener,
    PlanListener, PlanObserver, GUEST_DR_RESYNC,
};
pub use engine::Engine;
pub(crate) use kvm_vcpu::code_bytes;
pub use kvm_vcpu::{
    exit_regs, seam_ioctls, DebugVcpu, GuestDebug, KvmDebugVcpu, KvmError, TrappedPages,
};
pub use resume::ResumeCounts;
pub use vcpu_debug::{VcpuDebug, Verdict};

use std::cell::Cell;

thread_local! {
    static CURRENT_VCPU: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The vCPU the calling thread runs, if it is a vCPU thread.
pub(crate) fn current_vcpu() -> Option<usize> {
    CURRENT_VCPU.with(Cell::get)
}

/// Marks the calling thread as running vCPU `index` (or none).
pub(crate) fn set_current_vcpu(index: Option<usize>) {
    CURRENT_VCPU.with(|c| c.set(index));
}
