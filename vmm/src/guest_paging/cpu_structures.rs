//! The guest-physical pages the CPU itself reads: the paging structures under CR3, and the
//! pages of the GDT and the IDT.
//!
//! A read or access page watch leaves its page without a memslot, and every access to it exits
//! to the VMM. The processor's own accesses cannot go that way: a page walk through a hole
//! fails, and so does delivering an exception through an IDT in one. Such a watch ends in a
//! triple fault, which is the user's request, not the guest's fault; this lets drvisor say so.
//!
//! Reads guest RAM only (no vCPU, no KVM call): 4- or 5-level long-mode paging, or paging off.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::guest_paging::page_walk::{self, CR4_LA57};
use crate::guest_paging::SystemRegisters;

use super::bits::{ADDR, CR0_PG, EFER_LMA, LARGE, PRESENT};
/// A bound on the walk: a big guest's tables have tens of thousands of pages.
const MAX_TABLE_PAGES: usize = 1 << 17;

/// What one of the CPU's own structures is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// A page of the paging structures (PML4, PDPT, PD or PT).
    PageTables,
    /// A page of the GDT.
    Gdt,
    /// A page of the IDT.
    Idt,
}

impl std::fmt::Display for Structure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Structure::PageTables => "the guest's page tables",
            Structure::Gdt => "the guest's GDT",
            Structure::Idt => "the guest's IDT",
        })
    }
}

/// Every page (4 KiB-aligned guest-physical address) the CPU reads on its own, with what it
/// holds. Pages that cannot be read or translated are left out.
pub fn pages(mem: &impl GuestMemory, regs: &SystemRegisters) -> Vec<(u64, Structure)> {
    let paging = regs.cr0 & CR0_PG != 0;
    let mut out = Vec::new();
    if paging && regs.efer & EFER_LMA != 0 {
        let levels = if regs.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        walk_tables(mem, regs.cr3 & ADDR, levels, &mut out);
    }
    for ((base, limit), what) in [(regs.gdt, Structure::Gdt), (regs.idt, Structure::Idt)] {
        let last = base.saturating_add(u64::from(limit));
        let mut va = base & !0xfff;
        while va <= last {
            let pa = if paging {
                page_walk::locate(mem, regs.cr3, regs.cr4, va)
            } else {
                Some(va)
            };
            if let Some(pa) = pa {
                out.push((pa & !0xfff, what));
            }
            va = match va.checked_add(0x1000) {
                Some(next) => next,
                None => break,
            };
        }
    }
    out
}

fn entry(mem: &impl GuestMemory, table: u64, index: u64) -> Option<u64> {
    mem.read_obj::<u64>(GuestAddress(table + index * 8)).ok()
}

/// Adds `table` and, below it, every present lower-level table.
fn walk_tables(mem: &impl GuestMemory, table: u64, level: u8, out: &mut Vec<(u64, Structure)>) {
    if out.len() >= MAX_TABLE_PAGES {
        return;
    }
    out.push((table, Structure::PageTables));
    if level == 1 {
        return;
    }
    for i in 0..512 {
        let Some(e) = entry(mem, table, i) else {
            return;
        };
        // A large page at PDPT or PD level maps memory, not a table.
        if e & PRESENT != 0 && !(level <= 3 && e & LARGE != 0) {
            walk_tables(mem, e & ADDR, level - 1, out);
        }
    }
}

/// The guest-physical address of linear address `va` as the CPU sees it with `regs`: through
/// 4- or 5-level paging, or `va` itself with paging off. `None` where it is not mapped, and
/// under 32-bit or PAE paging, which this walk does not know.
pub fn physical(mem: &impl GuestMemory, regs: &SystemRegisters, va: u64) -> Option<u64> {
    if regs.cr0 & CR0_PG == 0 {
        return Some(va);
    }
    if regs.efer & EFER_LMA == 0 {
        return None;
    }
    page_walk::locate(mem, regs.cr3, regs.cr4, va)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Identity maps the first 2 MiB with a 4 KiB page table: PML4 at 0x1000, PDPT at 0x2000,
    /// PD at 0x3000, PT at 0x4000; GDT at 0x5000, IDT at 0x6000.
    fn ram() -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).unwrap();
        w(0x1000, 0x2000 | 3);
        w(0x2000, 0x3000 | 3);
        w(0x3000, 0x4000 | 3);
        for i in 0..512 {
            w(0x4000 + i * 8, (i << 12) | 3);
        }
        mem
    }

    #[test]
    fn finds_every_table_and_the_descriptor_tables() {
        let mem = ram();
        let regs = SystemRegisters {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: 0,
            efer: EFER_LMA,
            gdt: (0x5000, 23),
            idt: (0x6ff0, 0x20),
            ..SystemRegisters::default()
        };
        let got = pages(&mem, &regs);
        for (page, what) in [
            (0x1000, Structure::PageTables),
            (0x2000, Structure::PageTables),
            (0x3000, Structure::PageTables),
            (0x4000, Structure::PageTables),
            (0x5000, Structure::Gdt),
            (0x6000, Structure::Idt),
            (0x7000, Structure::Idt),
        ] {
            assert!(
                got.contains(&(page, what)),
                "{page:#x} {what:?} in {got:x?}"
            );
        }
        assert_eq!(got.len(), 7, "{got:x?}");
    }

    #[test]
    fn paging_off_means_descriptor_tables_only_at_their_linear_addresses() {
        let regs = SystemRegisters {
            gdt: (0x500, 0x17),
            idt: (0, 0),
            ..SystemRegisters::default()
        };
        assert_eq!(
            pages(&ram(), &regs),
            vec![(0, Structure::Gdt), (0, Structure::Idt)]
        );
    }
}
