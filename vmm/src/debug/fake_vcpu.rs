//! A vCPU that exists only in memory, behind the same [`DebugVcpu`] seam as a real one, so the
//! real dispatch code can be driven with synthetic `KVM_EXIT_DEBUG` exits: the mechanisms this
//! host does not deliver (data watchpoints, RF, GD traps, physical guest slots) are tested
//! through it.

use std::cell::RefCell;
use std::collections::BTreeMap;

use kvm_bindings::{kvm_debugregs, kvm_regs};

use super::kvm_vcpu::{DebugVcpu, GuestDebug, Result};

/// What the fake recorded.
#[derive(Default, Debug)]
pub struct FakeState {
    pub regs: kvm_regs,
    pub debugregs: kvm_debugregs,
    /// Every `KVM_SET_GUEST_DEBUG`, in order.
    pub guest_debug: Vec<GuestDebug>,
    /// The DR6 the guest held at each injected #DB.
    pub injected: Vec<u64>,
    /// Guest-virtual address to instruction bytes.
    pub code: BTreeMap<u64, Vec<u8>>,
    /// KVM holds another event for the next entry: #DB injection must wait.
    pub event_busy: bool,
    /// Every other exception injected: vector and error code.
    pub faults: Vec<(u8, Option<u32>)>,
    /// The guest's CR4.
    pub cr4: u64,
}

/// The fake vCPU.
#[derive(Default)]
pub struct FakeVcpu(pub RefCell<FakeState>);

impl FakeVcpu {
    /// The last `KVM_SET_GUEST_DEBUG`.
    pub fn installed(&self) -> GuestDebug {
        self.0
            .borrow()
            .guest_debug
            .last()
            .copied()
            .unwrap_or(GuestDebug::OFF)
    }
}

impl DebugVcpu for FakeVcpu {
    fn regs(&self) -> Result<kvm_regs> {
        Ok(self.0.borrow().regs)
    }
    fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.0.borrow_mut().regs = *regs;
        Ok(())
    }
    fn debugregs(&self) -> Result<kvm_debugregs> {
        Ok(self.0.borrow().debugregs)
    }
    fn set_debugregs(&self, regs: &kvm_debugregs) -> Result<()> {
        self.0.borrow_mut().debugregs = *regs;
        Ok(())
    }
    fn set_guest_debug(&self, dbg: &GuestDebug) -> Result<()> {
        self.0.borrow_mut().guest_debug.push(*dbg);
        Ok(())
    }
    fn inject_exception(&self, vector: u8, error_code: Option<u32>) -> Result<bool> {
        let mut s = self.0.borrow_mut();
        if s.event_busy {
            return Ok(false);
        }
        if vector == 1 {
            let dr6 = s.debugregs.dr6;
            s.injected.push(dr6);
        } else {
            s.faults.push((vector, error_code));
        }
        Ok(true)
    }
    fn cr4(&self) -> Result<u64> {
        Ok(self.0.borrow().cr4)
    }
    fn fetch(&self, rip: u64) -> Vec<u8> {
        self.0.borrow().code.get(&rip).cloned().unwrap_or_default()
    }
}
