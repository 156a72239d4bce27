use super::*;

/// `.orc_unwind_ip` at `base` for entries starting at `ips` (each relative to its own slot).
fn ip_section(base: u64, ips: &[u64]) -> Vec<u8> {
    ips.iter()
        .enumerate()
        .flat_map(|(i, ip)| {
            let slot = base + 4 * i as u64;
            let rel = i32::try_from(ip.wrapping_sub(slot) as i64).unwrap();
            rel.to_le_bytes()
        })
        .collect()
}

/// One `struct orc_entry` (the 4.14-6.2 layout).
fn entry_bytes(
    sp_off: i16,
    bp_off: i16,
    sp_reg: u16,
    bp_reg: u16,
    kind: u16,
    end: bool,
) -> [u8; 6] {
    let bits = sp_reg | (bp_reg << 4) | (kind << 8) | (u16::from(end) << 10);
    let mut b = [0u8; 6];
    b[0..2].copy_from_slice(&sp_off.to_le_bytes());
    b[2..4].copy_from_slice(&bp_off.to_le_bytes());
    b[4..6].copy_from_slice(&bits.to_le_bytes());
    b
}

const BASE: u64 = 0xffff_ffff_8200_0000;
const TEXT: u64 = 0xffff_ffff_8100_0000;

#[test]
fn entries_decode_every_field() {
    let e = Entry::from_bytes(entry_bytes(-16, 8, 5, 1, 0, false));
    assert_eq!(
        e,
        Entry {
            sp_offset: -16,
            bp_offset: 8,
            sp_reg: Reg::Sp,
            bp_reg: Reg::PrevSp,
            kind: Kind::Call,
            end: false,
            signal: false,
        }
    );
    let e = Entry::from_bytes(entry_bytes(0, 0, 0, 0, 0, true));
    assert_eq!(
        (e.sp_reg, e.bp_reg, e.end),
        (Reg::Undefined, Reg::Undefined, true)
    );
    let e = Entry::from_bytes(entry_bytes(0, 0, 9, 4, 1, false));
    assert_eq!(
        (e.sp_reg, e.bp_reg, e.kind),
        (Reg::SpIndirect, Reg::Bp, Kind::Regs)
    );
    let e = Entry::from_bytes(entry_bytes(0, 0, 8, 7, 2, false));
    assert_eq!(
        (e.sp_reg, e.bp_reg, e.kind),
        (Reg::BpIndirect, Reg::Other(7), Kind::RegsPartial)
    );
    assert_eq!(
        Entry::from_bytes(entry_bytes(0, 0, 5, 0, 3, false)).kind,
        Kind::Unknown(3)
    );
    // Before 6.3 a `pt_regs` frame is a signal frame, and only it.
    assert!(Entry::from_bytes(entry_bytes(0, 0, 5, 0, 1, false)).signal);
    assert!(!Entry::from_bytes(entry_bytes(0, 0, 5, 0, 0, false)).signal);
}

/// An entry's 6 bytes with raw flag bits.
fn raw_entry(sp_offset: i16, flags: u16) -> [u8; 6] {
    let mut b = [0u8; 6];
    b[..2].copy_from_slice(&sp_offset.to_le_bytes());
    b[4..].copy_from_slice(&flags.to_le_bytes());
    b
}

#[test]
fn the_6_3_layout_has_signal_at_bit_10_and_end_at_bit_11() {
    let e = Entry::from_bytes_in(Layout::Linux6_3, raw_entry(8, 5 | (1 << 10)));
    assert_eq!(
        (e.sp_reg, e.kind, e.signal, e.end),
        (Reg::Sp, Kind::Call, true, false)
    );
    let e = Entry::from_bytes_in(Layout::Linux6_3, raw_entry(0, 1 << 11));
    assert_eq!((e.sp_reg, e.end, e.signal), (Reg::Undefined, true, false));
    let e = Entry::from_bytes_in(Layout::Linux6_3, raw_entry(0, 5 | (2 << 8)));
    assert_eq!((e.kind, e.signal), (Kind::RegsPartial, false));
}

#[test]
fn the_6_4_layout_has_a_3_bit_type_and_signal_at_bit_11() {
    let kind = |t: u16| Entry::from_bytes_in(Layout::Linux6_4, raw_entry(8, 5 | (t << 8))).kind;
    assert_eq!(
        [0, 1, 2, 3, 4, 5, 7].map(kind),
        [
            Kind::Undefined,
            Kind::EndOfStack,
            Kind::Call,
            Kind::Regs,
            Kind::RegsPartial,
            Kind::Unknown(5),
            Kind::Unknown(7)
        ]
    );
    let e = Entry::from_bytes_in(Layout::Linux6_4, raw_entry(0, 1 << 8));
    assert!(e.end, "END_OF_STACK ends the stack");
    let e = Entry::from_bytes_in(Layout::Linux6_4, raw_entry(16, 5 | (3 << 8) | (1 << 11)));
    assert_eq!((e.kind, e.signal, e.end), (Kind::Regs, true, false));
}

#[test]
fn layouts_by_version_and_their_unused_bits_refused() {
    assert_eq!(Layout::of_version(4, 14), Layout::Linux4_14);
    assert_eq!(Layout::of_version(6, 2), Layout::Linux4_14);
    assert_eq!(Layout::of_version(6, 3), Layout::Linux6_3);
    assert_eq!(Layout::of_version(6, 4), Layout::Linux6_4);
    assert_eq!(Layout::of_version(6, 12), Layout::Linux6_4);
    assert_eq!(Layout::of_version(7, 0), Layout::Linux6_4);
    let ips = ip_section(BASE, &[TEXT]);
    // Bit 11 is 6.3's `end` and 6.4's `signal`, but nothing before 6.3.
    let flags_11 = raw_entry(8, 5 | (2 << 8) | (1 << 11)).to_vec();
    assert!(OrcTable::from_sections_in(Layout::Linux4_14, BASE, &ips, &flags_11).is_err());
    assert!(OrcTable::from_sections_in(Layout::Linux6_4, BASE, &ips, &flags_11).is_ok());
    let flags_12 = raw_entry(8, 5 | (1 << 12)).to_vec();
    let err = OrcTable::from_sections_in(Layout::Linux6_4, BASE, &ips, &flags_12).unwrap_err();
    assert!(
        err.to_string().contains("Linux6_4 layout leaves clear"),
        "{err}"
    );
}

#[test]
fn an_address_finds_the_last_entry_at_or_before_it_whatever_the_order_stored() {
    // Stored out of order: the table sorts them.
    let ips = [TEXT + 0x100, TEXT, TEXT + 0x40];
    let entries: Vec<u8> = [8i16, 16, 24]
        .iter()
        .flat_map(|off| entry_bytes(*off, 0, 5, 0, 0, false))
        .collect();
    let t = OrcTable::from_sections(BASE, &ip_section(BASE, &ips), &entries).unwrap();
    assert_eq!(t.len(), 3);
    let sp_off = |ip| t.find(ip).map(|e| e.sp_offset);
    assert_eq!(sp_off(TEXT - 1), None, "before the first entry");
    assert_eq!(sp_off(TEXT), Some(16));
    assert_eq!(sp_off(TEXT + 0x3f), Some(16));
    assert_eq!(sp_off(TEXT + 0x40), Some(24));
    assert_eq!(sp_off(TEXT + 0x100), Some(8));
    assert_eq!(sp_off(TEXT + 0x5000), Some(8));
    assert!(t.covers(TEXT) && t.covers(TEXT + 0x100));
    assert!(!t.covers(TEXT + 0x101) && !t.covers(TEXT - 1));
}

#[test]
fn sections_of_different_lengths_are_refused_with_both_sizes() {
    let ips = ip_section(BASE, &[TEXT, TEXT + 4]);
    let one = entry_bytes(8, 0, 5, 0, 0, false);
    let err = OrcTable::from_sections(BASE, &ips, &one).unwrap_err();
    assert_eq!(
        err,
        Error::SizesDisagree {
            ip_bytes: 8,
            entry_bytes: 6
        }
    );
    assert!(
        err.to_string().contains("2 entries of 4") && err.to_string().contains("1 entries of 6")
    );
    // Not whole entries either.
    assert!(OrcTable::from_sections(BASE, &ips[..7], &[one, one].concat()).is_err());
}

#[test]
fn an_entry_with_a_bit_beyond_the_layout_is_an_unknown_format() {
    let ips = ip_section(BASE, &[TEXT, TEXT + 4]);
    let mut entries = [
        entry_bytes(8, 0, 5, 0, 0, false),
        entry_bytes(8, 0, 5, 0, 0, true),
    ]
    .concat();
    assert!(OrcTable::from_sections(BASE, &ips, &entries).is_ok());
    // Linux 6.3's `end`, one bit higher.
    entries[11] |= 1 << 3;
    let err = OrcTable::from_sections(BASE, &ips, &entries).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownFormat(why) if why.contains("entry 1 sets flag bits 0xf800, which the Linux4_14 layout leaves clear")),
        "{err}"
    );
}

#[test]
fn an_elf_without_orc_and_bytes_that_are_no_elf_say_so() {
    assert_eq!(
        OrcSections::from_elf(crate::guest_image::ELF).unwrap_err(),
        Error::NoSection(".orc_unwind_ip")
    );
    assert!(matches!(
        OrcSections::from_elf(&[0u8; 64]),
        Err(Error::NotElf(_))
    ));
    assert!(Error::NoSection(".orc_unwind")
        .to_string()
        .contains("CONFIG_UNWINDER_ORC"));
}

#[test]
fn the_version_banner_is_read_and_its_absence_told() {
    assert_eq!(
        version_in(b"\0\0Linux version 6.1.0-28-cloud-amd64 (debian-kernel@...)"),
        Some((6, 1))
    );
    assert_eq!(version_in(b"Linux version 10.12"), Some((10, 12)));
    assert_eq!(version_in(b"Linux version x"), None);
    assert_eq!(version_in(b"no banner"), None);
}
