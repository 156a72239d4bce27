//! Multiboot v1 (<https://www.gnu.org/software/grub/manual/multiboot/multiboot.html>), as QEMU's
//! `-kernel` implements it (hw/i386/multiboot.c):
//! - the header (magic `0x1BADB002`, flags, checksum) lies 4-byte aligned in the first 8 KiB;
//! - the image is an ELF32/ELF64 loaded by its program headers, or, with flag 16 (the "a.out
//!   kludge"), loaded at the header's own addresses;
//! - the boot vCPU starts in 32-bit protected mode with paging off, `EAX = 0x2BADB002` and
//!   `EBX` = the multiboot information: memory sizes, the memory map, the command line and the
//!   modules.

use vm_memory::GuestMemoryMmap;

use super::elf::Segment;
use super::info_area::InfoArea;
use super::{Error, PlacedModule};
use crate::layout::{EBDA_START, HIMEM_START};

/// The header's magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What the boot loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header must lie within this many bytes of the file's start.
const SEARCH_LEN: usize = 8192;

/// Flag 0: modules page-aligned (drvisor always does).
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Flag 1: memory information wanted (drvisor always gives it).
const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Flag 2: a video mode wanted.
const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Flag 16: the header's address fields are valid.
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// `multiboot_info.flags` bits drvisor fills in.
const INFO_MEMORY: u32 = 1 << 0;
const INFO_BOOT_DEVICE: u32 = 1 << 1;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MEM_MAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// Why a kernel's multiboot header cannot be honoured. Each message starts with "its": it
/// follows the kernel's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultibootError {
    /// The magic is there but the checksum does not match.
    #[error("its multiboot header at offset {offset:#x} has a wrong checksum")]
    BadChecksum {
        /// Where the header starts in the file.
        offset: usize,
    },
    /// Flag 2: a video mode.
    #[error("its multiboot header asks for video mode, which drvisor does not provide (it has no display); build the kernel without a video-mode request (header flag 2)")]
    VideoMode,
    /// Required flags (0-15) drvisor does not know.
    #[error("its multiboot header requires features drvisor does not know (flags {0:#x})")]
    UnknownFlags(u32),
    /// Flag 16 set, but the file ends before the address fields.
    #[error("its multiboot header is cut short before its address fields")]
    AddressesCutShort,
    /// Flag 16's address fields contradict each other.
    #[error("its multiboot header's addresses are inconsistent: {0}")]
    Inconsistent(Inconsistency),
}

/// Which of the a.out kludge's address rules is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    /// `header_addr < load_addr`.
    #[error("header_addr lies below load_addr")]
    HeaderBelowLoad,
    /// The load address would be before the file's first byte.
    #[error("load_addr lies before the start of the file")]
    LoadBeforeFile,
    /// `load_end_addr < load_addr`.
    #[error("load_end_addr lies below load_addr")]
    LoadEndBelowLoad,
    /// `bss_end_addr` below the end of the loaded bytes.
    #[error("bss_end_addr lies below load_end_addr")]
    BssEndBelowLoadEnd,
    /// The entry is not in the loaded image.
    #[error("entry_addr lies outside the loaded image")]
    EntryOutside,
}

/// A kernel's multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the magic in the file.
    pub offset: usize,
    /// The header's flags.
    pub flags: u32,
    /// The header's own load addresses, when flag 16 asks for them.
    pub aout: Option<AoutLayout>,
}

/// The "a.out kludge": where the header says the image goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AoutLayout {
    /// The image's one segment.
    pub segment: Segment,
    /// Where execution starts.
    pub entry: u64,
}

fn le32(bytes: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(off..off + 4)?.try_into().ok()?,
    ))
}

impl Header {
    /// Finds and checks the header. `Ok(None)`: there is none. `Err`: there is one, but
    /// drvisor cannot honour it, and the error says why.
    pub fn find(bytes: &[u8]) -> Result<Option<Header>, MultibootError> {
        let window = &bytes[..bytes.len().min(SEARCH_LEN)];
        let mut bad_checksum = None;
        for offset in (0..window.len().saturating_sub(11)).step_by(4) {
            if le32(window, offset) != Some(HEADER_MAGIC) {
                continue;
            }
            let (Some(flags), Some(sum)) = (le32(window, offset + 4), le32(window, offset + 8))
            else {
                continue;
            };
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(sum) != 0 {
                // As QEMU does, keep looking: the magic may occur by chance.
                bad_checksum.get_or_insert(offset);
                continue;
            }
            return Self::check(bytes, offset, flags).map(Some);
        }
        match bad_checksum {
            Some(offset) => Err(MultibootError::BadChecksum { offset }),
            None => Ok(None),
        }
    }

    fn check(bytes: &[u8], offset: usize, flags: u32) -> Result<Header, MultibootError> {
        if flags & FLAG_VIDEO_MODE != 0 {
            return Err(MultibootError::VideoMode);
        }
        let unknown = flags & 0xffff & !(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
        if unknown != 0 {
            return Err(MultibootError::UnknownFlags(unknown));
        }
        let aout = if flags & FLAG_AOUT_KLUDGE != 0 {
            Some(aout_layout(bytes, offset)?)
        } else {
            None
        };
        Ok(Header {
            offset,
            flags,
            aout,
        })
    }
}

/// Reads the address fields (multiboot spec 3.1.3) and turns them into one segment.
fn aout_layout(bytes: &[u8], offset: usize) -> Result<AoutLayout, MultibootError> {
    let field = |i: usize| {
        le32(bytes, offset + 12 + 4 * i)
            .map(u64::from)
            .ok_or(MultibootError::AddressesCutShort)
    };
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let bad = |what: Inconsistency| Err(MultibootError::Inconsistent(what));
    if header_addr < load_addr {
        return bad(Inconsistency::HeaderBelowLoad);
    }
    let file_offset = offset as u64 - (header_addr - load_addr).min(offset as u64);
    if header_addr - load_addr > offset as u64 {
        return bad(Inconsistency::LoadBeforeFile);
    }
    let file_len = bytes.len() as u64 - file_offset;
    let filesz = if load_end == 0 {
        file_len
    } else if load_end < load_addr {
        return bad(Inconsistency::LoadEndBelowLoad);
    } else {
        (load_end - load_addr).min(file_len)
    };
    let memsz = if bss_end == 0 {
        filesz
    } else if bss_end < load_addr + filesz {
        return bad(Inconsistency::BssEndBelowLoadEnd);
    } else {
        bss_end - load_addr
    };
    if entry < load_addr || entry >= load_addr + memsz {
        return bad(Inconsistency::EntryOutside);
    }
    Ok(AoutLayout {
        segment: Segment {
            paddr: load_addr,
            offset: file_offset,
            filesz,
            memsz,
            exec: true,
        },
        entry,
    })
}

/// `struct multiboot_info`, as far as drvisor fills it (spec 3.3).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Info {
    flags: u32,
    mem_lower: u32,
    mem_upper: u32,
    boot_device: u32,
    cmdline: u32,
    mods_count: u32,
    mods_addr: u32,
    syms: [u32; 4],
    mmap_length: u32,
    mmap_addr: u32,
    drives_length: u32,
    drives_addr: u32,
    config_table: u32,
    boot_loader_name: u32,
    apm_table: u32,
    vbe: [u32; 4],
}

/// Serialises `words` as little-endian bytes.
fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

impl Info {
    fn to_bytes(self) -> Vec<u8> {
        let mut w = vec![
            self.flags,
            self.mem_lower,
            self.mem_upper,
            self.boot_device,
            self.cmdline,
            self.mods_count,
            self.mods_addr,
        ];
        w.extend_from_slice(&self.syms);
        w.extend_from_slice(&[
            self.mmap_length,
            self.mmap_addr,
            self.drives_length,
            self.drives_addr,
            self.config_table,
            self.boot_loader_name,
            self.apm_table,
        ]);
        w.extend_from_slice(&self.vbe);
        words_to_bytes(&w)
    }
}

/// [`super::e820::memory_map`] as the multiboot `mmap`. Each entry is `size` (20, not counting
/// itself), `base_addr`, `length`, `type` (1 = RAM, 2 = reserved).
fn memory_map(ram: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for r in super::e820::memory_map(ram) {
        out.extend_from_slice(&20u32.to_le_bytes());
        out.extend_from_slice(&r.addr.to_le_bytes());
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&r.type_number().to_le_bytes());
    }
    out
}

/// Writes the multiboot information for a VM with `ram` bytes of RAM into `area`, and returns
/// its guest-physical address. `cmdline` is the whole command line, which by QEMU's convention
/// starts with the kernel's file name.
pub fn write_info(
    mem: &GuestMemoryMmap,
    area: &mut InfoArea,
    ram: u64,
    cmdline: &str,
    modules: &[PlacedModule],
) -> Result<u64, Error> {
    let cmdline_addr = area.push_str(mem, cmdline)?;
    let mut mods = Vec::new();
    for m in modules {
        let cmd = area.push_str(mem, &m.cmdline)?;
        mods.extend_from_slice(&[m.start as u32, m.end as u32, cmd as u32, 0]);
    }
    let mods_addr = area.push(mem, &words_to_bytes(&mods), 16)?;
    let mmap = memory_map(ram);
    let mmap_addr = area.push(mem, &mmap, 8)?;
    let loader = area.push_str(mem, "drvisor")?;
    // mem_upper: KiB of contiguous RAM from 1 MiB, below 4 GiB.
    let below_4g = crate::layout::low_ram_end(ram);
    let info = Info {
        flags: INFO_MEMORY
            | INFO_BOOT_DEVICE
            | INFO_CMDLINE
            | INFO_MODS
            | INFO_MEM_MAP
            | INFO_LOADER_NAME,
        mem_lower: (EBDA_START / 1024) as u32,
        mem_upper: ((below_4g - HIMEM_START) / 1024) as u32,
        // No BIOS disk: "drive 0xff, no partition", as QEMU passes.
        boot_device: 0x8000_ffff,
        cmdline: cmdline_addr as u32,
        mods_count: modules.len() as u32,
        mods_addr: mods_addr as u32,
        mmap_length: mmap.len() as u32,
        mmap_addr: mmap_addr as u32,
        boot_loader_name: loader as u32,
        ..Default::default()
    };
    area.push(mem, &info.to_bytes(), 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32, extra: &[u32]) -> Vec<u8> {
        let mut w = vec![
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        ];
        w.extend_from_slice(extra);
        words_to_bytes(&w)
    }

    fn at(offset: usize, h: &[u8], len: usize) -> Vec<u8> {
        let mut file = vec![0u8; len];
        file[offset..offset + h.len()].copy_from_slice(h);
        file
    }

    #[test]
    fn found_within_the_first_8k_only() {
        let h = header(0, &[]);
        assert_eq!(
            Header::find(&at(0x1ff0, &h, 0x3000))
                .unwrap()
                .unwrap()
                .offset,
            0x1ff0
        );
        assert_eq!(Header::find(&at(0x2000, &h, 0x3000)).unwrap(), None);
        assert_eq!(Header::find(&[0u8; 100]).unwrap(), None);
    }

    #[test]
    fn a_wrong_checksum_is_named() {
        let mut h = header(0, &[]);
        h[8] ^= 1;
        let err = Header::find(&at(0x40, &h, 0x100)).unwrap_err();
        assert_eq!(err, MultibootError::BadChecksum { offset: 0x40 });
        assert!(err.to_string().contains("wrong checksum"), "{err}");
    }

    #[test]
    fn video_mode_and_unknown_flags_are_refused_with_the_reason() {
        let err = Header::find(&at(0, &header(FLAG_VIDEO_MODE, &[0; 9]), 0x100)).unwrap_err();
        assert_eq!(err, MultibootError::VideoMode);
        assert!(err.to_string().contains("asks for video mode"), "{err}");
        let err = Header::find(&at(0, &header(1 << 5, &[]), 0x100)).unwrap_err();
        assert_eq!(err, MultibootError::UnknownFlags(0x20));
        assert!(err.to_string().contains("0x20"), "{err}");
        // Optional flags (16-31) other than the kludge are ignored.
        assert!(Header::find(&at(0, &header(3 | (1 << 20), &[]), 0x100)).is_ok());
    }

    #[test]
    fn the_aout_kludge_gives_one_segment() {
        // Header at file offset 0x40, which is load_addr + 0x40 in memory.
        let fields = [0x20_0040, 0x20_0000, 0x20_0100, 0x20_2000, 0x20_0080];
        let file = at(0x40, &header(FLAG_AOUT_KLUDGE, &fields), 0x300);
        let h = Header::find(&file).unwrap().unwrap();
        let aout = h.aout.unwrap();
        assert_eq!(aout.entry, 0x20_0080);
        assert_eq!(
            aout.segment,
            Segment {
                paddr: 0x20_0000,
                offset: 0,
                filesz: 0x100,
                memsz: 0x2000,
                exec: true
            }
        );
    }

    #[test]
    fn a_kludge_header_cut_short_is_named() {
        // The file ends right after the header's three words, before its address fields.
        let err = Header::find(&at(0x40, &header(FLAG_AOUT_KLUDGE, &[]), 0x4c));
        assert_eq!(err, Err(MultibootError::AddressesCutShort));
    }

    #[test]
    fn inconsistent_kludge_addresses_are_refused() {
        let bad_entry = [0x20_0040, 0x20_0000, 0, 0, 0x30_0000];
        let err = Header::find(&at(0x40, &header(FLAG_AOUT_KLUDGE, &bad_entry), 0x300));
        assert_eq!(
            err,
            Err(MultibootError::Inconsistent(Inconsistency::EntryOutside))
        );
        let before_file = [0x20_0100, 0x20_0000, 0, 0, 0x20_0000];
        let err = Header::find(&at(0x40, &header(FLAG_AOUT_KLUDGE, &before_file), 0x300));
        let err = err.unwrap_err();
        assert_eq!(
            err,
            MultibootError::Inconsistent(Inconsistency::LoadBeforeFile)
        );
        assert!(err.to_string().contains("before the start of the file"));
    }

    #[test]
    fn info_layout_matches_the_spec_offsets() {
        let info = Info {
            mods_count: 7,
            mmap_addr: 9,
            boot_loader_name: 11,
            ..Default::default()
        };
        let b = info.to_bytes();
        assert_eq!(b.len(), 88);
        assert_eq!(b[20], 7); // mods_count at 20
        assert_eq!(b[48], 9); // mmap_addr at 48
        assert_eq!(b[64], 11); // boot_loader_name at 64
    }
}
