//! Load-time facts about a kernel image that make it unbootable, refused before any vCPU runs.
//!
//! Without these checks such an image is loaded, and the guest then triple-faults at once (exit
//! 70), cannot run its first instruction (71), or spins in zeroed memory for ever: the user's
//! mistake would be blamed on the guest. Each refusal says which field is wrong and why.
//!
//! - **ELF** (32- or 64-bit) with a PVH entry note: every loaded segment lies at or above 1 MiB, clear of drvisor's
//!   boot data (GDT at 0x500, start info, zero page, command line at 0x20000) and of the
//!   legacy hole at 0xa0000; the PVH entry point lies inside a loaded segment.
//! - **bzImage** (Documentation/arch/x86/boot.rst): `setup_sects` is not 0, the protocol
//!   version is 2.12 to 2.255 (xloadflags exist from 2.12), `XLF_KERNEL_64` is set (drvisor
//!   enters at `startup_64`), there is a protected-mode payload after the setup sectors,
//!   `kernel_alignment` is a power of two, and `init_size` (the memory the kernel needs from
//!   its load address to decompress and run) is not 0 and fits in guest RAM.
//!
//! Pure: bytes and the RAM size in, a refusal out.

use object::read::elf::{FileHeader, ProgramHeader};

use crate::layout::HIMEM_START;

/// Why an image cannot boot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Insane {
    /// A loaded ELF segment overlaps the boot area below 1 MiB.
    #[error("ELF segment {index} at physical {start:#x}..{end:#x} overlaps drvisor's boot area below 1 MiB (boot GDT, start info, zero page, command line, the 0xa0000 hole); link the kernel at 1 MiB or above")]
    SegmentInBootArea {
        /// Program header index.
        index: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The entry point is in no loaded segment.
    #[error("the entry point {entry:#x} is outside every loaded segment, so the first instruction would run in empty memory")]
    EntryOutsideSegments {
        /// The PVH entry.
        entry: u64,
    },
    /// A bzImage header field that no bootable 64-bit kernel has.
    #[error("not a bootable 64-bit Linux bzImage: {0}")]
    BzImage(String),
    /// The kernel needs more RAM to decompress and run than the VM has.
    #[error("the kernel needs {needed_mib} MiB from its load address at 1 MiB (setup header init_size {init_size:#x}) but --mem is {mem_mib} MiB; raise --mem")]
    InitSizeTooBig {
        /// The header's `init_size`.
        init_size: u32,
        /// RAM needed, rounded up.
        needed_mib: u64,
        /// RAM the VM has.
        mem_mib: u64,
    },
}

const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at load address + 0x200.
const XLF_KERNEL_64: u16 = 1;

/// [`check`] on a kernel image, for the loader's guest memory (its one-line hook).
pub fn check_image(
    kernel: &super::KernelImage,
    mem: &vm_memory::GuestMemoryMmap,
) -> Result<(), super::Error> {
    check(kernel.bytes(), super::ram_size(mem)).map_err(|source| super::Error::Insane {
        what: kernel.name().to_owned(),
        source,
    })
}

/// Checks `bytes` (ELF or bzImage) for a VM with `ram` bytes of RAM. Other formats pass: the
/// loader classifies them.
pub fn check(bytes: &[u8], ram: u64) -> Result<(), Insane> {
    use object::read::elf::{ElfFile32, ElfFile64};
    if bytes.starts_with(b"\x7fELF") {
        if let Ok(elf) = ElfFile64::<object::Endianness>::parse(bytes) {
            return check_elf(elf.elf_header(), elf.endian(), bytes);
        }
        if let Ok(elf) = ElfFile32::<object::Endianness>::parse(bytes) {
            return check_elf(elf.elf_header(), elf.endian(), bytes);
        }
        return Ok(());
    }
    if bytes.get(0x202..0x206) == Some(b"HdrS") {
        return check_bzimage(bytes, ram);
    }
    Ok(())
}

fn check_elf<H: FileHeader>(header: &H, e: H::Endian, bytes: &[u8]) -> Result<(), Insane> {
    // Only an image with an entry drvisor boots from (the PVH note) is judged here: for any
    // other ELF the loader's own refusal ("no PVH note") is the one that helps.
    if pvh_entry(header, e, bytes).is_none() {
        return Ok(());
    }
    let Ok(phdrs) = header.program_headers(e, bytes) else {
        return Ok(()); // the loader refuses unreadable program headers itself
    };
    let mut loaded = Vec::new();
    for (index, ph) in phdrs.iter().enumerate() {
        let memsz: u64 = ph.p_memsz(e).into();
        if ph.p_type(e) != object::elf::PT_LOAD || memsz == 0 {
            continue;
        }
        let start: u64 = ph.p_paddr(e).into();
        let end = start.saturating_add(memsz);
        if start < HIMEM_START {
            return Err(Insane::SegmentInBootArea { index, start, end });
        }
        loaded.push(start..end);
    }
    let entry = pvh_entry(header, e, bytes).unwrap_or_default();
    if !loaded.iter().any(|r| r.contains(&entry)) {
        return Err(Insane::EntryOutsideSegments { entry });
    }
    Ok(())
}

/// The `XEN_ELFNOTE_PHYS32_ENTRY` descriptor (4 or 8 bytes, little or big endian as the file).
fn pvh_entry<H: FileHeader>(header: &H, e: H::Endian, bytes: &[u8]) -> Option<u64> {
    let phdrs = header.program_headers(e, bytes).ok()?;
    for ph in phdrs {
        let Ok(Some(mut notes)) = ph.notes(e, bytes) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(e) == XEN_ELFNOTE_PHYS32_ENTRY {
                let desc = note.desc();
                let big = header.is_big_endian();
                return match desc.len() {
                    n if n >= 8 => {
                        let b: [u8; 8] = desc[..8].try_into().ok()?;
                        Some(if big {
                            u64::from_be_bytes(b)
                        } else {
                            u64::from_le_bytes(b)
                        })
                    }
                    n if n >= 4 => {
                        let b: [u8; 4] = desc[..4].try_into().ok()?;
                        Some(u64::from(if big {
                            u32::from_be_bytes(b)
                        } else {
                            u32::from_le_bytes(b)
                        }))
                    }
                    _ => None,
                };
            }
        }
    }
    None
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn check_bzimage(bytes: &[u8], ram: u64) -> Result<(), Insane> {
    let bad = |why: String| Err(Insane::BzImage(why));
    let setup_sects = bytes.get(0x1f1).copied().unwrap_or(0);
    if setup_sects == 0 {
        return bad("setup_sects is 0 (an image older than boot protocol 2.0)".into());
    }
    let version = le16(bytes, 0x206);
    if !(0x020c..=0x02ff).contains(&version) {
        return bad(format!(
            "boot protocol version {}.{} ({version:#06x}); drvisor's 64-bit entry needs 2.12 or later",
            version >> 8,
            version & 0xff
        ));
    }
    if le16(bytes, 0x236) & XLF_KERNEL_64 == 0 {
        return bad("xloadflags lacks XLF_KERNEL_64: the kernel has no 64-bit entry".into());
    }
    let setup = (usize::from(setup_sects) + 1) * 512;
    if bytes.len() <= setup {
        return bad(format!(
            "no protected-mode kernel after the {setup} bytes of setup (the file has {})",
            bytes.len()
        ));
    }
    let alignment = le32(bytes, 0x230);
    if !alignment.is_power_of_two() {
        return bad(format!(
            "kernel_alignment {alignment:#x} is not a power of two"
        ));
    }
    let init_size = le32(bytes, 0x260);
    if init_size == 0 {
        return bad("init_size is 0".into());
    }
    let needed = HIMEM_START + u64::from(init_size);
    if needed > ram {
        return Err(Insane::InitSizeTooBig {
            init_size,
            needed_mib: needed.div_ceil(1 << 20),
            mem_mib: ram >> 20,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 64 << 20;

    /// A bzImage header that passes every check.
    fn bz() -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512 + 16];
        b[0x1f1] = 4;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes());
        b
    }

    fn with(at: usize, value: &[u8]) -> Vec<u8> {
        let mut b = bz();
        b[at..at + value.len()].copy_from_slice(value);
        b
    }

    #[test]
    fn bzimage_table() {
        let table: &[(Vec<u8>, Option<&str>)] = &[
            (bz(), None),
            (with(0x1f1, &[0]), Some("setup_sects is 0")),
            (
                with(0x206, &0xffffu16.to_le_bytes()),
                Some("version 255.255"),
            ),
            (
                with(0x206, &0x020bu16.to_le_bytes()),
                Some("needs 2.12 or later"),
            ),
            (with(0x236, &0u16.to_le_bytes()), Some("XLF_KERNEL_64")),
            (bz()[..5 * 512].to_vec(), Some("no protected-mode kernel")),
            (
                with(0x230, &0u32.to_le_bytes()),
                Some("kernel_alignment 0x0"),
            ),
            (
                with(0x230, &0x3000u32.to_le_bytes()),
                Some("not a power of two"),
            ),
            (with(0x260, &0u32.to_le_bytes()), Some("init_size is 0")),
            (with(0x260, &u32::MAX.to_le_bytes()), Some("raise --mem")),
            (
                with(0x260, &((63u32 << 20) + 1).to_le_bytes()),
                Some("needs 65 MiB"),
            ),
            (with(0x260, &(63u32 << 20).to_le_bytes()), None),
        ];
        for (image, want) in table {
            match (check(image, RAM), want) {
                (Ok(()), None) => {}
                (Err(e), Some(needle)) => assert!(e.to_string().contains(needle), "{e}"),
                (got, _) => panic!("{got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn the_embedded_guest_is_sane() {
        assert_eq!(check(crate::guest_image::ELF, RAM), Ok(()));
    }

    /// The embedded guest with program header `i`'s p_paddr (64-bit ELF, 56-byte headers at 64).
    fn guest_with_paddr(i: usize, paddr: u64) -> Vec<u8> {
        let mut b = crate::guest_image::ELF.to_vec();
        let at = 64 + i * 56 + 24;
        b[at..at + 8].copy_from_slice(&paddr.to_le_bytes());
        b
    }

    #[test]
    fn segments_over_the_boot_area_are_refused() {
        for paddr in [0, 0x500, 0x7000, 0x20000, 0xa0000, 0xff000] {
            let e = check(&guest_with_paddr(2, paddr), RAM).unwrap_err();
            assert!(
                matches!(e, Insane::SegmentInBootArea { index: 2, .. }),
                "{e}"
            );
        }
    }

    #[test]
    fn an_elf_without_a_pvh_note_is_left_to_the_loader() {
        let mut b = guest_with_paddr(2, 0);
        // Rename the note ("Xen" -> "Xem"): no PVH entry any more.
        let at = b.windows(4).position(|w| w == b"Xen\0").unwrap();
        b[at + 2] = b'm';
        assert_eq!(check(&b, RAM), Ok(()));
    }

    #[test]
    fn an_entry_outside_every_segment_is_refused() {
        // Move the text segment away from the PVH entry at 0x100000.
        let e = check(&guest_with_paddr(0, 0x300_0000), RAM).unwrap_err();
        assert_eq!(e, Insane::EntryOutsideSegments { entry: 0x10_0000 });
    }
}
