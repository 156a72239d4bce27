//! A host hit as a condition sees it: its registers, counters and guest-virtual memory read
//! through the page tables the exit's system registers locate (no ioctl, no allocation).

use vm_memory::GuestMemoryMmap;

use crate::condition::ast::Gpr;
use crate::condition::{Fault, Machine};
use crate::debug::HitContext;

/// One hit and the guest's memory.
pub struct HitMachine<'a> {
    /// The hit.
    pub hit: &'a HitContext,
    /// Guest RAM.
    pub mem: &'a GuestMemoryMmap,
}

impl Machine for HitMachine<'_> {
    fn reg(&self, r: Gpr) -> u64 {
        let g = &self.hit.regs;
        match r {
            Gpr::Rax => g.rax,
            Gpr::Rbx => g.rbx,
            Gpr::Rcx => g.rcx,
            Gpr::Rdx => g.rdx,
            Gpr::Rsi => g.rsi,
            Gpr::Rdi => g.rdi,
            Gpr::Rsp => g.rsp,
            Gpr::Rbp => g.rbp,
            Gpr::R8 => g.r8,
            Gpr::R9 => g.r9,
            Gpr::R10 => g.r10,
            Gpr::R11 => g.r11,
            Gpr::R12 => g.r12,
            Gpr::R13 => g.r13,
            Gpr::R14 => g.r14,
            Gpr::R15 => g.r15,
            Gpr::Rip => g.rip,
            Gpr::Rflags => g.rflags,
        }
    }

    fn cpu(&self) -> u64 {
        self.hit.vcpu as u64
    }

    fn hits(&self) -> u64 {
        self.hit.count
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match &self.hit.paging {
            Some(paging) => super::snippet::read_into(self.mem, paging, addr, buf),
            None => false,
        }
    }

    fn kernel_gs_base(&self) -> Result<u64, Fault> {
        // In user mode GS is the user's: the kernel's per-CPU base is in KERNEL_GS_BASE, which
        // the exit does not bring. Refused rather than read wrongly.
        match &self.hit.paging {
            None => Err(Fault::NoPaging),
            Some(p) if p.cpl != 0 => Err(Fault::UserMode),
            Some(p) => Ok(p.gs_base),
        }
    }
}
