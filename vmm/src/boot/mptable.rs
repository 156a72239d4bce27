//! The Intel MultiProcessor Specification 1.4 table, from which a kernel without ACPI (drvisor
//! under `--acpi off`, or a kernel that does not read ACPI) learns its CPUs and its I/O APIC:
//! Linux counts its CPUs from it (`smpboot: Allowing N CPUs`) and without it, or ACPI's MADT
//! ([`super::acpi`]), runs on the boot CPU alone.
//!
//! As QEMU's firmware and Firecracker write it: the floating pointer at [`MPTABLE_START`] in the
//! BIOS area (which Linux scans, 16 bytes at a time, for `_MP_`), the configuration table right
//! after it, with
//! - one processor entry per vCPU: APIC ids 0 to n-1 (what each vCPU's CPUID says), all
//!   enabled, the boot flag on 0;
//! - one ISA bus (id 0);
//! - KVM's in-kernel I/O APIC: id 0 (its ID register after reset, and the id QEMU's firmware
//!   gives it), version 0x11, at [`IOAPIC_ADDR`];
//! - ISA IRQs 0-15 to I/O APIC pins 0-15, as KVM's default routing delivers them (the PIT on
//!   GSI 0, COM1 on GSI 4);
//! - LINT0 ExtINT and LINT1 NMI on every local APIC, as drvisor wires them
//!   ([`crate::cpu::lapic`]).
//!
//! Written for every kernel format: a kernel that does not look (the embedded test guest,
//! kvm-unit-tests) never finds it, and e820 reserves the area (EBDA to 1 MiB).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{MPTABLE_END, MPTABLE_START};

/// The most vCPUs drvisor runs (APIC ids are 8 bits; 0xff is the broadcast id), as
/// [`crate::vm`] checks.
pub const MAX_CPUS: usize = u8::MAX as usize;
/// The local APICs' address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM's in-kernel I/O APIC's address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The I/O APIC's id.
pub const IOAPIC_ID: u8 = 0;
/// KVM's I/O APIC version register (`IOAPIC_VERSION_ID`).
pub const IOAPIC_VERSION: u8 = 0x11;
/// KVM's local APIC version (the low byte of its version register: an integrated xAPIC).
pub const LAPIC_VERSION: u8 = 0x14;
/// The ISA bus's id.
const ISA_BUS: u8 = 0;
/// ISA IRQs routed to the I/O APIC.
const ISA_IRQS: u8 = 16;

/// The floating pointer's size: one 16-byte paragraph.
pub const FLOATING_LEN: usize = 16;
/// The configuration table header's size.
pub const HEADER_LEN: usize = 44;
/// A processor entry's size.
pub const PROCESSOR_LEN: usize = 20;
/// Every other entry's size.
pub const ENTRY_LEN: usize = 8;

// Entry types (MP specification, table 4-3).
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IOAPIC: u8 = 2;
const IO_INTERRUPT: u8 = 3;
const LOCAL_INTERRUPT: u8 = 4;
// Interrupt types (table 4-8).
const INT: u8 = 0;
const NMI: u8 = 1;
const EXTINT: u8 = 3;
// Processor flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOT: u8 = 2;
/// "All local APICs" as a destination.
const ALL_LAPICS: u8 = 0xff;

/// Errors building the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A vCPU count the table cannot describe.
    #[error("an MP table describes 1 to {MAX_CPUS} vCPUs, not {0}")]
    CpuCount(usize),
}

/// Number of entries in the configuration table for `cpus` vCPUs.
pub fn entry_count(cpus: usize) -> usize {
    cpus + 1 + 1 + ISA_IRQS as usize + 2
}

/// Size in bytes of the floating pointer and configuration table for `cpus` vCPUs.
pub fn table_len(cpus: usize) -> usize {
    FLOATING_LEN + HEADER_LEN + cpus * PROCESSOR_LEN + (entry_count(cpus) - cpus) * ENTRY_LEN
}

/// The byte that makes `bytes` sum to 0 when added.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &b| sum.wrapping_add(b))
        .wrapping_neg()
}

/// The floating pointer and configuration table for `cpus` vCPUs, to be written at `base`
/// (16-byte aligned).
pub fn build(cpus: usize, base: u32) -> Result<Vec<u8>, Error> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::CpuCount(cpus));
    }
    debug_assert_eq!(base % 16, 0);
    let config = base + FLOATING_LEN as u32;

    let mut entries = Vec::new();
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOT } else { 0 };
        entries.extend_from_slice(&[PROCESSOR, id as u8, LAPIC_VERSION, flags]);
        // CPU signature (family 6) and feature flags (FPU, APIC), as Firecracker gives; Linux
        // takes the real ones from CPUID.
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&0x201u32.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[BUS, ISA_BUS]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[IOAPIC, IOAPIC_ID, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for irq in 0..ISA_IRQS {
        // Flags 0: polarity and trigger as the bus says (ISA: edge, active high).
        entries.extend_from_slice(&[IO_INTERRUPT, INT, 0, 0, ISA_BUS, irq, IOAPIC_ID, irq]);
    }
    for (kind, lint) in [(EXTINT, 0), (NMI, 1)] {
        entries.extend_from_slice(&[LOCAL_INTERRUPT, kind, 0, 0, ISA_BUS, 0, ALL_LAPICS, lint]);
    }

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(4); // specification revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"DRVISOR ");
    header.extend_from_slice(b"DRVISOR     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&(entry_count(cpus) as u16).to_le_bytes());
    header.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]); // no extended table; reserved
    debug_assert_eq!(header.len(), HEADER_LEN);
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_LEN + table.len());
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&config.to_le_bytes());
    floating.push(1); // length in paragraphs
    floating.push(4); // specification revision 1.4
    floating.push(0); // checksum, below
                      // Feature byte 1 = 0: the configuration table is present (no default configuration);
                      // IMCRP clear: virtual wire mode, as KVM's PIC and LINT0 are wired.
    floating.extend_from_slice(&[0; 5]);
    floating[10] = checksum(&floating);
    floating.extend_from_slice(&table);
    debug_assert_eq!(floating.len(), table_len(cpus));
    Ok(floating)
}

/// Writes the table for `cpus` vCPUs at [`MPTABLE_START`].
pub fn write(mem: &GuestMemoryMmap, cpus: usize) -> Result<(), super::Error> {
    let bytes =
        build(cpus, MPTABLE_START as u32).map_err(|source| super::Error::MpTable { source })?;
    // Fits: at most 5,320 bytes (tests).
    debug_assert!(MPTABLE_START + bytes.len() as u64 <= MPTABLE_END);
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(super::Error::guest_write("the MP table"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use vm_memory::Bytes;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Finds the floating pointer as Linux's `smp_scan_config` does: `_MP_` on a 16-byte
    /// boundary, length 1, revision 1 or 4, the 16 bytes summing to 0. Returns its address.
    fn scan(region: &[u8], base: u64) -> Option<u64> {
        region.chunks_exact(16).enumerate().find_map(|(i, p)| {
            (&p[..4] == b"_MP_" && p[8] == 1 && (p[9] == 1 || p[9] == 4) && sum(p) == 0)
                .then_some(base + 16 * i as u64)
        })
    }

    /// The entries of a configuration table, as (type, bytes), walked by their lengths as
    /// Linux's `smp_read_mpc` walks them.
    fn entries(table: &[u8]) -> Vec<(u8, &[u8])> {
        let len = u16_at(table, 4) as usize;
        let mut at = HEADER_LEN;
        let mut out = Vec::new();
        while at < len {
            let n = if table[at] == PROCESSOR {
                PROCESSOR_LEN
            } else {
                ENTRY_LEN
            };
            out.push((table[at], &table[at..at + n]));
            at += n;
        }
        assert_eq!(at, len, "entries end where the table says");
        out
    }

    #[test]
    fn checksums_are_right() {
        for cpus in [1, 2, 4, 32, MAX_CPUS] {
            let t = build(cpus, 0xf0000).unwrap();
            assert_eq!(sum(&t[..16]), 0, "{cpus}: floating pointer");
            let len = u16_at(&t, 16 + 4) as usize;
            assert_eq!(16 + len, t.len(), "{cpus}");
            assert_eq!(sum(&t[16..16 + len]), 0, "{cpus}: configuration table");
            assert_ne!(t[10], 0, "the checksum byte is set");
        }
    }

    #[test]
    fn entry_counts_for_1_2_4_and_max_cpus() {
        for cpus in [1, 2, 4, MAX_CPUS] {
            let t = build(cpus, 0xf0000).unwrap();
            let table = &t[16..];
            let e = entries(table);
            assert_eq!(
                u16_at(table, 34) as usize,
                e.len(),
                "{cpus}: the header's count"
            );
            assert_eq!(e.len(), cpus + 1 + 1 + 16 + 2, "{cpus}");
            let of = |k: u8| e.iter().filter(|(t, _)| *t == k).count();
            assert_eq!(of(PROCESSOR), cpus);
            assert_eq!(of(BUS), 1);
            assert_eq!(of(IOAPIC), 1);
            assert_eq!(of(IO_INTERRUPT), 16);
            assert_eq!(of(LOCAL_INTERRUPT), 2);
            assert_eq!(t.len(), table_len(cpus));
        }
        assert_eq!(table_len(MAX_CPUS), 5320);
    }

    #[test]
    fn processors_have_ids_0_to_n_minus_1_enabled_and_one_boot_cpu() {
        let t = build(4, 0xf0000).unwrap();
        let cpus: Vec<_> = entries(&t[16..])
            .into_iter()
            .filter(|(k, _)| *k == PROCESSOR)
            .map(|(_, e)| (e[1], e[2], e[3]))
            .collect();
        assert_eq!(
            cpus,
            [(0, 0x14, 3), (1, 0x14, 1), (2, 0x14, 1), (3, 0x14, 1)]
        );
        let max = build(MAX_CPUS, 0xf0000).unwrap();
        let last = entries(&max[16..])
            .into_iter()
            .rfind(|(k, _)| *k == PROCESSOR)
            .unwrap()
            .1[1];
        assert_eq!(last, 254, "the broadcast id 0xff is no CPU's");
    }

    #[test]
    fn ioapic_bus_and_interrupts() {
        let t = build(2, 0xf0000).unwrap();
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        assert_eq!(table[6], 4);
        assert_eq!(u32_at(table, 36), 0xfee0_0000);
        let e = entries(table);
        let bus = e.iter().find(|(k, _)| *k == BUS).unwrap().1;
        assert_eq!(bus, [1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
        let ioapic = e.iter().find(|(k, _)| *k == IOAPIC).unwrap().1;
        assert_eq!(&ioapic[..4], [2, IOAPIC_ID, 0x11, 1]);
        assert_eq!(u32_at(ioapic, 4), 0xfec0_0000);
        let ints: Vec<_> = e
            .iter()
            .filter(|(k, _)| *k == IO_INTERRUPT)
            .map(|(_, b)| (b[1], b[4], b[5], b[6], b[7]))
            .collect();
        let want: Vec<_> = (0..16).map(|i| (INT, 0, i, IOAPIC_ID, i)).collect();
        assert_eq!(ints, want, "ISA IRQ n to pin n");
        let lints: Vec<_> = e
            .iter()
            .filter(|(k, _)| *k == LOCAL_INTERRUPT)
            .map(|(_, b)| (b[1], b[6], b[7]))
            .collect();
        assert_eq!(lints, [(EXTINT, 0xff, 0), (NMI, 0xff, 1)]);
    }

    #[test]
    fn too_many_or_no_cpus_are_refused() {
        assert_eq!(build(0, 0xf0000), Err(Error::CpuCount(0)));
        let err = build(MAX_CPUS + 1, 0xf0000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an MP table describes 1 to 255 vCPUs, not 256"
        );
        let mem = crate::memory::create(2).unwrap();
        let err = write(&mem, 1000).unwrap_err().to_string();
        assert!(err.contains("1 to 255 vCPUs, not 1000"), "{err}");
    }

    #[test]
    fn linux_finds_it_by_scanning_the_bios_area() {
        for cpus in [1, 2, MAX_CPUS] {
            let mem = crate::memory::create(64).unwrap();
            write(&mem, cpus).unwrap();
            // Linux scans the first KiB, the last KiB below 640 KiB and 0xf0000-0xfffff.
            let mut bios = vec![0u8; 0x10000];
            mem.read_slice(&mut bios, GuestAddress(0xf0000)).unwrap();
            let at = scan(&bios, 0xf0000).expect("found");
            assert_eq!(at, layout::MPTABLE_START);
            let mut low = vec![0u8; 0x400];
            mem.read_slice(&mut low, GuestAddress(0)).unwrap();
            assert_eq!(scan(&low, 0), None);
            // Its pointer leads to the configuration table.
            let ptr = u32_at(&bios, (at - 0xf0000) as usize + 4) as u64;
            let mut sig = [0u8; 4];
            mem.read_slice(&mut sig, GuestAddress(ptr)).unwrap();
            assert_eq!(&sig, b"PCMP");
        }
    }

    #[test]
    fn it_lies_in_reserved_memory_apart_from_all_other_boot_data() {
        let start = layout::MPTABLE_START;
        let end = start + table_len(MAX_CPUS) as u64;
        assert_eq!(start % 16, 0);
        assert!(end <= layout::MPTABLE_END);
        // Where Linux scans, and in the e820 map's reserved legacy area for every RAM size.
        assert!(start >= 0xf0000 && layout::MPTABLE_END <= 0x10_0000);
        assert!(crate::boot::e820::reserved_at_every_ram_size(start, end));
        let others = [
            ("boot GDT and IDT", layout::BOOT_GDT, layout::PVH_START_INFO),
            ("PVH start info", layout::PVH_START_INFO, layout::ZERO_PAGE),
            ("zero page", layout::ZERO_PAGE, layout::ZERO_PAGE + 0x1000),
            ("PVH memmap", layout::PVH_MEMMAP, layout::PML4),
            ("page tables", layout::PML4, layout::PD + 0x1000),
            ("boot info", layout::BOOT_INFO, layout::BOOT_INFO_END),
            (
                "cmdline",
                layout::CMDLINE,
                layout::CMDLINE + layout::CMDLINE_MAX as u64,
            ),
            ("kernels and modules", layout::HIMEM_START, u64::MAX),
            (
                "VMX pages",
                layout::IDENTITY_MAP,
                layout::VMX_TSS + layout::VMX_TSS_LEN,
            ),
        ];
        for (name, s, e) in others {
            assert!(e <= start || s >= layout::MPTABLE_END, "{name}");
        }
    }

    #[test]
    fn loading_a_kernel_leaves_the_table_whole() {
        // PVH and multiboot kernels with an initrd and a command line: the boot data the
        // loaders write (start info, memory map, module list, strings, command line) and the
        // kernel and modules all stay clear of the table.
        for bytes in crate::boot::test_elf::pvh_and_multiboot() {
            let mem = crate::memory::create(64).unwrap();
            write(&mem, 4).unwrap();
            let kernel = crate::boot::KernelImage::from_bytes("k", bytes).unwrap();
            crate::boot::load(&mem, &kernel, Some(&[7; 100]), &[], "console=ttyS0").unwrap();
            let mut got = vec![0u8; table_len(4)];
            mem.read_slice(&mut got, GuestAddress(layout::MPTABLE_START))
                .unwrap();
            assert_eq!(got, build(4, layout::MPTABLE_START as u32).unwrap());
        }
    }
}
