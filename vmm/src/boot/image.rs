//! A kernel image in host memory: its bytes, where it came from, its format and, for ELF and
//! multiboot images, what goes where.
//!
//! Formats are tried in QEMU's `-kernel` order: a bzImage by its setup header, then an ELF's
//! Xen PVH note, then a multiboot header. Every refusal names the real reason.

use std::io::Cursor;
use std::path::Path;

use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::elf::{ElfClass, ElfKernel, Segment};
use super::multiboot;
use super::Error;
use crate::layout::HIMEM_START;

/// The formats drvisor boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF32 or ELF64 booted through its Xen PVH note.
    Pvh(ElfClass),
    /// Multiboot v1: an ELF32/ELF64 (`Some(class)`) or the header's own addresses (`None`).
    Multiboot(Option<ElfClass>),
    /// Linux bzImage.
    BzImage,
}

/// A kernel image read into memory.
pub struct KernelImage {
    name: String,
    bytes: Vec<u8>,
    format: KernelFormat,
    /// Where the image's bytes go (PVH and multiboot; empty for a bzImage).
    segments: Vec<Segment>,
    /// The 32-bit entry (PVH and multiboot).
    entry: u64,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// `HdrS` at offset 0x202 marks a Linux boot-protocol setup header.
const SETUP_HEADER_MAGIC: &[u8] = b"HdrS";

impl KernelImage {
    /// Takes `bytes` as a kernel named `name` (used in messages).
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self, Error> {
        let name = name.into();
        let refuse = |reason: String| Error::NotBootable {
            what: name.clone(),
            reason,
        };
        let mut image = KernelImage {
            name: name.clone(),
            bytes,
            format: KernelFormat::BzImage,
            segments: Vec::new(),
            entry: 0,
        };
        let bytes = &image.bytes;
        if bytes.get(0x202..0x206) == Some(SETUP_HEADER_MAGIC) {
            return Ok(image);
        }
        let elf = if bytes.starts_with(ELF_MAGIC) {
            Some(ElfKernel::parse(bytes).map_err(|e| refuse(format!("a malformed ELF: {e}")))?)
        } else {
            None
        };
        if let Some(elf) = &elf {
            if let Some(entry) = elf.pvh_entry {
                image.format = KernelFormat::Pvh(elf.class);
                image.segments = elf.segments.clone();
                image.entry = entry;
                return image.checked();
            }
        }
        let header = multiboot::Header::find(bytes).map_err(&refuse)?;
        match (header, elf) {
            (
                Some(multiboot::Header {
                    aout: Some(aout), ..
                }),
                _,
            ) => {
                image.format = KernelFormat::Multiboot(None);
                image.segments = vec![aout.segment];
                image.entry = aout.entry;
            }
            (Some(_), Some(elf)) => {
                image.format = KernelFormat::Multiboot(Some(elf.class));
                image.segments = elf.segments;
                image.entry = elf.entry;
            }
            (Some(_), None) => {
                return Err(refuse(
                    "a multiboot image that is not an ELF and has no load addresses in its \
                     header (flag 16)"
                        .into(),
                ))
            }
            (None, Some(elf)) => {
                return Err(refuse(format!(
                    "{} without PVH or multiboot: it has neither a Xen PVH entry note \
                     (XEN_ELFNOTE_PHYS32_ENTRY) nor a multiboot header in its first 8 KiB",
                    elf.class
                )))
            }
            (None, None) => {
                return Err(refuse(
                    "not a kernel drvisor can boot: expected an ELF with a Xen PVH note, a \
                     multiboot image or a Linux bzImage"
                        .into(),
                ))
            }
        }
        image.checked()
    }

    /// Refuses what no protocol here can start: nothing to load, segments in drvisor's boot
    /// area below 1 MiB or above 4 GiB, or a 32-bit entry outside the image.
    fn checked(self) -> Result<Self, Error> {
        let refuse = |reason: String| Error::NotBootable {
            what: self.name.clone(),
            reason,
        };
        if self.segments.is_empty() {
            return Err(refuse(
                "an ELF with nothing to load (no PT_LOAD segment)".into(),
            ));
        }
        for s in &self.segments {
            if s.paddr < HIMEM_START {
                return Err(refuse(format!(
                    "loads a segment at {:#x}, below 1 MiB, where drvisor keeps boot data",
                    s.paddr
                )));
            }
            if s.paddr.saturating_add(s.memsz) > 1 << 32 {
                return Err(refuse(format!(
                    "loads a segment at {:#x}, beyond the 4 GiB a 32-bit entry can reach",
                    s.paddr
                )));
            }
        }
        if self.entry >= 1 << 32 {
            return Err(refuse(format!(
                "its entry {:#x} is beyond 4 GiB: a 32-bit entry cannot reach it",
                self.entry
            )));
        }
        Ok(self)
    }

    /// Reads the kernel at `path`. The caller reports I/O errors; this only classifies.
    pub fn from_file(path: &Path) -> std::io::Result<Result<Self, Error>> {
        let bytes = std::fs::read(path)?;
        Ok(Self::from_bytes(path.display().to_string(), bytes))
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The image's format.
    pub fn format(&self) -> KernelFormat {
        self.format
    }

    /// The 32-bit entry of a PVH or multiboot image.
    pub(super) fn entry(&self) -> u64 {
        self.entry
    }

    /// Loads a bzImage into `mem` at 1 MiB with linux-loader's loader `L`.
    pub(super) fn load_with<L: KernelLoader>(
        &self,
        mem: &GuestMemoryMmap,
    ) -> Result<KernelLoaderResult, Error> {
        L::load(
            mem,
            None,
            &mut Cursor::new(&self.bytes),
            Some(GuestAddress(HIMEM_START)),
        )
        .map_err(|source| Error::Loader {
            what: self.name.clone(),
            source,
        })
    }

    /// Copies a PVH or multiboot image's segments into `mem` and zeroes the rest of each
    /// (`.bss`). [`Self::check_fits`] has made sure they fit.
    pub(super) fn load_segments(&self, mem: &GuestMemoryMmap) -> Result<(), Error> {
        let write = |bytes: &[u8], addr: u64| {
            mem.write_slice(bytes, GuestAddress(addr))
                .map_err(|e| Error::BootParams(e.to_string()))
        };
        for s in &self.segments {
            let from = s.offset as usize;
            write(&self.bytes[from..from + s.filesz as usize], s.paddr)?;
            // Zero the rest in chunks, so a large .bss needs no large buffer.
            let zeros = vec![0u8; 1 << 16];
            let mut at = s.filesz;
            while at < s.memsz {
                let n = (s.memsz - at).min(zeros.len() as u64);
                write(&zeros[..n as usize], s.paddr + at)?;
                at += n;
            }
        }
        Ok(())
    }

    /// The highest guest-physical byte the image occupies once loaded, plus one.
    pub fn load_end(&self) -> Result<u64, Error> {
        match self.format {
            KernelFormat::BzImage => {
                // The real-mode setup (setup_sects + 1 sectors; 0 means 4) stays behind; the
                // rest lands at 1 MiB.
                let sects = match self.bytes.get(0x1f1) {
                    Some(0) | None => 4,
                    Some(&n) => u64::from(n),
                };
                let setup = (sects + 1) * 512;
                Ok(HIMEM_START + (self.bytes.len() as u64).saturating_sub(setup))
            }
            KernelFormat::Pvh(_) | KernelFormat::Multiboot(_) => Ok(self
                .segments
                .iter()
                .map(|s| s.paddr + s.memsz)
                .max()
                .unwrap_or(HIMEM_START)),
        }
    }

    /// The guest-physical ranges the kernel executes from once loaded: the executable
    /// segments, or the whole protected-mode image of a bzImage (which decompresses itself, so
    /// no finer map is known).
    pub fn executable_ranges(&self) -> Vec<std::ops::Range<u64>> {
        match self.format {
            KernelFormat::BzImage => match self.load_end() {
                Ok(end) => std::iter::once(HIMEM_START..end).collect(),
                Err(_) => Vec::new(),
            },
            KernelFormat::Pvh(_) | KernelFormat::Multiboot(_) => self
                .segments
                .iter()
                .filter(|s| s.exec)
                .map(|s| s.paddr..s.paddr.saturating_add(s.memsz))
                .collect(),
        }
    }

    /// Whether the image is booted through a Xen PVH note.
    pub fn has_pvh_note(&self) -> bool {
        matches!(self.format, KernelFormat::Pvh(_))
    }

    /// Refuses an image that would not fit in `mem`.
    pub(super) fn check_fits(&self, mem: &GuestMemoryMmap) -> Result<(), Error> {
        let ram = super::ram_size(mem);
        let end = self.load_end()?;
        if end > crate::layout::low_ram_end(ram) {
            return Err(Error::TooBig {
                what: self.name.clone(),
                needed_mib: end.div_ceil(1 << 20),
                mem_mib: ram >> 20,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_elf::{build, build_with, LoadSegment, NotePlace};

    fn mb_header(flags: u32) -> Vec<u8> {
        let sum = 0u32.wrapping_sub(multiboot::HEADER_MAGIC.wrapping_add(flags));
        [multiboot::HEADER_MAGIC, flags, sum]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    fn reason(bytes: Vec<u8>) -> String {
        match KernelImage::from_bytes("k", bytes) {
            Err(e) => e.to_string(),
            Ok(i) => panic!("accepted as {:?}", i.format()),
        }
    }

    #[test]
    fn each_format_is_recognised() {
        for class in [ElfClass::Elf32, ElfClass::Elf64] {
            let pvh = build(class, 0x10_0000, &[0xf4], Some(0x10_0000), &[]);
            assert_eq!(
                KernelImage::from_bytes("k", pvh).unwrap().format(),
                KernelFormat::Pvh(class)
            );
            let section_note = build_with(
                class,
                0x10_0000,
                &[LoadSegment {
                    paddr: 0x10_0000,
                    bytes: &[0xf4],
                    memsz: 1,
                }],
                Some((0x10_0000, NotePlace::Section)),
                &[],
            );
            assert_eq!(
                KernelImage::from_bytes("k", section_note).unwrap().format(),
                KernelFormat::Pvh(class)
            );
            let mb = build(class, 0x10_0000, &[0xf4], None, &mb_header(0));
            assert_eq!(
                KernelImage::from_bytes("k", mb).unwrap().format(),
                KernelFormat::Multiboot(Some(class))
            );
        }
    }

    #[test]
    fn refusals_name_the_real_reason() {
        let plain32 = build(ElfClass::Elf32, 0x10_0000, &[0xf4], None, &[]);
        assert!(reason(plain32).contains("ELF32 without PVH or multiboot"));
        let plain64 = build(ElfClass::Elf64, 0x10_0000, &[0xf4], None, &[]);
        assert!(reason(plain64).contains("ELF64 without PVH or multiboot"));
        let video = build(ElfClass::Elf32, 0x10_0000, &[0xf4], None, &mb_header(4));
        assert!(reason(video).contains("multiboot header asks for video mode"));
        let low = build(ElfClass::Elf32, 0x8000, &[0xf4], Some(0x8000), &[]);
        assert!(reason(low).contains("below 1 MiB"));
        let mut raw = mb_header(0);
        raw.resize(512, 0);
        assert!(reason(raw).contains("not an ELF and has no load addresses"));
        assert!(reason(vec![0; 600]).contains("not a kernel drvisor can boot"));
        let mut broken = build(
            ElfClass::Elf64,
            0x10_0000,
            &[0xf4; 64],
            Some(0x10_0000),
            &[],
        );
        broken.truncate(70);
        assert!(reason(broken).contains("malformed ELF"));
    }
}
