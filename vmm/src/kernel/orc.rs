//! The kernel's ORC unwind table (`CONFIG_UNWINDER_ORC`, the default of distribution kernels,
//! which have no frame pointers): for each code address, how to find the caller's stack
//! pointer, frame pointer and return address (`Documentation/x86/orc-unwinder.rst`).
//!
//! objtool writes two parallel arrays into vmlinux: `.orc_unwind_ip`, one `s32` per entry, the
//! entry's first code address relative to that `s32`'s own address, and `.orc_unwind`, one
//! 6-byte `struct orc_entry` per entry (`arch/x86/include/asm/orc_types.h`): `s16 sp_offset`,
//! `s16 bp_offset`, then a `u16` of bit fields. An entry holds from its address up to the next
//! entry's.
//!
//! The bit fields have had three layouts ([`Layout`]), told apart by the kernel's version
//! banner:
//! - Linux 4.14 to 6.2: `sp_reg:4`, `bp_reg:4`, `type:2` (`CALL` 0, `REGS` 1, `REGS_PARTIAL`
//!   2), `end:1`;
//! - 6.3: a `signal` bit before `end` (the caller's address is exact, not a return address);
//! - 6.4 on: `type:3` (`UNDEFINED` 0, `END_OF_STACK` 1, `CALL` 2, `REGS` 3, `REGS_PARTIAL` 4),
//!   `signal:1`, no `end`, and an `.orc_header` section (a hash of the format).
//!
//! A kernel whose version banner cannot be found is refused (the layout cannot be told without
//! it), and so is a table with an entry that sets a bit its layout leaves clear.
//!
//! A run keeps the sections as they are ([`OrcSections`], found and checked at start) and
//! decodes them into an [`OrcTable`] only for its first backtrace ([`super::LazyOrc`]); the
//! entries' bits are checked then.

use object::{Object, ObjectSection};

/// Why a kernel's ORC table could not be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not an ELF.
    #[error("the kernel is not an ELF: {0}")]
    NotElf(String),
    /// No `.orc_unwind_ip` or `.orc_unwind`: built without `CONFIG_UNWINDER_ORC`.
    #[error("the kernel has no {0} section (built without CONFIG_UNWINDER_ORC)")]
    NoSection(&'static str),
    /// The two arrays do not hold the same number of entries (or are not whole entries).
    #[error("the kernel's ORC sections disagree: .orc_unwind_ip is {ip_bytes} bytes ({} entries of 4), .orc_unwind is {entry_bytes} bytes ({} entries of 6)", ip_bytes / 4, entry_bytes / 6)]
    SizesDisagree {
        /// Size of `.orc_unwind_ip`.
        ip_bytes: usize,
        /// Size of `.orc_unwind`.
        entry_bytes: usize,
    },
    /// A format this reader does not know.
    #[error("the kernel's ORC data is in a format drvisor does not read: {0}")]
    UnknownFormat(String),
}

/// Where the caller's stack pointer (or frame pointer) is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// `ORC_REG_UNDEFINED` (0): not known (for `sp_reg`, the end of the stack or bad data;
    /// for `bp_reg`, BP did not change).
    Undefined,
    /// `ORC_REG_PREV_SP` (1): the caller's SP (only for `bp_reg`).
    PrevSp,
    /// `ORC_REG_BP` (4).
    Bp,
    /// `ORC_REG_SP` (5).
    Sp,
    /// `ORC_REG_BP_INDIRECT` (8): the value at BP + offset.
    BpIndirect,
    /// `ORC_REG_SP_INDIRECT` (9): the value at SP, plus offset.
    SpIndirect,
    /// Another register (`DX`, `DI`, `R10`, `R13`: entry code and realigned stacks), which
    /// only a `pt_regs` frame saves; the number.
    Other(u8),
}

impl Reg {
    fn from_bits(bits: u16) -> Reg {
        match bits {
            0 => Reg::Undefined,
            1 => Reg::PrevSp,
            4 => Reg::Bp,
            5 => Reg::Sp,
            8 => Reg::BpIndirect,
            9 => Reg::SpIndirect,
            n => Reg::Other(n as u8),
        }
    }
}

/// The layout of an entry's bit fields, by kernel version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Linux 4.14 to 6.2.
    #[default]
    Linux4_14,
    /// Linux 6.3.
    Linux6_3,
    /// Linux 6.4 and later.
    Linux6_4,
}

impl Layout {
    /// The layout of Linux `major.minor`.
    pub fn of_version(major: u32, minor: u32) -> Layout {
        match (major, minor) {
            v if v < (6, 3) => Layout::Linux4_14,
            (6, 3) => Layout::Linux6_3,
            _ => Layout::Linux6_4,
        }
    }

    /// The flag bits this layout leaves clear.
    fn unused_bits(self) -> u16 {
        match self {
            Layout::Linux4_14 => 0xf800,
            Layout::Linux6_3 | Layout::Linux6_4 => 0xf000,
        }
    }
}

/// What kind of frame an entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A function's frame: the return address is just below the caller's SP.
    Call,
    /// A full `struct pt_regs` at the computed SP (an interrupt or exception entry).
    Regs,
    /// The hardware's IRET frame part of `pt_regs` only.
    RegsPartial,
    /// No ORC data for this code (6.4 on: `UNDEFINED`).
    Undefined,
    /// A task's first function: nothing above (6.4 on: `END_OF_STACK`; before, the `end` bit).
    EndOfStack,
    /// A value the format does not define.
    Unknown(u8),
}

/// One `struct orc_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Added to `sp_reg` for the caller's SP.
    pub sp_offset: i16,
    /// Added to `bp_reg` for where the caller's BP is saved.
    pub bp_offset: i16,
    /// The base of the caller's SP.
    pub sp_reg: Reg,
    /// The base of where the caller's BP is saved.
    pub bp_reg: Reg,
    /// The frame's kind.
    pub kind: Kind,
    /// The last frame of a stack (with `sp_reg` undefined): a task's first function.
    pub end: bool,
    /// The caller's address, found through this entry, is where it was interrupted, not a
    /// return address (look it up as it is, not one byte before). Before 6.3, every `pt_regs`
    /// frame and no other.
    pub signal: bool,
}

impl Entry {
    /// An entry from its 6 bytes, in the layout of Linux 4.14 to 6.2.
    pub fn from_bytes(b: [u8; 6]) -> Entry {
        Entry::from_bytes_in(Layout::Linux4_14, b)
    }

    /// An entry from its 6 bytes, in `layout`.
    pub fn from_bytes_in(layout: Layout, b: [u8; 6]) -> Entry {
        let bits = u16::from_le_bytes([b[4], b[5]]);
        let two_bit_kind = |t: u16| match t {
            0 => Kind::Call,
            1 => Kind::Regs,
            2 => Kind::RegsPartial,
            n => Kind::Unknown(n as u8),
        };
        let (kind, end, signal) = match layout {
            Layout::Linux4_14 => {
                let kind = two_bit_kind((bits >> 8) & 3);
                let regs = matches!(kind, Kind::Regs | Kind::RegsPartial);
                (kind, bits & (1 << 10) != 0, regs)
            }
            Layout::Linux6_3 => (
                two_bit_kind((bits >> 8) & 3),
                bits & (1 << 11) != 0,
                bits & (1 << 10) != 0,
            ),
            Layout::Linux6_4 => {
                let kind = match (bits >> 8) & 7 {
                    0 => Kind::Undefined,
                    1 => Kind::EndOfStack,
                    2 => Kind::Call,
                    3 => Kind::Regs,
                    4 => Kind::RegsPartial,
                    n => Kind::Unknown(n as u8),
                };
                (kind, kind == Kind::EndOfStack, bits & (1 << 11) != 0)
            }
        };
        Entry {
            sp_offset: i16::from_le_bytes([b[0], b[1]]),
            bp_offset: i16::from_le_bytes([b[2], b[3]]),
            sp_reg: Reg::from_bits(bits & 0xf),
            bp_reg: Reg::from_bits((bits >> 4) & 0xf),
            kind,
            end,
            signal,
        }
    }
}

/// The table, sorted by address: which entry holds at a code address.
#[derive(Debug, Default)]
pub struct OrcTable {
    /// Each entry's first address, ascending.
    ips: Vec<u64>,
    /// The entries, in the same order.
    entries: Vec<Entry>,
}

/// The two sections as the kernel ELF holds them, checked to be in the layout this reader
/// knows but not decoded: what a run keeps from the kernel image, so that decoding (some
/// 370 000 entries for a distribution kernel) waits for the first backtrace
/// ([`OrcSections::decode`]).
#[derive(Debug)]
pub struct OrcSections {
    /// The entries' layout.
    layout: Layout,
    /// Where `.orc_unwind_ip` is loaded.
    ip_base: u64,
    /// `.orc_unwind_ip`'s bytes.
    ips: Vec<u8>,
    /// `.orc_unwind`'s bytes.
    entries: Vec<u8>,
}

impl OrcSections {
    /// The sections of the kernel ELF `elf` (a vmlinux, or the kernel out of a bzImage), or
    /// why it has none this reader can decode.
    pub fn from_elf(elf: &[u8]) -> Result<OrcSections, Error> {
        let file = object::File::parse(elf).map_err(|e| Error::NotElf(e.to_string()))?;
        let ip_section = file
            .section_by_name(".orc_unwind_ip")
            .ok_or(Error::NoSection(".orc_unwind_ip"))?;
        let entry_section = file
            .section_by_name(".orc_unwind")
            .ok_or(Error::NoSection(".orc_unwind"))?;
        let layout = match banner_version(&file) {
            Some((major, minor)) => Layout::of_version(major, minor),
            None => {
                return Err(Error::UnknownFormat(
                    "no `Linux version` banner in its .rodata, so its version is not known".into(),
                ))
            }
        };
        // 6.4 and later carry `.orc_header`; one elsewhere means the banner misled.
        if file.section_by_name(".orc_header").is_some() && layout != Layout::Linux6_4 {
            return Err(Error::UnknownFormat(format!(
                "it has an .orc_header (Linux 6.4 and later), but its banner says {layout:?}"
            )));
        }
        Ok(OrcSections {
            layout,
            ..OrcSections::from_sections(
                ip_section.address(),
                section_data(&ip_section)?,
                section_data(&entry_section)?,
            )?
        })
    }

    /// `.orc_unwind_ip` (its bytes `ips`, loaded at `ip_base`) and `.orc_unwind`
    /// (`entries`), kept as they are once they hold the same number of whole entries.
    pub fn from_sections(ip_base: u64, ips: &[u8], entries: &[u8]) -> Result<OrcSections, Error> {
        check_sizes(ips, entries)?;
        Ok(OrcSections {
            layout: Layout::default(),
            ip_base,
            ips: ips.to_vec(),
            entries: entries.to_vec(),
        })
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.ips.len() / 4
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The table they hold.
    pub fn decode(&self) -> Result<OrcTable, Error> {
        OrcTable::from_sections_in(self.layout, self.ip_base, &self.ips, &self.entries)
    }

    /// The entries' layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}

/// Refuses sections that do not hold the same number of whole entries.
fn check_sizes(ips: &[u8], entries: &[u8]) -> Result<(), Error> {
    if !ips.len().is_multiple_of(4)
        || !entries.len().is_multiple_of(6)
        || ips.len() / 4 != entries.len() / 6
    {
        return Err(Error::SizesDisagree {
            ip_bytes: ips.len(),
            entry_bytes: entries.len(),
        });
    }
    Ok(())
}

impl OrcTable {
    /// The table from `.orc_unwind_ip` (its bytes `ips`, loaded at `ip_base`) and
    /// `.orc_unwind` (`entries`).
    pub fn from_sections(ip_base: u64, ips: &[u8], entries: &[u8]) -> Result<OrcTable, Error> {
        OrcTable::from_sections_in(Layout::Linux4_14, ip_base, ips, entries)
    }

    /// The same, with entries in `layout`.
    pub fn from_sections_in(
        layout: Layout,
        ip_base: u64,
        ips: &[u8],
        entries: &[u8],
    ) -> Result<OrcTable, Error> {
        check_sizes(ips, entries)?;
        // Bits the layout leaves clear: a set one means another layout (6.3 moved `end` from
        // bit 10 to 11).
        let unused = layout.unused_bits();
        if let Some(at) = entries
            .chunks_exact(6)
            .position(|e| u16::from_le_bytes([e[4], e[5]]) & unused != 0)
        {
            return Err(Error::UnknownFormat(format!(
                "entry {at} sets flag bits {unused:#06x}, which the {layout:?} layout leaves clear"
            )));
        }
        let mut pairs: Vec<(u64, Entry)> = ips
            .chunks_exact(4)
            .zip(entries.chunks_exact(6))
            .enumerate()
            .map(|(i, (ip, e))| {
                let rel = i32::from_le_bytes([ip[0], ip[1], ip[2], ip[3]]);
                let at = ip_base.wrapping_add(4 * i as u64);
                let entry = Entry::from_bytes_in(layout, [e[0], e[1], e[2], e[3], e[4], e[5]]);
                (at.wrapping_add_signed(i64::from(rel)), entry)
            })
            .collect();
        // The build sorts them (sorttable); a stable sort keeps equal addresses in their order.
        pairs.sort_by_key(|(ip, _)| *ip);
        let (ips, entries) = pairs.into_iter().unzip();
        Ok(OrcTable { ips, entries })
    }

    /// Each entry with its first address, by address.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.ips.iter().copied().zip(&self.entries)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The entry that holds at `ip`: the last one starting at or before it. `None` before
    /// the first (and past the kernel's code the last entry, a terminator with `sp_reg`
    /// undefined, holds).
    pub fn find(&self, ip: u64) -> Option<&Entry> {
        let at = self.ips.partition_point(|start| *start <= ip);
        self.entries.get(at.checked_sub(1)?)
    }

    /// Whether `ip` is within the table's span (from its first entry to its last).
    pub fn covers(&self, ip: u64) -> bool {
        matches!((self.ips.first(), self.ips.last()), (Some(&a), Some(&b)) if (a..=b).contains(&ip))
    }
}

fn section_data<'data>(s: &object::Section<'data, '_>) -> Result<&'data [u8], Error> {
    s.data()
        .map_err(|e| Error::NotElf(format!("{}: {e}", s.name().unwrap_or("?"))))
}

/// The kernel's version from its banner (`Linux version 6.1.0-28-cloud-amd64 ...`, the
/// `linux_banner` in `.rodata`).
fn banner_version(file: &object::File<'_>) -> Option<(u32, u32)> {
    let rodata = file.section_by_name(".rodata")?.data().ok()?;
    version_in(rodata)
}

/// The first `Linux version X.Y` in `bytes`.
pub fn version_in(bytes: &[u8]) -> Option<(u32, u32)> {
    const NEEDLE: &[u8] = b"Linux version ";
    let at = bytes.windows(NEEDLE.len()).position(|w| w == NEEDLE)?;
    let rest = &bytes[at + NEEDLE.len()..];
    let text: Vec<u8> = rest
        .iter()
        .take(16)
        .copied()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .collect();
    let text = std::str::from_utf8(&text).ok()?;
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
#[path = "orc_tests.rs"]
mod tests;
