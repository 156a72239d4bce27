//! The guest's RAM: the guest-physical ranges the VMM backs with its own memory.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::page::is_page_aligned;
use crate::PAGE_SIZE;

/// Why a range cannot be a RAM region.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RamError {
    /// The start or the size is not a multiple of the page size.
    #[error(
        "RAM region at {gpa:#x} with size {size:#x} is not page-aligned: KVM memslots start and \
         end on {PAGE_SIZE}-byte page boundaries; round the start and the size to multiples of \
         {PAGE_SIZE:#x}"
    )]
    Unaligned {
        /// The requested start.
        gpa: u64,
        /// The requested size.
        size: u64,
    },
    /// A zero size.
    #[error("RAM region at {gpa:#x} has size 0; give it at least one page ({PAGE_SIZE:#x} bytes) or leave it out")]
    Empty {
        /// The requested start.
        gpa: u64,
    },
    /// A region running past the top of the address space.
    #[error(
        "RAM region at {gpa:#x} with size {size:#x} runs past the end of the 64-bit \
         guest-physical address space; move it lower or make it smaller"
    )]
    Overflow {
        /// The requested start.
        gpa: u64,
        /// The requested size.
        size: u64,
    },
}

/// One guest-physical range of RAM, `[gpa, gpa + size)`, page-aligned and non-empty.
///
/// A VM usually has one region from 0, or two around the 32-bit PCI hole. Each region is one
/// contiguous host mapping, so a memslot never spans two regions even when they touch.
/// Build one with [`RamRegion::new`]; deserializing runs the same checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRamRegion")]
pub struct RamRegion {
    gpa: u64,
    size: u64,
}

/// The unchecked wire form of a [`RamRegion`].
#[derive(Deserialize)]
struct RawRamRegion {
    gpa: u64,
    size: u64,
}

impl TryFrom<RawRamRegion> for RamRegion {
    type Error = RamError;

    fn try_from(raw: RawRamRegion) -> Result<Self, Self::Error> {
        RamRegion::new(raw.gpa, raw.size)
    }
}

impl RamRegion {
    /// RAM at `[gpa, gpa + size)`. Refuses a zero size, a start or size that is not a multiple
    /// of [`PAGE_SIZE`], and a range whose end does not fit in a `u64`.
    pub fn new(gpa: u64, size: u64) -> Result<RamRegion, RamError> {
        if size == 0 {
            return Err(RamError::Empty { gpa });
        }
        if !is_page_aligned(gpa) || !is_page_aligned(size) {
            return Err(RamError::Unaligned { gpa, size });
        }
        if gpa.checked_add(size).is_none() {
            return Err(RamError::Overflow { gpa, size });
        }
        Ok(RamRegion { gpa, size })
    }

    /// The first byte.
    pub const fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The size in bytes: a non-zero multiple of [`PAGE_SIZE`].
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// One past the last byte. [`RamRegion::new`] checked that it fits.
    pub const fn end(&self) -> u64 {
        self.gpa + self.size
    }

    /// Whether `gpa` is one of its bytes.
    pub const fn contains(&self, gpa: u64) -> bool {
        self.gpa <= gpa && gpa < self.end()
    }
}

/// `0x0..0x40000000`.
impl fmt::Display for RamRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.gpa, self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_regions() {
        let table = [
            (0, 0x1000),
            (0x1_0000_0000, 0x4000_0000),
            (u64::MAX - 0x1fff, 0x1000),
        ];
        for (gpa, size) in table {
            let r = RamRegion::new(gpa, size).expect("valid");
            assert_eq!((r.gpa(), r.size(), r.end()), (gpa, size, gpa + size));
            assert!(r.contains(gpa) && r.contains(gpa + size - 1) && !r.contains(gpa + size));
        }
    }

    #[test]
    fn every_error_says_how_to_fix() {
        let table = [
            (0x1000, 0, RamError::Empty { gpa: 0x1000 }, "leave it out"),
            (
                0x800,
                0x1000,
                RamError::Unaligned {
                    gpa: 0x800,
                    size: 0x1000,
                },
                "round the start",
            ),
            (
                0x1000,
                0x1800,
                RamError::Unaligned {
                    gpa: 0x1000,
                    size: 0x1800,
                },
                "round the start",
            ),
            // Ends exactly at 2^64, one past what a u64 end can say.
            (
                0xffff_ffff_ffff_f000,
                0x1000,
                RamError::Overflow {
                    gpa: 0xffff_ffff_ffff_f000,
                    size: 0x1000,
                },
                "make it smaller",
            ),
            (
                0xffff_ffff_ffff_f000,
                0x2000,
                RamError::Overflow {
                    gpa: 0xffff_ffff_ffff_f000,
                    size: 0x2000,
                },
                "make it smaller",
            ),
        ];
        for (gpa, size, err, fix) in table {
            assert_eq!(
                RamRegion::new(gpa, size),
                Err(err.clone()),
                "{gpa:#x}+{size:#x}"
            );
            let msg = err.to_string();
            assert!(msg.contains(fix), "{msg}");
        }
    }

    #[test]
    fn display() {
        let r = RamRegion::new(0, 0x4000_0000).expect("valid");
        assert_eq!(r.to_string(), "0x0..0x40000000");
    }
}
