//! One watched range of guest-physical bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Access;

/// The id the VMM gave a watch. Matches report these ids, so they must be unique within one
/// layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WatchId(pub u32);

impl fmt::Display for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a range cannot be watched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// A zero-length range.
    #[error("watch {id} at {gpa:#x} has length 0 and would never match; give it a length of at least 1 byte")]
    ZeroLength {
        /// The watch.
        id: WatchId,
        /// Its first byte.
        gpa: u64,
    },
    /// A range running past the top of the address space.
    #[error(
        "watch {id} at {gpa:#x} with length {len:#x} runs past the end of the 64-bit \
         guest-physical address space; shorten it so that address + length <= 2^64 - 1"
    )]
    Overflow {
        /// The watch.
        id: WatchId,
        /// Its first byte.
        gpa: u64,
        /// The requested length.
        len: u64,
    },
}

/// A watch on the guest-physical bytes `[gpa, gpa + len)`: any length of at least one byte,
/// any alignment, possibly spanning pages.
///
/// The fields are private so that every `Watch` in existence has a non-empty range that does
/// not wrap; build one with [`Watch::new`]. Deserializing runs the same checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawWatch")]
pub struct Watch {
    id: WatchId,
    gpa: u64,
    len: u64,
    access: Access,
}

/// The unchecked wire form of a [`Watch`].
#[derive(Deserialize)]
struct RawWatch {
    id: WatchId,
    gpa: u64,
    len: u64,
    access: Access,
}

impl TryFrom<RawWatch> for Watch {
    type Error = WatchError;

    fn try_from(raw: RawWatch) -> Result<Self, Self::Error> {
        Watch::new(raw.id, raw.gpa, raw.len, raw.access)
    }
}

impl Watch {
    /// A watch on `len` bytes from `gpa`. Refuses a zero length, and a range whose end does not
    /// fit in a `u64` (so [`Watch::end`] never wraps).
    pub fn new(id: WatchId, gpa: u64, len: u64, access: Access) -> Result<Watch, WatchError> {
        if len == 0 {
            return Err(WatchError::ZeroLength { id, gpa });
        }
        if gpa.checked_add(len).is_none() {
            return Err(WatchError::Overflow { id, gpa, len });
        }
        Ok(Watch {
            id,
            gpa,
            len,
            access,
        })
    }

    /// The id.
    pub const fn id(&self) -> WatchId {
        self.id
    }

    /// The first watched byte.
    pub const fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The number of watched bytes, at least 1.
    // Never zero, so an `is_empty` would always be false.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// One past the last watched byte. [`Watch::new`] checked that it fits.
    pub const fn end(&self) -> u64 {
        self.gpa + self.len
    }

    /// The accesses it reports.
    pub const fn access(&self) -> Access {
        self.access
    }

    /// Whether it shares a byte with `[gpa, end)`; an empty range shares none.
    pub const fn overlaps(&self, gpa: u64, end: u64) -> bool {
        gpa < end && self.gpa < end && gpa < self.end()
    }
}

/// `write 0x1000+8 #3`.
impl fmt::Display for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:#x}+{} {}",
            self.access, self.gpa, self.len, self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_watches() {
        let table = [
            (0, 1, Access::Write, 1),
            (0x1fff, 2, Access::Read, 0x2001),
            (0x1000, 0x10_0000, Access::ReadWrite, 0x10_1000),
            (u64::MAX - 1, 1, Access::Write, u64::MAX),
        ];
        for (gpa, len, access, end) in table {
            let w = Watch::new(WatchId(7), gpa, len, access).expect("valid");
            assert_eq!(
                (w.id(), w.gpa(), w.len(), w.access(), w.end()),
                (WatchId(7), gpa, len, access, end)
            );
        }
    }

    #[test]
    fn every_error_says_how_to_fix() {
        let table = [
            (
                0x1000,
                0,
                WatchError::ZeroLength {
                    id: WatchId(1),
                    gpa: 0x1000,
                },
                "at least 1 byte",
            ),
            (
                u64::MAX,
                1,
                WatchError::Overflow {
                    id: WatchId(1),
                    gpa: u64::MAX,
                    len: 1,
                },
                "shorten it",
            ),
            (
                2,
                u64::MAX - 1,
                WatchError::Overflow {
                    id: WatchId(1),
                    gpa: 2,
                    len: u64::MAX - 1,
                },
                "shorten it",
            ),
        ];
        for (gpa, len, err, fix) in table {
            assert_eq!(
                Watch::new(WatchId(1), gpa, len, Access::Write),
                Err(err.clone())
            );
            let msg = err.to_string();
            assert!(msg.contains(fix) && msg.contains("#1"), "{msg}");
        }
    }

    #[test]
    fn overlap_is_byte_exact() {
        let w = Watch::new(WatchId(0), 0x100, 8, Access::Write).expect("valid");
        let table = [
            (0x0f8, 0x100, false),
            (0x0f8, 0x101, true),
            (0x107, 0x108, true),
            (0x108, 0x110, false),
            (0x000, 0x1000, true),
            (0x104, 0x104, false),
        ];
        for (gpa, end, expect) in table {
            assert_eq!(w.overlaps(gpa, end), expect, "{gpa:#x}..{end:#x}");
        }
    }

    #[test]
    fn display() {
        let w = Watch::new(WatchId(3), 0x1000, 8, Access::ReadWrite).expect("valid");
        assert_eq!(w.to_string(), "rw 0x1000+8 #3");
    }
}
