//! The ACPI tables' bytes, read back the way an OS reads them: by scanning for the RSDP and
//! following addresses, checking every checksum and length on the way.

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

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Guest memory with the tables for `cpus` written, as the VM has it.
fn memory_with(cpus: usize) -> GuestMemoryMmap {
    let mem = crate::memory::create(64).unwrap();
    write(&mem, cpus).unwrap();
    mem
}

/// The table at `addr`: its header's length, checked to be plausible, and its bytes.
fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let mut header = [0u8; 36];
    mem.read_slice(&mut header, GuestAddress(addr)).unwrap();
    let len = u32_at(&header, 4) as usize;
    assert!((36..0x10000).contains(&len), "length {len} at {addr:#x}");
    let mut bytes = vec![0u8; len];
    mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

/// Finds the RSDP as Linux's `acpi_find_root_pointer` does in 0xe0000-0xfffff: `RSD PTR ` on a
/// 16-byte boundary whose first 20 bytes sum to 0 (and, revision 2, all 36 bytes).
fn scan_rsdp(mem: &GuestMemoryMmap) -> Option<u64> {
    let mut bios = vec![0u8; 0x2_0000];
    mem.read_slice(&mut bios, GuestAddress(0xe_0000)).unwrap();
    (0..bios.len() - 36).step_by(16).find_map(|at| {
        let p = &bios[at..at + 36];
        (&p[..8] == b"RSD PTR " && sum(&p[..20]) == 0).then_some(0xe_0000 + at as u64)
    })
}

/// The tables the XSDT lists, by signature.
fn listed(mem: &GuestMemoryMmap) -> Vec<([u8; 4], u64, Vec<u8>)> {
    let rsdp = scan_rsdp(mem).expect("an RSDP in the BIOS area");
    let mut r = [0u8; 36];
    mem.read_slice(&mut r, GuestAddress(rsdp)).unwrap();
    let xsdt = table(mem, u64_at(&r, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    (36..xsdt.len())
        .step_by(8)
        .map(|at| {
            let addr = u64_at(&xsdt, at);
            let t = table(mem, addr);
            (t[..4].try_into().unwrap(), addr, t)
        })
        .collect()
}

fn find(mem: &GuestMemoryMmap, sig: &[u8; 4]) -> (u64, Vec<u8>) {
    let all = listed(mem);
    let mut hits = all.into_iter().filter(|(s, _, _)| s == sig);
    let (_, addr, t) = hits.next().unwrap_or_else(|| panic!("no {sig:?}"));
    assert!(hits.next().is_none(), "two {sig:?}");
    (addr, t)
}

/// The MADT's entries as (type, bytes), walked by their lengths.
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut at = 44;
    let mut out = Vec::new();
    while at < madt.len() {
        let len = madt[at + 1] as usize;
        assert!(len >= 2, "entry length {len} at {at}");
        out.push((madt[at], madt[at..at + len].to_vec()));
        at += len;
    }
    assert_eq!(at, madt.len(), "entries end where the table says");
    out
}

#[test]
fn the_rsdp_is_found_by_scanning_and_its_checksums_hold() {
    for cpus in [1, 4, MAX_CPUS] {
        let mem = memory_with(cpus);
        let at = scan_rsdp(&mem).expect("found");
        assert_eq!(at, layout::ACPI_START);
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, GuestAddress(at)).unwrap();
        assert_eq!(r[15], 2, "revision 2: the XSDT is there");
        assert_eq!(u32_at(&r, 20), 36, "length");
        assert_eq!(sum(&r[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(&r), 0, "extended checksum");
        assert_eq!(&r[9..15], b"DRVISR");
    }
}

#[test]
fn every_table_sums_to_zero_over_its_length() {
    for cpus in [1, 2, 4, 32, MAX_CPUS] {
        let mem = memory_with(cpus);
        let tables = listed(&mem);
        let sigs: Vec<&[u8; 4]> = tables.iter().map(|(s, _, _)| s).collect();
        assert_eq!(sigs, [b"FACP", b"APIC"], "{cpus}");
        for (sig, addr, t) in &tables {
            assert_eq!(sum(t), 0, "{sig:?} at {addr:#x}");
            assert_eq!(&t[10..16], b"DRVISR", "{sig:?}");
        }
        let (_, fadt) = find(&mem, b"FACP");
        let dsdt = table(&mem, u32_at(&fadt, 40).into());
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(sum(&dsdt), 0, "DSDT");
    }
}

#[test]
fn the_fadt_points_at_the_pm_timer_facs_and_dsdt() {
    let mem = memory_with(1);
    let (_, f) = find(&mem, b"FACP");
    assert_eq!(f.len(), 276, "a revision 6 FADT");
    assert_eq!((f[8], f[131]), (6, 5), "major and minor revision");
    // PM_TMR_BLK, PM_TMR_LEN and TMR_VAL_EXT: the 32-bit counter at 0x608.
    assert_eq!(u32_at(&f, 76), 0x608);
    assert_eq!(f[91], 4);
    let flags = u32_at(&f, 112);
    assert_ne!(flags & 1 << 8, 0, "TMR_VAL_EXT");
    assert_eq!(flags & 1 << 20, 0, "not HW_REDUCED_ACPI");
    // The SCI on IRQ 9; PM1a event and control blocks; no SMI_CMD, no GPE block.
    assert_eq!(u16_at(&f, 46), 9);
    assert_eq!(u32_at(&f, 48), 0, "SMI_CMD");
    assert_eq!((u32_at(&f, 56), f[88]), (0x600, 4), "PM1a_EVT_BLK");
    assert_eq!((u32_at(&f, 64), f[89]), (0x604, 2), "PM1a_CNT_BLK");
    assert_eq!((u32_at(&f, 80), f[92]), (0, 0), "GPE0");
    // Century at CMOS 0x32; no 8042, no VGA.
    assert_eq!(f[108], 0x32);
    assert_eq!(u16_at(&f, 109), 0b101);
    // FACS through FIRMWARE_CTRL: 64 bytes, 64-byte aligned.
    let facs_at = u32_at(&f, 36) as u64;
    assert_eq!(facs_at % 64, 0);
    assert_eq!(
        u64_at(&f, 132),
        0,
        "X_FIRMWARE_CTRL unset: FIRMWARE_CTRL is the one"
    );
    let mut facs = [0u8; 64];
    mem.read_slice(&mut facs, GuestAddress(facs_at)).unwrap();
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
    assert_eq!(u32_at(&facs, 12), 0, "no waking vector");
    // DSDT and X_DSDT agree.
    assert_eq!(u64::from(u32_at(&f, 40)), u64_at(&f, 140));
}

#[test]
fn the_dsdt_holds_an_empty_system_bus_scope_and_the_s3_package() {
    let d = dsdt();
    assert_eq!(&d[..4], b"DSDT");
    assert_eq!(u32_at(&d, 4) as usize, d.len());
    assert_eq!(d[8], 2, "revision 2: 64-bit integers");
    assert_eq!(sum(&d), 0);
    // ScopeOp, PkgLength 6, \_SB_.
    assert_eq!(&d[36..43], [0x10, 0x06, b'\\', b'_', b'S', b'B', b'_']);
    // NameOp \_S3_, PackageOp PkgLength 6, 4 elements: SLP_TYP 1 for PM1a and PM1b, 0, 0
    // (ByteConst 1, then ZeroOp twice: the encoder's shortest forms).
    assert_eq!(
        &d[43..],
        [0x08, b'\\', b'_', b'S', b'3', b'_', 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00]
    );
}

#[test]
fn the_fadt_says_the_rtc_wake_status_is_in_pm1() {
    let mem = memory_with(1);
    let (_, f) = find(&mem, b"FACP");
    assert_eq!(u32_at(&f, 112) & 1 << 6, 0, "FIX_RTC clear");
}

#[test]
fn the_waking_vector_follows_the_facs_rules() {
    assert_eq!(
        waking_vector(0x1000, 0, 0),
        Ok(WakingVector::RealMode { cs: 0x100, ip: 0 })
    );
    assert_eq!(
        waking_vector(0x9_abcd, 0, 0),
        Ok(WakingVector::RealMode {
            cs: 0x9abc,
            ip: 0xd
        })
    );
    // The X vector wins when it is set.
    assert_eq!(
        waking_vector(0x1000, 0x20_0000, 0),
        Ok(WakingVector::Protected32(0x20_0000))
    );
    assert_eq!(waking_vector(0, 0, 0), Err(WakingVectorError::None));
    assert_eq!(
        waking_vector(0, 0x20_0000, 1),
        Err(WakingVectorError::SixtyFourBit)
    );
    assert_eq!(
        waking_vector(0, 1 << 32, 0),
        Err(WakingVectorError::Above4G(1 << 32))
    );
    assert_eq!(
        waking_vector(0x10_0000, 0, 0),
        Err(WakingVectorError::AboveRealMode(0x10_0000))
    );
    assert_eq!(
        WakingVector::RealMode { cs: 0x100, ip: 0 }.to_string(),
        "0100:0000 in real mode"
    );
}

#[test]
fn the_facs_fields_are_where_the_specification_puts_them() {
    let t = build(1, 0xe_0000).unwrap();
    let facs = (t.placed.facs - t.base) as usize;
    assert_eq!(&t.bytes[facs..facs + 4], b"FACS");
    for at in [
        super::FACS_WAKING_VECTOR,
        super::FACS_X_WAKING_VECTOR,
        super::FACS_OSPM_FLAGS,
    ] {
        assert_eq!(t.bytes[facs + at as usize], 0, "{at}");
    }
    assert_eq!(u32_at(&t.bytes[facs..], 4), 64, "length");
}

#[test]
fn the_madt_has_one_local_apic_per_vcpu() {
    for cpus in [1, 2, 4, MAX_CPUS] {
        let mem = memory_with(cpus);
        let (_, m) = find(&mem, b"APIC");
        assert_eq!(u32_at(&m, 36), 0xfee0_0000, "local APIC address");
        assert_eq!(u32_at(&m, 40), 1, "PCAT_COMPAT: the 8259s are there");
        let e = madt_entries(&m);
        let lapics: Vec<(u8, u8, u32)> = e
            .iter()
            .filter(|(t, _)| *t == 0)
            .map(|(_, b)| (b[2], b[3], u32_at(b, 4)))
            .collect();
        let want: Vec<(u8, u8, u32)> = (0..cpus).map(|i| (i as u8, i as u8, 1)).collect();
        assert_eq!(lapics, want, "{cpus}: UID = APIC id = index, enabled");
        assert_eq!(
            e.len(),
            cpus + 3,
            "{cpus}: and the I/O APIC, SCI override, NMI"
        );
        assert_eq!(m.len(), 44 + 8 * cpus + 12 + 10 + 6);
    }
}

#[test]
fn the_madt_has_the_ioapic_the_sci_override_and_lint1_nmi() {
    let mem = memory_with(2);
    let (_, m) = find(&mem, b"APIC");
    let e = madt_entries(&m);
    let of = |k: u8| -> Vec<Vec<u8>> {
        e.iter()
            .filter(|(t, _)| *t == k)
            .map(|(_, b)| b.clone())
            .collect()
    };
    let ioapic = of(1);
    assert_eq!(ioapic.len(), 1);
    assert_eq!(ioapic[0][2], 0, "I/O APIC id");
    assert_eq!(u32_at(&ioapic[0], 4), 0xfec0_0000);
    assert_eq!(u32_at(&ioapic[0], 8), 0, "GSI base");
    // SCI: ISA IRQ 9 is GSI 9, level-triggered, active high.
    let overrides = of(2);
    assert_eq!(overrides, [vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0]]);
    // No override for IRQ 0: KVM's default routing wires the PIT to pin 0.
    assert!(overrides.iter().all(|o| o[3] != 0));
    assert_eq!(of(4), [vec![4, 6, 0xff, 0, 0, 1]]);
}

#[test]
fn too_many_or_no_cpus_are_refused() {
    assert_eq!(build(0, ACPI_START), Err(Error::CpuCount(0)));
    let err = build(MAX_CPUS + 1, ACPI_START).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the ACPI MADT describes 1 to 255 vCPUs, not 256"
    );
    let mem = crate::memory::create(2).unwrap();
    let err = write(&mem, 1000).unwrap_err().to_string();
    assert!(err.contains("1 to 255 vCPUs, not 1000"), "{err}");
}

#[test]
fn they_lie_in_reserved_memory_apart_from_all_other_boot_data() {
    let start = layout::ACPI_START;
    let end = start + build(MAX_CPUS, start).unwrap().bytes.len() as u64;
    assert!(end <= layout::ACPI_END, "{end:#x}");
    assert!(crate::boot::e820::reserved_at_every_ram_size(
        start,
        layout::ACPI_END
    ));
    let others = [
        (
            "low boot data",
            0,
            layout::CMDLINE + layout::CMDLINE_MAX as u64,
        ),
        ("MP table", layout::MPTABLE_START, layout::MPTABLE_END),
        ("kernels and modules", layout::HIMEM_START, u64::MAX),
    ];
    for (name, s, e) in others {
        assert!(e <= start || s >= layout::ACPI_END, "{name}");
    }
}

#[test]
fn loading_a_kernel_and_the_mp_table_leave_the_tables_whole() {
    for bytes in crate::boot::test_elf::pvh_and_multiboot() {
        let mem = crate::memory::create(64).unwrap();
        write(&mem, 4).unwrap();
        let kernel = crate::boot::KernelImage::from_bytes("k", bytes).unwrap();
        crate::boot::load(&mem, &kernel, Some(&[7; 100]), &[], "console=ttyS0").unwrap();
        crate::boot::mptable::write(&mem, 4).unwrap();
        let want = build(4, ACPI_START).unwrap().bytes;
        let mut got = vec![0u8; want.len()];
        mem.read_slice(&mut got, GuestAddress(ACPI_START)).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn the_layout_is_the_documented_one() {
    let t = build(1, ACPI_START).unwrap();
    assert_eq!(t.placed.rsdp, ACPI_START);
    assert_eq!(t.placed.facs % 64, 0);
    for addr in [t.placed.xsdt, t.placed.fadt, t.placed.dsdt, t.placed.madt] {
        assert_eq!(addr % 16, 0);
        assert!(addr > t.placed.rsdp && addr < ACPI_START + t.bytes.len() as u64);
    }
}

#[test]
fn bzimage_and_pvh_kernels_are_told_where_the_rsdp_is() {
    use crate::boot::Entry;
    let mem = crate::memory::create(64).unwrap();
    let linux = Entry::Linux64 {
        entry: 0x10_0200,
        zero_page: layout::ZERO_PAGE,
    };
    hand_over(&mem, &linux, 0xe_0000).unwrap();
    // boot_params.acpi_rsdp_addr is at 0x70 (Documentation/arch/x86/zero-page.rst).
    let got: u64 = mem
        .read_obj(GuestAddress(layout::ZERO_PAGE + 0x70))
        .unwrap();
    assert_eq!(got, 0xe_0000);
    let pvh = Entry::Pvh {
        entry: 0x10_0000,
        start_info: layout::PVH_START_INFO,
    };
    hand_over(&mem, &pvh, 0xe_0010).unwrap();
    // hvm_start_info.rsdp_paddr is at 32 (xen/include/public/arch-x86/hvm/start_info.h).
    let got: u64 = mem
        .read_obj(GuestAddress(layout::PVH_START_INFO + 32))
        .unwrap();
    assert_eq!(got, 0xe_0010);
    // Multiboot has no field: nothing is written anywhere.
    let fresh = crate::memory::create(64).unwrap();
    let mb = Entry::Multiboot {
        entry: 0x10_0000,
        info: layout::BOOT_INFO,
    };
    hand_over(&fresh, &mb, 0xe_0000).unwrap();
    let mut low = vec![0u8; 0x10_0000];
    fresh.read_slice(&mut low, GuestAddress(0)).unwrap();
    assert!(low.iter().all(|&b| b == 0));
}
