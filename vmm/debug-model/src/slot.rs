//! The four hardware breakpoint slots (DR0-DR3) and vCPU indices.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of the four breakpoint address registers DR0-DR3 (Intel SDM Vol. 3, 17.2.1).
///
/// The same type names a *physical* slot (what the CPU holds) and a *virtual* slot (what the
/// guest believes it wrote); which one is meant is always said by the field or parameter name,
/// because the arbiter may place guest virtual slot n in physical slot m.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Slot(u8);

/// A slot number outside 0..=3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("debug register slot {0} does not exist: x86 has four breakpoint slots, DR0-DR3; use 0, 1, 2 or 3")]
pub struct SlotError(pub u8);

impl Slot {
    /// DR0.
    pub const DR0: Slot = Slot(0);
    /// DR1.
    pub const DR1: Slot = Slot(1);
    /// DR2.
    pub const DR2: Slot = Slot(2);
    /// DR3.
    pub const DR3: Slot = Slot(3);
    /// All four slots, in ascending order.
    pub const ALL: [Slot; 4] = [Slot::DR0, Slot::DR1, Slot::DR2, Slot::DR3];

    /// The slot with number `n`, or `None` when `n > 3`.
    pub const fn new(n: u8) -> Option<Slot> {
        if n < 4 {
            Some(Slot(n))
        } else {
            None
        }
    }

    /// The slot number, 0..=3.
    pub const fn number(self) -> u8 {
        self.0
    }

    /// The slot number as an array index, 0..=3.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<u8> for Slot {
    type Error = SlotError;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Slot::new(n).ok_or(SlotError(n))
    }
}

impl From<Slot> for u8 {
    fn from(slot: Slot) -> u8 {
        slot.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DR{}", self.0)
    }
}

/// A vCPU index: position of the vCPU's [`crate::GuestDrFile`] in the slice given to the
/// arbiter, and the number KVM's vCPU fd was created with.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct VcpuId(pub u32);

impl From<u32> for VcpuId {
    fn from(n: u32) -> Self {
        VcpuId(n)
    }
}

impl VcpuId {
    /// The index as a slice index; `None` only where `usize` is narrower than 32 bits.
    pub fn index(self) -> Option<usize> {
        usize::try_from(self.0).ok()
    }
}

impl fmt::Display for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vcpu{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_from_accepts_exactly_zero_to_three() {
        for n in 0..=u8::MAX {
            match Slot::try_from(n) {
                Ok(slot) => {
                    assert!(n < 4);
                    assert_eq!(slot.number(), n);
                    assert_eq!(slot.index(), usize::from(n));
                    assert_eq!(u8::from(slot), n);
                }
                Err(e) => {
                    assert!(n >= 4);
                    assert_eq!(e, SlotError(n));
                }
            }
        }
    }

    #[test]
    fn all_is_ascending_and_complete() {
        let numbers: Vec<u8> = Slot::ALL.iter().map(|s| s.number()).collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
    }

    #[test]
    fn display() {
        let table = [
            (Slot::DR0, "DR0"),
            (Slot::DR1, "DR1"),
            (Slot::DR2, "DR2"),
            (Slot::DR3, "DR3"),
        ];
        for (slot, text) in table {
            assert_eq!(slot.to_string(), text);
        }
        assert_eq!(VcpuId(7).to_string(), "vcpu7");
    }

    #[test]
    fn error_message_says_how_to_fix() {
        let msg = SlotError(4).to_string();
        assert!(msg.contains("slot 4"), "{msg}");
        assert!(msg.contains("use 0, 1, 2 or 3"), "{msg}");
    }
}
