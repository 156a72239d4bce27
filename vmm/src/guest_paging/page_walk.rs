//! A guest page-table walk in the VMM, from the CR3 that arrives with the exit
//! (`KVM_SYNC_X86_SREGS`): translating a hit's RIP and RSP costs no `KVM_TRANSLATE` ioctl.
//!
//! It answers only where the processor would access the page without changing the tables: every
//! level present, Accessed set, and for a write, writable with Dirty set (the processor sets
//! A and D itself; an emulated access that skipped that would not be exact). Anything else is
//! `None`, and the caller falls back to letting KVM run the instruction.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

pub use super::bits::CR4_LA57;
use super::bits::{ACCESSED, ADDR, DIRTY, LARGE, NX, PRESENT, USER, WRITABLE};

/// CR4 bits the walk reads besides LA57.
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;

/// What the access is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// An instruction fetch by supervisor code.
    Fetch,
    /// A data write by supervisor code, with RFLAGS.AC as given (SMAP).
    Write {
        /// RFLAGS.AC.
        ac: bool,
    },
}

/// Guest-physical address of `gva` under 4- or 5-level paging with `cr3` and `cr4`, for a
/// supervisor `access` that would leave the tables unchanged; `None` otherwise.
pub fn translate(
    mem: &impl GuestMemory,
    cr3: u64,
    cr4: u64,
    gva: u64,
    access: Access,
) -> Option<u64> {
    walk(mem, cr3, cr4, gva, Some(access))
}

/// Where `gva` maps under 4- or 5-level paging with `cr3` and `cr4`, whatever the permissions
/// and the Accessed and Dirty bits: every level present is all it asks. For finding a page,
/// not for accessing it.
pub fn locate(mem: &impl GuestMemory, cr3: u64, cr4: u64, gva: u64) -> Option<u64> {
    walk(mem, cr3, cr4, gva, None)
}

/// The walk; `access` `None` checks presence only.
fn walk(
    mem: &impl GuestMemory,
    cr3: u64,
    cr4: u64,
    gva: u64,
    access: Option<Access>,
) -> Option<u64> {
    let levels: u32 = if cr4 & CR4_LA57 != 0 { 5 } else { 4 };
    // Canonical: bits above the top translated bit copy it.
    let top = 12 + 9 * levels - 1;
    let high = (gva as i64) >> top;
    if high != 0 && high != -1 {
        return None;
    }
    let needed = if access.is_some() {
        PRESENT | ACCESSED
    } else {
        PRESENT
    };
    let mut table = cr3 & ADDR;
    let mut user = true;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (gva >> shift) & 0x1ff;
        let entry: u64 = mem.read_obj(GuestAddress(table + index * 8)).ok()?;
        if entry & needed != needed {
            return None;
        }
        user &= entry & USER != 0;
        match access {
            Some(Access::Fetch) if entry & NX != 0 => return None,
            Some(Access::Write { .. }) if entry & WRITABLE == 0 => return None,
            _ => {}
        }
        let leaf = level == 1 || (entry & LARGE != 0 && level <= 3);
        if leaf {
            if matches!(access, Some(Access::Write { .. })) && entry & DIRTY == 0 {
                return None;
            }
            match access {
                Some(Access::Fetch) if user && cr4 & CR4_SMEP != 0 => return None,
                Some(Access::Write { ac: false }) if user && cr4 & CR4_SMAP != 0 => return None,
                _ => {}
            }
            let page_mask = (1u64 << shift) - 1;
            return Some((entry & ADDR & !page_mask) | (gva & page_mask));
        }
        table = entry & ADDR;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;
    const OK: u64 = PRESENT | WRITABLE | ACCESSED | DIRTY;

    fn mem_with(pt_entry: u64, pd_entry: u64) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        mem.write_obj(PDPT | OK, GuestAddress(PML4)).unwrap();
        mem.write_obj(PD | OK, GuestAddress(PDPT)).unwrap();
        // 0..2 MiB through a 4 KiB table, 2..4 MiB as one large page.
        mem.write_obj(PT | OK, GuestAddress(PD)).unwrap();
        mem.write_obj(pd_entry, GuestAddress(PD + 8)).unwrap();
        // gva 0x5000 -> gpa 0x9000.
        mem.write_obj(pt_entry, GuestAddress(PT + 5 * 8)).unwrap();
        mem
    }

    #[test]
    fn translates_small_and_large_pages() {
        let mem = mem_with(0x9000 | OK, 0x20_0000 | OK | LARGE);
        let w = Access::Write { ac: false };
        assert_eq!(
            translate(&mem, PML4, 0, 0x5123, Access::Fetch),
            Some(0x9123)
        );
        assert_eq!(translate(&mem, PML4, 0, 0x5ff8, w), Some(0x9ff8));
        assert_eq!(translate(&mem, PML4, 0, 0x23_4567, w), Some(0x23_4567));
        assert_eq!(
            translate(&mem, PML4, 0, 0x6000, Access::Fetch),
            None,
            "not present"
        );
    }

    #[test]
    fn refuses_what_would_change_the_tables_or_fault() {
        let w = Access::Write { ac: false };
        let no_dirty = mem_with(0x9000 | PRESENT | WRITABLE | ACCESSED, 0);
        assert_eq!(translate(&no_dirty, PML4, 0, 0x5000, w), None);
        assert_eq!(
            translate(&no_dirty, PML4, 0, 0x5000, Access::Fetch),
            Some(0x9000)
        );
        let no_accessed = mem_with(0x9000 | PRESENT | WRITABLE, 0);
        assert_eq!(
            translate(&no_accessed, PML4, 0, 0x5000, Access::Fetch),
            None
        );
        let read_only = mem_with(0x9000 | PRESENT | ACCESSED | DIRTY, 0);
        assert_eq!(translate(&read_only, PML4, 0, 0x5000, w), None);
        let nx = mem_with(0x9000 | OK | NX, 0);
        assert_eq!(translate(&nx, PML4, 0, 0x5000, Access::Fetch), None);
        let user = mem_with(0x9000 | OK | USER, 0);
        // Only the leaf is a user page: the upper levels are supervisor, so the page is too.
        assert_eq!(
            translate(&user, PML4, CR4_SMEP, 0x5000, Access::Fetch),
            Some(0x9000)
        );
        assert_eq!(
            translate(&mem_with(0x9000 | OK, 0), PML4, 0, 1 << 47, Access::Fetch),
            None,
            "non-canonical"
        );
    }

    #[test]
    fn locating_asks_only_for_present_entries() {
        let fresh = mem_with(0x9000 | PRESENT, 0);
        assert_eq!(locate(&fresh, PML4, 0, 0x5010), Some(0x9010));
        assert_eq!(
            translate(&fresh, PML4, 0, 0x5010, Access::Fetch),
            None,
            "not yet accessed"
        );
        assert_eq!(locate(&mem_with(0x9000, 0), PML4, 0, 0x5010), None);
        let large = mem_with(0, 0x40_0000 | PRESENT | LARGE);
        assert_eq!(locate(&large, PML4, 0, 0x20_0123), Some(0x40_0123));
    }
}
