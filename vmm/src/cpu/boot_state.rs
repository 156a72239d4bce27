//! Registers a vCPU starts with for each boot protocol.

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt;
use crate::boot::Entry;
use crate::guest_paging::bits::{CR0_PG, EFER_LMA, LARGE, PRESENT, WRITABLE};
use crate::layout::{BOOT_GDT, BOOT_IDT, PD, PDPT, PML4};

/// Errors setting a vCPU's boot state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A KVM register ioctl failed.
    #[error("setting vCPU boot registers failed: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
    /// Writing the GDT or page tables failed.
    #[error("writing boot tables to guest memory failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
/// Bit 1 of RFLAGS is reserved and reads as 1.
const RFLAGS_FIXED: u64 = 2;
const PTE_PRESENT_RW: u64 = PRESENT | WRITABLE;
const PDE_2M: u64 = PRESENT | WRITABLE | LARGE;

/// Writes the boot tables to `mem` (idempotent; every vCPU may call it).
fn write_tables(mem: &GuestMemoryMmap, entry: &Entry) -> Result<(), Error> {
    for (i, d) in gdt::TABLE.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(BOOT_GDT + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT))?;
    if let Entry::Linux64 { .. } = entry {
        // Identity-map the first GiB with 2 MiB pages: what the 64-bit boot protocol requires.
        mem.write_obj(PDPT | PTE_PRESENT_RW, GuestAddress(PML4))?;
        mem.write_obj(PD | PTE_PRESENT_RW, GuestAddress(PDPT))?;
        for i in 0..512u64 {
            mem.write_obj((i << 21) | PDE_2M, GuestAddress(PD + 8 * i))?;
        }
    }
    Ok(())
}

/// Puts `vcpu` in the state `entry`'s protocol requires.
pub fn configure(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: &Entry) -> Result<(), Error> {
    write_tables(mem, entry)?;
    let mut sregs: kvm_sregs = vcpu.get_sregs()?;
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = (gdt::TABLE.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT;
    sregs.idt.limit = 7;
    let data = gdt::segment(gdt::DATA);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(gdt::TSS);

    let mut regs = kvm_regs {
        rflags: RFLAGS_FIXED,
        ..Default::default()
    };
    match *entry {
        Entry::Pvh { entry, start_info } => {
            // PVH: protected mode, paging off, flat segments, EBX = start_info.
            sregs.cs = gdt::segment(gdt::CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        Entry::Multiboot { entry, info } => {
            // Multiboot spec 3.2: the same flat protected mode, EAX = the boot loader's magic.
            sregs.cs = gdt::segment(gdt::CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rax = u64::from(crate::boot::multiboot::BOOTLOADER_MAGIC);
            regs.rbx = info;
        }
        Entry::Linux64 { entry, zero_page } => {
            sregs.cs = gdt::segment(gdt::CODE64);
            sregs.cr3 = PML4;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = zero_page;
        }
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    Ok(())
}
