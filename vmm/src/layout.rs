//! Where drvisor puts things in guest-physical memory.
//!
//! The low addresses follow the conventions of Firecracker and the Linux boot protocol, so a
//! reader who knows either recognises them. Everything below [`HIMEM_START`] is boot data;
//! kernels are loaded at [`HIMEM_START`] and above.

/// The boot GDT (both boot paths).
pub const BOOT_GDT: u64 = 0x500;
/// The boot IDT: empty, so any early exception is a triple fault the VMM reports.
pub const BOOT_IDT: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_START_INFO: u64 = 0x6000;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// PVH memory map table.
pub const PVH_MEMMAP: u64 = 0x8000;
/// Page tables for the 64-bit Linux entry: PML4, PDPT and one page directory.
pub const PML4: u64 = 0x9000;
/// See [`PML4`].
pub const PDPT: u64 = 0xa000;
/// See [`PML4`].
pub const PD: u64 = 0xb000;
/// The multiboot information or the PVH module list, and the strings they point to.
pub const BOOT_INFO: u64 = 0xc000;
/// End of [`BOOT_INFO`]'s room.
pub const BOOT_INFO_END: u64 = 0x10000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// Room for the command line, NUL included.
pub const CMDLINE_MAX: usize = 0x1000;
/// End of the low boot area that e820 reports as RAM (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// The ACPI tables, the RSDP first, in the BIOS area where Linux and kvm-unit-tests scan for
/// the RSDP (0xe0000-0xfffff); e820 reserves them with the rest of the legacy area.
pub const ACPI_START: u64 = 0xe_0000;
/// End of the ACPI tables' room (exclusive).
pub const ACPI_END: u64 = 0xf_0000;
/// The Intel MP table (floating pointer, then configuration table) in the BIOS area, where
/// Linux scans for it; e820 reserves it with the rest of the legacy area.
pub const MPTABLE_START: u64 = 0xf_0000;
/// End of the MP table's room (exclusive).
pub const MPTABLE_END: u64 = 0xf_2000;
/// The BIOS's interrupt handlers a multiboot kernel's vector table points at
/// ([`crate::bios_handoff`]): a few bytes in the BIOS area, which e820 reserves.
pub const BIOS_STUBS: u64 = 0xf_f000;
/// Start of high memory, where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// What a multiboot kernel may not load over below [`HIMEM_START`], named for messages. The
/// rest of low RAM is its own, as under QEMU's `-kernel`: drvisor moves the multiboot
/// information out of its way, and puts modules above 1 MiB.
pub const MULTIBOOT_KEEP_OUT: [(&str, std::ops::Range<u64>); 2] = [
    (
        "the real-mode IVT, the BIOS data area and drvisor's boot GDT and IDT",
        0..0x1000,
    ),
    (
        "the EBDA, VGA and BIOS area, where the ACPI and MP tables are",
        EBDA_START..HIMEM_START,
    ),
];
/// Start of the hole below 4 GiB that holds no RAM: past 3 GiB of RAM, the rest goes above
/// 4 GiB, as QEMU's pc machine places it. The hole holds the test device's MMIO RAM
/// ([`crate::devices::IOMEM_BASE`]) and KVM's [`IDENTITY_MAP`] and [`VMX_TSS`].
pub const RAM_HOLE_START: u64 = 0xc000_0000;
/// End of the hole: 4 GiB, where the rest of RAM starts.
pub const RAM_HOLE_END: u64 = 1 << 32;
/// The page KVM's VMX code uses as the identity-mapped page table of a guest in real mode or
/// with paging off, on hosts without unrestricted guest (`KVM_SET_IDENTITY_MAP_ADDR`). One page,
/// just below [`VMX_TSS`], as Firecracker and Cloud Hypervisor place it.
pub const IDENTITY_MAP: u64 = 0xfffb_c000;
/// Pages KVM's VMX code uses as the TSS of a guest in real mode (`KVM_SET_TSS_ADDR`).
pub const VMX_TSS: u64 = 0xfffb_d000;
/// Size of [`VMX_TSS`]: three pages (KVM's `RMODE_TSS_SIZE` rounded up).
pub const VMX_TSS_LEN: u64 = 0x3000;

/// Guest RAM of `size` bytes as (start, length) regions: from 0 up to [`RAM_HOLE_START`], the
/// rest from [`RAM_HOLE_END`].
pub fn ram_regions(size: u64) -> Vec<(u64, u64)> {
    let low = low_ram_end(size);
    let mut regions = vec![(0, low)];
    if size > low {
        regions.push((RAM_HOLE_END, size - low));
    }
    regions
}

/// End of the RAM below 4 GiB (exclusive), for `size` bytes of RAM.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(RAM_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{IOMEM_BASE, IOMEM_LEN};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn ram_splits_around_the_hole() {
        assert_eq!(ram_regions(64 * MIB), [(0, 64 * MIB)]);
        assert_eq!(ram_regions(3 * GIB), [(0, 3 * GIB)]);
        assert_eq!(ram_regions(3 * GIB + MIB), [(0, 3 * GIB), (4 * GIB, MIB)]);
        assert_eq!(ram_regions(16 * GIB), [(0, 3 * GIB), (4 * GIB, 13 * GIB)]);
        for size in [2 * MIB, GIB, 3 * GIB, 5 * GIB, 1 << 40] {
            let total: u64 = ram_regions(size).iter().map(|r| r.1).sum();
            assert_eq!(total, size);
        }
    }

    #[test]
    fn kvm_pages_and_test_device_lie_in_the_hole_apart() {
        let ranges = [
            ("identity map", IDENTITY_MAP, 0x1000),
            ("VMX TSS", VMX_TSS, VMX_TSS_LEN),
            ("pc-testdev iomem", IOMEM_BASE, IOMEM_LEN),
        ];
        for (name, start, len) in ranges {
            assert!(
                start >= RAM_HOLE_START && start + len <= RAM_HOLE_END,
                "{name}"
            );
            assert_eq!(start % 0x1000, 0, "{name} is page-aligned");
            // Above every RAM region, whatever the RAM size.
            for size in [2 * MIB, 3 * GIB, 8 * GIB, 1 << 40] {
                for (ram, ram_len) in ram_regions(size) {
                    assert!(
                        start + len <= ram || start >= ram + ram_len,
                        "{name} in RAM"
                    );
                }
            }
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.1 + a.2 <= b.1 || b.1 + b.2 <= a.1, "{} and {}", a.0, b.0);
            }
        }
        // The identity map page sits right below the TSS, as KVM's users place them.
        assert_eq!(IDENTITY_MAP + 0x1000, VMX_TSS);
    }

    #[test]
    fn the_boot_area_lies_below_the_ebda() {
        for end in [BOOT_INFO_END, CMDLINE + CMDLINE_MAX as u64, PD + 0x1000] {
            assert!(end <= EBDA_START);
        }
        // The MP table lies in the reserved area above the EBDA, below the kernels.
        const { assert!(EBDA_START <= MPTABLE_START && MPTABLE_END <= HIMEM_START) };
        // So do the ACPI tables, below the MP table, where the RSDP scan looks.
        const { assert!(EBDA_START <= ACPI_START && ACPI_END <= MPTABLE_START) };
        const { assert!(ACPI_START >= 0xe_0000) };
        assert_eq!(ACPI_START % 64, 0);
    }
}
