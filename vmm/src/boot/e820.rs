//! The guest's memory map, as a PC BIOS reports it through e820 and as QEMU builds it: RAM
//! below the EBDA, the EBDA, VGA hole and BIOS ROM reserved up to 1 MiB, RAM from 1 MiB to
//! the hole below 4 GiB, the pages KVM uses for VMX real mode reserved in that hole (QEMU
//! reserves the same 16 KiB at its own address), and the rest of RAM above 4 GiB. The three
//! protocols hand it over in their own formats: the zero page's `e820_table` (bzImage), the PVH
//! `memmap` and the multiboot `mmap`.
//!
//! Linux takes anything not listed as usable for its PCI resources; a kernel that finds the
//! legacy area listed as RAM may put its own data in the EBDA or ROM area, which real firmware
//! and option ROMs own.

use crate::layout::{
    low_ram_end, ram_regions, EBDA_START, HIMEM_START, IDENTITY_MAP, VMX_TSS, VMX_TSS_LEN,
};

/// What an e820 range holds (ACPI specification, "Address Range Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// `AddressRangeMemory`: usable RAM.
    Ram = 1,
    /// `AddressRangeReserved`: not for the OS.
    Reserved = 2,
}

/// One range of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Guest-physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What it holds.
    pub kind: Kind,
}

impl Range {
    /// The e820 type number.
    pub fn type_number(&self) -> u32 {
        self.kind as u32
    }
}

/// The memory map of a VM with `ram` bytes of RAM laid out by [`ram_regions`], sorted by
/// address. `ram` is at least 2 MiB ([`crate::memory::MIN_MIB`]).
pub fn memory_map(ram: u64) -> Vec<Range> {
    let range = |addr, size, kind| Range { addr, size, kind };
    let mut map = vec![
        range(0, EBDA_START, Kind::Ram),
        range(EBDA_START, HIMEM_START - EBDA_START, Kind::Reserved),
        range(HIMEM_START, low_ram_end(ram) - HIMEM_START, Kind::Ram),
        range(
            IDENTITY_MAP,
            VMX_TSS + VMX_TSS_LEN - IDENTITY_MAP,
            Kind::Reserved,
        ),
    ];
    map.extend(
        ram_regions(ram)
            .into_iter()
            .skip(1)
            .map(|(addr, size)| range(addr, size, Kind::Ram)),
    );
    map
}

/// Whether `start..end` lies in one reserved range of the map, whatever the RAM size (from
/// 2 MiB to 1 TiB): for the tests of what drvisor keeps in low memory.
#[cfg(test)]
pub(crate) fn reserved_at_every_ram_size(start: u64, end: u64) -> bool {
    [2 << 20, 64 << 20, 3 << 30, 1u64 << 40]
        .into_iter()
        .all(|ram| {
            memory_map(ram)
                .iter()
                .any(|r| r.kind == Kind::Reserved && r.addr <= start && end <= r.addr + r.size)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{RAM_HOLE_END, RAM_HOLE_START};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn map(ram: u64) -> Vec<(u64, u64, u32)> {
        memory_map(ram)
            .iter()
            .map(|r| (r.addr, r.addr + r.size, r.type_number()))
            .collect()
    }

    #[test]
    fn small_ram_has_the_legacy_area_reserved() {
        assert_eq!(
            map(64 * MIB),
            [
                (0, 0x9_fc00, 1),
                (0x9_fc00, 0x10_0000, 2),
                (0x10_0000, 64 * MIB, 1),
                (0xfffb_c000, 0xfffc_0000, 2),
            ]
        );
    }

    #[test]
    fn ram_past_the_hole_goes_above_4_gib() {
        assert_eq!(
            map(8 * GIB),
            [
                (0, 0x9_fc00, 1),
                (0x9_fc00, 0x10_0000, 2),
                (0x10_0000, 0xc000_0000, 1),
                (0xfffb_c000, 0xfffc_0000, 2),
                (0x1_0000_0000, 0x1_0000_0000 + 5 * GIB, 1),
            ]
        );
    }

    #[test]
    fn ram_ending_at_the_hole_stays_below_it() {
        assert_eq!(map(3 * GIB).len(), 4);
        assert_eq!(map(3 * GIB)[2], (0x10_0000, RAM_HOLE_START, 1));
    }

    #[test]
    fn sorted_disjoint_and_ram_adds_up() {
        for ram in [
            2 * MIB,
            64 * MIB,
            512 * MIB,
            3 * GIB,
            3 * GIB + MIB,
            1 << 40,
        ] {
            let m = memory_map(ram);
            for w in m.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{ram:#x}: {w:?}");
            }
            let usable: u64 = m
                .iter()
                .filter(|r| r.kind == Kind::Ram)
                .map(|r| r.size)
                .sum();
            // All of RAM is listed except the legacy area (EBDA to 1 MiB).
            assert_eq!(usable, ram - (HIMEM_START - EBDA_START), "{ram:#x}");
            // Nothing usable in the hole.
            assert!(m
                .iter()
                .filter(|r| r.kind == Kind::Ram)
                .all(|r| r.addr + r.size <= RAM_HOLE_START || r.addr >= RAM_HOLE_END));
        }
    }
}
