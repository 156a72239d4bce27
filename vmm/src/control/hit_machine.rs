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

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let paging = self.hit.paging.as_ref().ok_or(Fault::NoPaging)?;
        match crate::guest_paging::read_into(self.mem, paging, addr, buf) {
            true => Ok(()),
            false => Err(Fault::Unmapped {
                addr,
                len: buf.len() as u8,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Condition;
    use crate::guest_paging::SystemRegisters;
    use crate::kernel::TaskLayout;
    use vm_memory::{Bytes, GuestAddress};

    fn hit(paging: Option<SystemRegisters>) -> HitContext {
        HitContext {
            id: drvisor_debug::HostBpId(1),
            label: "b".into(),
            vcpu: 2,
            rip: 0x1000,
            addr: 0x1000,
            kind: drvisor_api::BreakKind::Exec,
            engine: crate::watch::Engine::Hw,
            slot: Some(0),
            access: None,
            count: 7,
            regs: drvisor_api::Registers {
                rdi: 0x100,
                ..Default::default()
            },
            paging,
        }
    }

    const LAYOUT: TaskLayout = TaskLayout {
        current_task: 0x8,
        pid: 0x10,
        tgid: 0x14,
        comm: 0x20,
    };

    #[test]
    fn a_hit_as_a_condition_sees_it() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.write_obj(0xabu8, GuestAddress(0x100)).unwrap();
        // Paging off: guest-virtual is physical. Per-CPU base 0x2000, task at 0x3000.
        mem.write_obj(0x3000u64, GuestAddress(0x2008)).unwrap();
        mem.write_obj(42i32, GuestAddress(0x3010)).unwrap();
        let kernel = SystemRegisters {
            gs_base: 0x2000,
            ..Default::default()
        };
        let h = hit(Some(kernel));
        let m = HitMachine { hit: &h, mem: &mem };
        let holds = |text: &str| Condition::parse(text).unwrap().holds(&m, Some(&LAYOUT));
        assert_eq!(
            holds("*(u8 *)rdi == 0xab && cpu == 2 && hits == 7"),
            Ok(true)
        );
        assert_eq!(holds("pid == 42"), Ok(true));

        let user = SystemRegisters {
            gs_base: 0x2000,
            cpl: 3,
            ..Default::default()
        };
        let h = hit(Some(user));
        let m = HitMachine { hit: &h, mem: &mem };
        let c = Condition::parse("pid == 42").unwrap();
        assert_eq!(c.holds(&m, Some(&LAYOUT)), Err(Fault::UserMode));

        let h = hit(None);
        let m = HitMachine { hit: &h, mem: &mem };
        let c = Condition::parse("*(u8 *)rdi == 0xab").unwrap();
        assert_eq!(c.holds(&m, None), Err(Fault::NoPaging));
    }
}
