//! The system registers a hit or a failure report needs, as one value.

/// The system registers at an exit: they locate the guest's paging structures, GDT and IDT,
/// and say where it ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRegisters {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// GDTR base and limit.
    pub gdt: (u64, u16),
    /// IDTR base and limit.
    pub idt: (u64, u16),
    /// GS base: at a kernel-mode hit of a Linux guest, the CPU's per-CPU area (at a user-mode
    /// hit it is the user's, and the kernel's waits in the KERNEL_GS_BASE MSR, which the exit
    /// does not bring).
    pub gs_base: u64,
    /// The privilege level the vCPU ran at (CS's low two bits).
    pub cpl: u8,
}

impl From<&kvm_bindings::kvm_sregs> for SystemRegisters {
    fn from(s: &kvm_bindings::kvm_sregs) -> Self {
        SystemRegisters {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
            gdt: (s.gdt.base, s.gdt.limit),
            idt: (s.idt.base, s.idt.limit),
            gs_base: s.gs.base,
            cpl: (s.cs.selector & 3) as u8,
        }
    }
}
