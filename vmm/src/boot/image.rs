//! A kernel image in host memory: its bytes, where it came from, its format and, for ELF and
//! multiboot images, what goes where.
//!
//! Formats are tried in QEMU's `-kernel` order: a bzImage by its setup header, then an ELF's
//! Xen PVH note, then a multiboot header. Every refusal names the real reason.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::Path;

use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::elf::{ElfClass, ElfError, ElfKernel, Segment};
use super::multiboot::{self, MultibootError};
use super::Error;
use crate::layout::{HIMEM_START, MULTIBOOT_KEEP_OUT};

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
    /// Borrowed for the embedded test guest (no copy at start), owned for a file's.
    bytes: std::sync::Arc<Cow<'static, [u8]>>,
    format: KernelFormat,
    /// Where the image's bytes go (PVH and multiboot; empty for a bzImage).
    segments: Vec<Segment>,
    /// The 32-bit entry (PVH and multiboot).
    entry: u64,
}

/// Why a file is no kernel drvisor can boot. The messages follow the file's name.
#[derive(Debug, thiserror::Error)]
pub enum Unbootable {
    /// It starts like an ELF, but is a malformed one.
    #[error("a malformed ELF: {0}")]
    MalformedElf(#[source] ElfError),
    /// Its multiboot header cannot be honoured.
    #[error(transparent)]
    Multiboot(MultibootError),
    /// A multiboot header, no ELF and no load addresses.
    #[error(
        "a multiboot image that is not an ELF and has no load addresses in its header (flag 16)"
    )]
    MultibootWithoutAddresses,
    /// An ELF with neither entry drvisor knows.
    #[error("{0} without PVH or multiboot: it has neither a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) nor a multiboot header in its first 8 KiB")]
    ElfWithoutEntry(ElfClass),
    /// No format drvisor knows.
    #[error("not a kernel drvisor can boot: expected an ELF with a Xen PVH note, a multiboot image or a Linux bzImage")]
    UnknownFormat,
    /// No `PT_LOAD` segment.
    #[error("an ELF with nothing to load (no PT_LOAD segment)")]
    NothingToLoad,
    /// A PVH segment in the boot area.
    #[error(
        "loads a segment at {0:#x}, below 1 MiB, where drvisor keeps boot data for a PVH kernel"
    )]
    SegmentBelow1M(u64),
    /// A multiboot segment over what must stay below 1 MiB.
    #[error("loads a segment at {start:#x}..{end:#x}, over {what} ({range:#x?}); link it elsewhere below 0x9fc00, or at 1 MiB or above")]
    SegmentOverLowMemory {
        /// The segment's first byte.
        start: u64,
        /// Its end (exclusive).
        end: u64,
        /// What it would overwrite.
        what: &'static str,
        /// Where that is.
        range: std::ops::Range<u64>,
    },
    /// A segment a 32-bit entry cannot reach.
    #[error("loads a segment at {0:#x}, beyond the 4 GiB a 32-bit entry can reach")]
    SegmentAbove4G(u64),
    /// An entry above 4 GiB.
    #[error("its entry {0:#x} is beyond 4 GiB: a 32-bit entry cannot reach it")]
    EntryAbove4G(u64),
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// `HdrS` at offset 0x202 marks a Linux boot-protocol setup header.
const SETUP_HEADER_MAGIC: &[u8] = b"HdrS";

impl KernelImage {
    /// Takes `bytes` (a file's, or bytes built into drvisor) as a kernel named `name` (used in
    /// messages).
    pub fn from_bytes(
        name: impl Into<String>,
        bytes: impl Into<Cow<'static, [u8]>>,
    ) -> Result<Self, Error> {
        let name = name.into();
        let refuse = |reason: Unbootable| Error::NotBootable {
            what: name.clone(),
            reason,
        };
        let mut image = KernelImage {
            name: name.clone(),
            bytes: std::sync::Arc::new(bytes.into()),
            format: KernelFormat::BzImage,
            segments: Vec::new(),
            entry: 0,
        };
        let bytes = &image.bytes;
        if bytes.get(0x202..0x206) == Some(SETUP_HEADER_MAGIC) {
            return Ok(image);
        }
        let elf = if bytes.starts_with(ELF_MAGIC) {
            Some(ElfKernel::parse(bytes).map_err(|e| refuse(Unbootable::MalformedElf(e)))?)
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
        let header =
            multiboot::Header::find(bytes).map_err(|e| refuse(Unbootable::Multiboot(e)))?;
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
            (Some(_), None) => return Err(refuse(Unbootable::MultibootWithoutAddresses)),
            (None, Some(elf)) => return Err(refuse(Unbootable::ElfWithoutEntry(elf.class))),
            (None, None) => return Err(refuse(Unbootable::UnknownFormat)),
        }
        image.checked()
    }

    /// Refuses what no protocol here can start: nothing to load, segments in drvisor's boot
    /// area below 1 MiB or above 4 GiB, or a 32-bit entry outside the image.
    fn checked(self) -> Result<Self, Error> {
        let refuse = |reason: Unbootable| Error::NotBootable {
            what: self.name.clone(),
            reason,
        };
        if self.segments.is_empty() {
            return Err(refuse(Unbootable::NothingToLoad));
        }
        for s in &self.segments {
            if let KernelFormat::Multiboot(_) = self.format {
                let over = MULTIBOOT_KEEP_OUT.iter().find(|(_, r)| s.overlaps(r));
                if let Some((what, range)) = over {
                    return Err(refuse(Unbootable::SegmentOverLowMemory {
                        start: s.paddr,
                        end: s.span().end,
                        what,
                        range: range.clone(),
                    }));
                }
            } else if s.paddr < HIMEM_START {
                return Err(refuse(Unbootable::SegmentBelow1M(s.paddr)));
            }
            if s.span().end > 1 << 32 {
                return Err(refuse(Unbootable::SegmentAbove4G(s.paddr)));
            }
        }
        if self.entry >= 1 << 32 {
            return Err(refuse(Unbootable::EntryAbove4G(self.entry)));
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

    /// The image's bytes, shared: for reading the image on another thread while it boots.
    pub fn shared_bytes(&self) -> std::sync::Arc<Cow<'static, [u8]>> {
        self.bytes.clone()
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
            &mut Cursor::new(&self.bytes[..]),
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
                .map_err(Error::guest_write("a kernel segment"))
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

    /// Whether a loaded segment overlaps `range`.
    pub(super) fn overlaps(&self, range: &std::ops::Range<u64>) -> bool {
        self.segments.iter().any(|s| s.overlaps(range))
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
                .map(Segment::span)
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

    /// A multiboot kernel may load anywhere in low RAM but the first page and the EBDA/BIOS
    /// area; one over the boot information gets it above itself, with its modules after it.
    #[test]
    fn multiboot_kernels_may_load_below_1_mib() {
        use vm_memory::{Bytes, GuestAddress};
        let image = |at| build(ElfClass::Elf32, at, &[0xf4; 0x5000], None, &mb_header(0));
        let low = KernelImage::from_bytes("k", image(0x8000)).expect("accepted at 0x8000");
        assert!(low.overlaps(&(crate::layout::BOOT_INFO..crate::layout::BOOT_INFO_END)));
        let mem = crate::memory::create(64).unwrap();
        let entry = crate::boot::load(&mem, &low, Some(&[7; 100]), &[], "x").unwrap();
        let crate::boot::Entry::Multiboot { info, .. } = entry else {
            panic!("{entry:?}")
        };
        assert!(
            (HIMEM_START..HIMEM_START + 0x4000).contains(&info),
            "the information above the kernel and 1 MiB: {info:#x}"
        );
        let code: u8 = mem.read_obj(GuestAddress(0xc000)).unwrap();
        assert_eq!(code, 0xf4, "the kernel is not overwritten");
        let mods_addr: u32 = mem.read_obj(GuestAddress(info + 24)).unwrap();
        let module: u32 = mem.read_obj(GuestAddress(u64::from(mods_addr))).unwrap();
        assert!(u64::from(module) >= HIMEM_START + 0x4000, "{module:#x}");
        for (at, what) in [(0x800, "boot GDT"), (0x9f000, "EBDA")] {
            let (why, text) = refused(image(at));
            assert!(
                matches!(why, Unbootable::SegmentOverLowMemory { start, .. } if start == at),
                "{text}"
            );
            assert!(text.contains(what), "{text}");
        }
    }

    /// Why `bytes` is refused, and the whole message.
    fn refused(bytes: Vec<u8>) -> (Unbootable, String) {
        match KernelImage::from_bytes("k", bytes) {
            Err(e) => {
                let text = e.to_string();
                match e {
                    Error::NotBootable { what, reason } => {
                        assert_eq!(what, "k");
                        (reason, text)
                    }
                    other => panic!("refused, but not as unbootable: {other}"),
                }
            }
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
        let (why, text) = refused(plain32);
        assert!(matches!(why, Unbootable::ElfWithoutEntry(ElfClass::Elf32)));
        assert!(text.contains("ELF32 without PVH or multiboot"), "{text}");
        let plain64 = build(ElfClass::Elf64, 0x10_0000, &[0xf4], None, &[]);
        let (why, text) = refused(plain64);
        assert!(matches!(why, Unbootable::ElfWithoutEntry(ElfClass::Elf64)));
        assert!(text.contains("ELF64 without PVH or multiboot"), "{text}");
        let video = build(ElfClass::Elf32, 0x10_0000, &[0xf4], None, &mb_header(4));
        let (why, text) = refused(video);
        assert!(matches!(
            why,
            Unbootable::Multiboot(MultibootError::VideoMode)
        ));
        assert!(
            text.contains("multiboot header asks for video mode"),
            "{text}"
        );
        let low = build(ElfClass::Elf32, 0x8000, &[0xf4], Some(0x8000), &[]);
        let (why, text) = refused(low);
        assert!(matches!(why, Unbootable::SegmentBelow1M(0x8000)));
        assert!(text.contains("below 1 MiB"), "{text}");
        let mut raw = mb_header(0);
        raw.resize(512, 0);
        let (why, text) = refused(raw);
        assert!(matches!(why, Unbootable::MultibootWithoutAddresses));
        assert!(
            text.contains("not an ELF and has no load addresses"),
            "{text}"
        );
        let (why, text) = refused(vec![0; 600]);
        assert!(matches!(why, Unbootable::UnknownFormat));
        assert!(text.contains("not a kernel drvisor can boot"), "{text}");
        let mut broken = build(
            ElfClass::Elf64,
            0x10_0000,
            &[0xf4; 64],
            Some(0x10_0000),
            &[],
        );
        broken.truncate(70);
        let (why, text) = refused(broken);
        assert!(matches!(why, Unbootable::MalformedElf(_)));
        assert!(text.contains("malformed ELF"), "{text}");
        // The ELF parser's own error is kept as the cause.
        let (why, _) = refused({
            let mut b = build(ElfClass::Elf64, 0x10_0000, &[0xf4], Some(0x10_0000), &[]);
            b.truncate(70);
            b
        });
        assert!(std::error::Error::source(&why).is_some());
    }
}
