//! A kernel image in host memory: its bytes, where it came from and its format.

use std::io::Cursor;
use std::path::Path;

use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::Error;
use crate::layout::HIMEM_START;

/// The formats drvisor boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF, booted through its PVH note.
    Elf,
    /// Linux bzImage.
    BzImage,
}

/// A kernel image read into memory.
pub struct KernelImage {
    name: String,
    bytes: Vec<u8>,
    format: KernelFormat,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// `HdrS` at offset 0x202 marks a Linux boot-protocol setup header.
const SETUP_HEADER_MAGIC: &[u8] = b"HdrS";

impl KernelImage {
    /// Takes `bytes` as a kernel named `name` (used in messages).
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self, Error> {
        let name = name.into();
        let format = if bytes.starts_with(ELF_MAGIC) {
            KernelFormat::Elf
        } else if bytes.get(0x202..0x206) == Some(SETUP_HEADER_MAGIC) {
            KernelFormat::BzImage
        } else {
            return Err(Error::UnknownFormat { what: name });
        };
        Ok(KernelImage {
            name,
            bytes,
            format,
        })
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

    /// Loads the image into `mem` at and above 1 MiB with linux-loader's loader `L`.
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
            KernelFormat::Elf => {
                use object::read::elf::{ElfFile64, ProgramHeader};
                let elf = ElfFile64::<object::Endianness>::parse(&*self.bytes).map_err(|_| {
                    Error::UnknownFormat {
                        what: self.name.clone(),
                    }
                })?;
                let e = elf.endian();
                // linux-loader places PT_LOAD segments at their physical address.
                Ok(elf
                    .elf_program_headers()
                    .iter()
                    .filter(|ph| ph.p_type(e) == object::elf::PT_LOAD)
                    .map(|ph| ph.p_paddr(e).saturating_add(ph.p_memsz(e)))
                    .max()
                    .unwrap_or(HIMEM_START))
            }
        }
    }

    /// The guest-physical ranges the kernel executes from once loaded: the executable PT_LOAD
    /// segments of an ELF, or the whole protected-mode image of a bzImage (which decompresses
    /// itself, so no finer map is known).
    pub fn executable_ranges(&self) -> Vec<std::ops::Range<u64>> {
        use object::read::elf::{ElfFile64, ProgramHeader};
        match self.format {
            KernelFormat::BzImage => match self.load_end() {
                Ok(end) => std::iter::once(HIMEM_START..end).collect(),
                Err(_) => Vec::new(),
            },
            KernelFormat::Elf => {
                let Ok(elf) = ElfFile64::<object::Endianness>::parse(&*self.bytes) else {
                    return Vec::new();
                };
                let e = elf.endian();
                elf.elf_program_headers()
                    .iter()
                    .filter(|ph| {
                        ph.p_type(e) == object::elf::PT_LOAD
                            && ph.p_flags(e) & object::elf::PF_X != 0
                            && ph.p_memsz(e) > 0
                    })
                    .map(|ph| ph.p_paddr(e)..ph.p_paddr(e).saturating_add(ph.p_memsz(e)))
                    .collect()
            }
        }
    }

    /// Whether an ELF carries the Xen `XEN_ELFNOTE_PHYS32_ENTRY` note in a PT_NOTE segment,
    /// which is where linux-loader looks for the PVH entry.
    pub fn has_pvh_note(&self) -> bool {
        use object::read::elf::{ElfFile64, ProgramHeader};
        const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
        let Ok(elf) = ElfFile64::<object::Endianness>::parse(&*self.bytes) else {
            return false;
        };
        let e = elf.endian();
        elf.elf_program_headers().iter().any(|ph| {
            let Ok(Some(mut notes)) = ph.notes(e, &*self.bytes) else {
                return false;
            };
            std::iter::from_fn(|| notes.next().ok().flatten())
                .any(|n| n.name() == b"Xen" && n.n_type(e) == XEN_ELFNOTE_PHYS32_ENTRY)
        })
    }

    /// Refuses an image that would not fit in `mem`.
    pub(super) fn check_fits(&self, mem: &GuestMemoryMmap) -> Result<(), Error> {
        let ram = super::ram_size(mem);
        let end = self.load_end()?;
        if end > ram {
            return Err(Error::TooBig {
                what: self.name.clone(),
                needed_mib: end.div_ceil(1 << 20),
                mem_mib: ram >> 20,
            });
        }
        Ok(())
    }
}
