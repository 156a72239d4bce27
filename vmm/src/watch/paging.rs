//! Where each vCPU's page tables were at its last exit: CR0, CR3, CR4 and EFER from the
//! system registers KVM syncs into `kvm_run` with every exit. Guest-virtual addresses are
//! translated by walking the guest's tables in the VMM with them: no `KVM_TRANSLATE`, and no
//! vCPU taken out of the guest. A paused vCPU's last exit is where it is now; a running one may
//! have switched CR3 since, exactly as it might right after any translation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::guest_paging::SystemRegisters;

/// One vCPU's paging registers, written only by its own thread.
#[derive(Default)]
struct Slot {
    seen: AtomicBool,
    cr0: AtomicU64,
    cr3: AtomicU64,
    cr4: AtomicU64,
    efer: AtomicU64,
}

/// Every vCPU's paging registers as of its last exit.
pub struct Paging(Vec<Slot>);

impl Paging {
    /// For `vcpus` vCPUs, none seen yet.
    pub fn new(vcpus: usize) -> Self {
        Paging((0..vcpus).map(|_| Slot::default()).collect())
    }

    /// vCPU `index` exited with `regs`. Four relaxed stores: callable at every exit.
    pub fn note(&self, index: usize, regs: &SystemRegisters) {
        let Some(slot) = self.0.get(index) else {
            return;
        };
        slot.cr0.store(regs.cr0, Ordering::Relaxed);
        slot.cr3.store(regs.cr3, Ordering::Relaxed);
        slot.cr4.store(regs.cr4, Ordering::Relaxed);
        slot.efer.store(regs.efer, Ordering::Relaxed);
        slot.seen.store(true, Ordering::Release);
    }

    /// vCPU `index`'s paging registers at its last exit; `None` before its first (or on a
    /// host that does not sync the system registers).
    pub fn of(&self, index: usize) -> Option<SystemRegisters> {
        let slot = self.0.get(index)?;
        slot.seen.load(Ordering::Acquire).then(|| SystemRegisters {
            cr0: slot.cr0.load(Ordering::Relaxed),
            cr3: slot.cr3.load(Ordering::Relaxed),
            cr4: slot.cr4.load(Ordering::Relaxed),
            efer: slot.efer.load(Ordering::Relaxed),
            gdt: (0, 0),
            idt: (0, 0),
            gs_base: 0,
            cpl: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vcpu_is_unknown_until_its_first_exit_and_then_its_last() {
        let p = Paging::new(2);
        assert!(p.of(0).is_none());
        let regs = |cr3| SystemRegisters {
            cr0: 0x8000_0011,
            cr3,
            cr4: 0x20,
            efer: 0x500,
            gdt: (0x5000, 0x17),
            idt: (0x6000, 0xfff),
            ..SystemRegisters::default()
        };
        p.note(1, &regs(0x1000));
        p.note(1, &regs(0x2000));
        let seen = p.of(1).unwrap();
        assert_eq!(
            (seen.cr0, seen.cr3, seen.cr4, seen.efer),
            (0x8000_0011, 0x2000, 0x20, 0x500)
        );
        assert!(p.of(0).is_none() && p.of(7).is_none());
        p.note(7, &regs(0x3000)); // no such vCPU: ignored
    }
}
