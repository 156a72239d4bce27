//! ELF32 and ELF64 kernels: their loadable segments and their Xen PVH entry note.
//!
//! linux-loader's ELF loader reads ELF64 only and finds the PVH note only in a `PT_NOTE`
//! segment. QEMU's `-kernel` also boots ELF32 files and finds the note in a `.note` section, so
//! this module reads both classes with the `object` crate and looks in both places.

use object::elf::{EM_386, EM_X86_64, PF_X, PT_LOAD, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical entry of a PVH kernel (xen/include/public/elfnote.h).
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// ELF32 or ELF64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

impl std::fmt::Display for ElfClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ElfClass::Elf32 => "ELF32",
            ElfClass::Elf64 => "ELF64",
        })
    }
}

/// A `PT_LOAD` segment: `filesz` bytes from file offset `offset` go to guest-physical `paddr`,
/// and the rest up to `memsz` is zeroed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address (`p_paddr`, as QEMU and linux-loader use).
    pub paddr: u64,
    /// Offset of the bytes in the file.
    pub offset: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
    /// Bytes in memory.
    pub memsz: u64,
    /// Executable (`PF_X`).
    pub exec: bool,
}

impl Segment {
    /// The guest-physical bytes it occupies once loaded.
    pub fn span(&self) -> std::ops::Range<u64> {
        self.paddr..self.paddr.saturating_add(self.memsz)
    }

    /// Whether it occupies any byte of `range`.
    pub fn overlaps(&self, range: &std::ops::Range<u64>) -> bool {
        let span = self.span();
        span.start < range.end && range.start < span.end
    }
}

/// Why a file is no ELF kernel drvisor can read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// `e_ident[EI_CLASS]` is neither ELFCLASS32 nor ELFCLASS64.
    #[error("unknown ELF class (byte 4 is neither 1 for ELF32 nor 2 for ELF64)")]
    UnknownClass,
    /// The headers do not parse (cut short, bad sizes...).
    #[error(transparent)]
    Headers(object::read::Error),
    /// Not an x86 file.
    #[error("machine {0} is not x86 (EM_386 or EM_X86_64); build the kernel for x86")]
    NotX86(u16),
    /// A `PT_LOAD` segment names more bytes than the file has.
    #[error("segment at {paddr:#x} claims bytes beyond the file (the file is cut short?)")]
    SegmentBeyondFile {
        /// The segment's load address.
        paddr: u64,
    },
}

/// What drvisor needs to know of an ELF kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfKernel {
    /// Its class.
    pub class: ElfClass,
    /// `e_entry`.
    pub entry: u64,
    /// Its `PT_LOAD` segments.
    pub segments: Vec<Segment>,
    /// The PVH entry, from a `PT_NOTE` segment or else a `SHT_NOTE` section.
    pub pvh_entry: Option<u64>,
}

impl ElfKernel {
    /// Reads an x86 ELF32 or ELF64 image. The error says what is malformed.
    pub fn parse(bytes: &[u8]) -> Result<ElfKernel, ElfError> {
        // e_ident[EI_CLASS] sits at byte 4.
        match bytes.get(4) {
            Some(&object::elf::ELFCLASS32) => {
                parse_as::<object::elf::FileHeader32<Endianness>>(bytes, ElfClass::Elf32)
            }
            Some(&object::elf::ELFCLASS64) => {
                parse_as::<object::elf::FileHeader64<Endianness>>(bytes, ElfClass::Elf64)
            }
            _ => Err(ElfError::UnknownClass),
        }
    }

    /// One past the highest guest-physical byte a segment occupies.
    pub fn load_end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.paddr.saturating_add(s.memsz))
            .max()
            .unwrap_or(0)
    }
}

fn parse_as<H: FileHeader<Endian = Endianness>>(
    bytes: &[u8],
    class: ElfClass,
) -> Result<ElfKernel, ElfError> {
    let header = H::parse(bytes).map_err(ElfError::Headers)?;
    let e = header.endian().map_err(ElfError::Headers)?;
    let machine = header.e_machine(e);
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(ElfError::NotX86(machine));
    }
    let phdrs = header
        .program_headers(e, bytes)
        .map_err(ElfError::Headers)?;
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for ph in phdrs {
        match ph.p_type(e) {
            PT_LOAD if ph.p_memsz(e).into() > 0 => {
                let seg = Segment {
                    paddr: ph.p_paddr(e).into(),
                    offset: ph.p_offset(e).into(),
                    filesz: ph.p_filesz(e).into(),
                    memsz: ph.p_memsz(e).into(),
                    exec: ph.p_flags(e) & PF_X != 0,
                };
                if seg.filesz > seg.memsz
                    || seg.offset.saturating_add(seg.filesz) > bytes.len() as u64
                {
                    return Err(ElfError::SegmentBeyondFile { paddr: seg.paddr });
                }
                segments.push(seg);
            }
            PT_NOTE if pvh_entry.is_none() => {
                if let Ok(Some(notes)) = ph.notes(e, bytes) {
                    pvh_entry = find_pvh_entry::<H>(notes, e);
                }
            }
            _ => {}
        }
    }
    if pvh_entry.is_none() {
        // Linkers that emit no PT_NOTE still keep the note in a section; QEMU looks there too.
        if let Ok(sections) = header.sections(e, bytes) {
            pvh_entry = sections
                .iter()
                .filter_map(|sh| sh.notes(e, bytes).ok().flatten())
                .find_map(|notes| find_pvh_entry::<H>(notes, e));
        }
    }
    Ok(ElfKernel {
        class,
        entry: header.e_entry(e).into(),
        segments,
        pvh_entry,
    })
}

/// The note's descriptor is the entry address: 4 bytes, or 8 where Linux emits `_ASM_PTR` on
/// 64-bit; the low 32 bits are the address either way (little-endian).
fn find_pvh_entry<H: FileHeader<Endian = Endianness>>(
    mut notes: object::read::elf::NoteIterator<'_, H>,
    e: Endianness,
) -> Option<u64> {
    while let Ok(Some(note)) = notes.next() {
        if note.name() == b"Xen" && note.n_type(e) == XEN_ELFNOTE_PHYS32_ENTRY {
            let desc = note.desc();
            let low: [u8; 4] = desc.get(..4)?.try_into().ok()?;
            return Some(u64::from(u32::from_le_bytes(low)));
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal little-endian x86 ELF: one PT_LOAD of `code` at `paddr`, entry at `paddr`,
    /// and optionally the PVH note in a PT_NOTE segment.
    pub(crate) fn tiny_elf(class: ElfClass, paddr: u64, code: &[u8], pvh: Option<u32>) -> Vec<u8> {
        crate::boot::test_elf::build(class, paddr, code, pvh, &[])
    }

    #[test]
    fn both_classes_read_their_segment_and_note() {
        for class in [ElfClass::Elf32, ElfClass::Elf64] {
            let elf = ElfKernel::parse(&tiny_elf(class, 0x10_0000, &[0xf4; 16], Some(0x10_0004)))
                .unwrap();
            assert_eq!(elf.class, class);
            assert_eq!(elf.entry, 0x10_0000);
            assert_eq!(elf.pvh_entry, Some(0x10_0004));
            assert_eq!(elf.segments.len(), 1);
            assert_eq!(elf.load_end(), 0x10_0010);
            assert!(elf.segments[0].exec);
        }
    }

    #[test]
    fn no_note_means_no_pvh_entry() {
        let elf = ElfKernel::parse(&tiny_elf(ElfClass::Elf32, 0x10_0000, &[0xf4], None)).unwrap();
        assert_eq!(elf.pvh_entry, None);
    }

    #[test]
    fn truncated_files_are_malformed() {
        let bytes = tiny_elf(ElfClass::Elf64, 0x10_0000, &[0xf4; 64], None);
        // Headers end at 0x78 and the code starts at 0x80: cut it short.
        let err = ElfKernel::parse(&bytes[..0x90]).unwrap_err();
        assert!(
            matches!(err, ElfError::SegmentBeyondFile { paddr: 0x10_0000 }),
            "{err}"
        );
        assert!(err.to_string().contains("beyond the file"), "{err}");
        assert!(matches!(
            ElfKernel::parse(&bytes[..20]),
            Err(ElfError::Headers(_))
        ));
    }

    #[test]
    fn an_unknown_class_or_machine_is_named() {
        let mut bytes = tiny_elf(ElfClass::Elf64, 0x10_0000, &[0xf4], None);
        // e_machine at offset 18, little-endian: EM_ARM (40).
        bytes[18..20].copy_from_slice(&40u16.to_le_bytes());
        assert!(matches!(
            ElfKernel::parse(&bytes),
            Err(ElfError::NotX86(40))
        ));
        bytes[4] = 7;
        assert!(matches!(
            ElfKernel::parse(&bytes),
            Err(ElfError::UnknownClass)
        ));
    }
}
