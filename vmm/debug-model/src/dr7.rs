//! DR7, the debug control register (Intel SDM Vol. 3, 17.2.4).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Slot;

/// The RW field of one DR7 slot: which access makes the slot fire (SDM 17.2.4, table 17-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrKind {
    /// RW=00: instruction execution (a fault, reported before the instruction runs).
    Exec,
    /// RW=01: data writes (a trap, reported after the write).
    Write,
    /// RW=10: I/O reads or writes, defined only while CR4.DE=1.
    Io,
    /// RW=11: data reads or writes, but not instruction fetches.
    ReadWrite,
}

impl DrKind {
    /// Decodes the two RW bits; only the low two bits of `bits` are looked at.
    pub const fn from_bits(bits: u8) -> DrKind {
        match bits & 0b11 {
            0b00 => DrKind::Exec,
            0b01 => DrKind::Write,
            0b10 => DrKind::Io,
            _ => DrKind::ReadWrite,
        }
    }

    /// The two RW bits.
    pub const fn bits(self) -> u8 {
        match self {
            DrKind::Exec => 0b00,
            DrKind::Write => 0b01,
            DrKind::Io => 0b10,
            DrKind::ReadWrite => 0b11,
        }
    }
}

impl fmt::Display for DrKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrKind::Exec => "exec",
            DrKind::Write => "write",
            DrKind::Io => "io",
            DrKind::ReadWrite => "rw",
        })
    }
}

/// The LEN field of one DR7 slot: how many bytes the slot covers (SDM 17.2.5).
///
/// The encoding is not monotonic: 10 means 8 bytes (64-bit mode only), 11 means 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrLen {
    /// LEN=00: one byte; the only length defined for execution breakpoints.
    One,
    /// LEN=01: two bytes.
    Two,
    /// LEN=10: eight bytes.
    Eight,
    /// LEN=11: four bytes.
    Four,
}

impl DrLen {
    /// Decodes the two LEN bits; only the low two bits of `bits` are looked at.
    pub const fn from_bits(bits: u8) -> DrLen {
        match bits & 0b11 {
            0b00 => DrLen::One,
            0b01 => DrLen::Two,
            0b10 => DrLen::Eight,
            _ => DrLen::Four,
        }
    }

    /// The two LEN bits.
    pub const fn bits(self) -> u8 {
        match self {
            DrLen::One => 0b00,
            DrLen::Two => 0b01,
            DrLen::Eight => 0b10,
            DrLen::Four => 0b11,
        }
    }

    /// The length in bytes: 1, 2, 4 or 8.
    pub const fn bytes(self) -> u8 {
        match self {
            DrLen::One => 1,
            DrLen::Two => 2,
            DrLen::Four => 4,
            DrLen::Eight => 8,
        }
    }

    /// The field for a length in bytes, or `None` unless `bytes` is 1, 2, 4 or 8.
    pub const fn from_bytes(bytes: u8) -> Option<DrLen> {
        match bytes {
            1 => Some(DrLen::One),
            2 => Some(DrLen::Two),
            4 => Some(DrLen::Four),
            8 => Some(DrLen::Eight),
            _ => None,
        }
    }
}

impl fmt::Display for DrLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

/// Why a DR7 value cannot be loaded as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dr7Error {
    /// Reserved bits are set.
    #[error(
        "DR7 value {value:#x} sets reserved bits {bits:#x}: bits 12, 14, 15 and 63:32 must be 0 \
         (SDM 17.2.4; MOV to DR7 with any of bits 63:32 set raises #GP); clear them"
    )]
    ReservedBits {
        /// The whole DR7 value.
        value: u64,
        /// The offending reserved bits.
        bits: u64,
    },
    /// An enabled slot asks for an I/O breakpoint.
    #[error(
        "DR7 enables {slot} with RW=10, an I/O breakpoint: drvisor does not virtualize I/O \
         breakpoints (KVM emulates port I/O without checking them); use RW=00 (exec), 01 (write) \
         or 11 (read/write)"
    )]
    IoBreakpoint {
        /// The slot whose RW field is 10.
        slot: Slot,
    },
}

/// The debug control register DR7 (SDM 17.2.4).
///
/// Holds the raw 64-bit value: decoding never loses bits, so a value read from KVM or written by
/// the guest round-trips exactly through [`Dr7::from_bits`] and [`Dr7::bits`]. Use
/// [`Dr7::validate`] before loading a value into hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dr7(u64);

impl Dr7 {
    /// Local exact-breakpoint enable (LE, bit 8); ignored since the P6 family but kept as written.
    pub const LE: u64 = 1 << 8;
    /// Global exact-breakpoint enable (GE, bit 9).
    pub const GE: u64 = 1 << 9;
    /// Bit 10 is reserved and always reads as 1.
    pub const FIXED_ONE: u64 = 1 << 10;
    /// Restricted transactional memory debugging (RTM, bit 11).
    pub const RTM: u64 = 1 << 11;
    /// General detect (GD, bit 13): MOV to or from any debug register raises #DB with DR6.BD.
    pub const GD: u64 = 1 << 13;
    /// Reserved bits that must be written as 0: bit 12, bits 14-15 and bits 63:32.
    pub const RESERVED_ZERO: u64 = 0xffff_ffff_0000_d000;
    /// The value after reset and the value of a DR7 that arms nothing (SDM table 9-1).
    pub const INIT: Dr7 = Dr7(Self::FIXED_ONE);

    /// Wraps a raw value without checking it.
    pub const fn from_bits(bits: u64) -> Dr7 {
        Dr7(bits)
    }

    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The value the CPU keeps after `MOV DR7, value` when bits 63:32 are clear: reserved bits
    /// 12, 14 and 15 read back as 0 and bit 10 as 1 (SDM 17.2.4; KVM's `kvm_set_dr` stores
    /// exactly this into the guest's DR7).
    pub const fn normalized(self) -> Dr7 {
        Dr7((self.0 & !Self::RESERVED_ZERO) | Self::FIXED_ONE)
    }

    const fn local_bit(slot: Slot) -> u64 {
        1 << (2 * slot.number())
    }

    const fn global_bit(slot: Slot) -> u64 {
        1 << (2 * slot.number() + 1)
    }

    const fn rw_shift(slot: Slot) -> u32 {
        16 + 4 * slot.number() as u32
    }

    const fn len_shift(slot: Slot) -> u32 {
        18 + 4 * slot.number() as u32
    }

    /// The local enable bit Ln.
    pub const fn local(self, slot: Slot) -> bool {
        self.0 & Self::local_bit(slot) != 0
    }

    /// The global enable bit Gn.
    pub const fn global(self, slot: Slot) -> bool {
        self.0 & Self::global_bit(slot) != 0
    }

    /// Whether the slot is enabled at all (Ln or Gn): this is what makes a slot fire and, in
    /// drvisor's model, what makes the guest claim it (the 2009 review: "errors are reserved for
    /// DR7", DR0-DR3 alone claim nothing).
    pub const fn enabled(self, slot: Slot) -> bool {
        self.0 & (Self::local_bit(slot) | Self::global_bit(slot)) != 0
    }

    /// The slots with Ln or Gn set, in ascending order.
    pub fn enabled_slots(self) -> impl Iterator<Item = Slot> {
        Slot::ALL.into_iter().filter(move |s| self.enabled(*s))
    }

    /// The RW field of a slot.
    pub const fn rw(self, slot: Slot) -> DrKind {
        DrKind::from_bits((self.0 >> Self::rw_shift(slot)) as u8)
    }

    /// The LEN field of a slot.
    pub const fn len(self, slot: Slot) -> DrLen {
        DrLen::from_bits((self.0 >> Self::len_shift(slot)) as u8)
    }

    /// LE, bit 8.
    pub const fn le(self) -> bool {
        self.0 & Self::LE != 0
    }

    /// GE, bit 9.
    pub const fn ge(self) -> bool {
        self.0 & Self::GE != 0
    }

    /// RTM, bit 11.
    pub const fn rtm(self) -> bool {
        self.0 & Self::RTM != 0
    }

    /// GD, bit 13.
    pub const fn gd(self) -> bool {
        self.0 & Self::GD != 0
    }

    const fn with_mask(self, mask: u64, on: bool) -> Dr7 {
        if on {
            Dr7(self.0 | mask)
        } else {
            Dr7(self.0 & !mask)
        }
    }

    /// Sets or clears Ln.
    pub const fn with_local(self, slot: Slot, on: bool) -> Dr7 {
        self.with_mask(Self::local_bit(slot), on)
    }

    /// Sets or clears Gn.
    pub const fn with_global(self, slot: Slot, on: bool) -> Dr7 {
        self.with_mask(Self::global_bit(slot), on)
    }

    /// Replaces the RW field of a slot.
    pub const fn with_rw(self, slot: Slot, kind: DrKind) -> Dr7 {
        let shift = Self::rw_shift(slot);
        Dr7((self.0 & !(0b11 << shift)) | ((kind.bits() as u64) << shift))
    }

    /// Replaces the LEN field of a slot.
    pub const fn with_len(self, slot: Slot, len: DrLen) -> Dr7 {
        let shift = Self::len_shift(slot);
        Dr7((self.0 & !(0b11 << shift)) | ((len.bits() as u64) << shift))
    }

    /// Sets or clears LE.
    pub const fn with_le(self, on: bool) -> Dr7 {
        self.with_mask(Self::LE, on)
    }

    /// Sets or clears GE.
    pub const fn with_ge(self, on: bool) -> Dr7 {
        self.with_mask(Self::GE, on)
    }

    /// Sets or clears RTM.
    pub const fn with_rtm(self, on: bool) -> Dr7 {
        self.with_mask(Self::RTM, on)
    }

    /// Sets or clears GD.
    pub const fn with_gd(self, on: bool) -> Dr7 {
        self.with_mask(Self::GD, on)
    }

    /// The reserved-zero bits that are set (0 when none are).
    pub const fn reserved_bits(self) -> u64 {
        self.0 & Self::RESERVED_ZERO
    }

    /// Checks that the value can be loaded as a physical DR7: no reserved bit set, and no enabled
    /// slot asking for an I/O breakpoint. Reports the reserved bits first, then the lowest
    /// offending slot.
    pub fn validate(self) -> Result<(), Dr7Error> {
        let bits = self.reserved_bits();
        if bits != 0 {
            return Err(Dr7Error::ReservedBits {
                value: self.0,
                bits,
            });
        }
        match self.enabled_slots().find(|s| self.rw(*s) == DrKind::Io) {
            Some(slot) => Err(Dr7Error::IoBreakpoint { slot }),
            None => Ok(()),
        }
    }
}

impl Default for Dr7 {
    fn default() -> Self {
        Dr7::INIT
    }
}

/// `0x...` followed by the enabled slots and flags, e.g. `0xd0402 [G0 write/4@DR0, GD]`.
impl fmt::Display for Dr7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} [", self.0)?;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !std::mem::take(&mut first) {
                f.write_str(", ")?;
            }
            Ok(())
        };
        for slot in self.enabled_slots() {
            sep(f)?;
            let n = slot.number();
            match (self.local(slot), self.global(slot)) {
                (true, true) => write!(f, "L{n}G{n}")?,
                (true, false) => write!(f, "L{n}")?,
                _ => write!(f, "G{n}")?,
            }
            write!(f, " {}/{}@{}", self.rw(slot), self.len(slot), slot)?;
        }
        for (on, name) in [
            (self.le(), "LE"),
            (self.ge(), "GE"),
            (self.rtm(), "RTM"),
            (self.gd(), "GD"),
        ] {
            if on {
                sep(f)?;
                f.write_str(name)?;
            }
        }
        if first {
            f.write_str("off")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [(DrKind, u8); 4] = [
        (DrKind::Exec, 0b00),
        (DrKind::Write, 0b01),
        (DrKind::Io, 0b10),
        (DrKind::ReadWrite, 0b11),
    ];
    const LENS: [(DrLen, u8, u8); 4] = [
        (DrLen::One, 0b00, 1),
        (DrLen::Two, 0b01, 2),
        (DrLen::Eight, 0b10, 8),
        (DrLen::Four, 0b11, 4),
    ];

    #[test]
    fn enable_bits_for_every_slot() {
        // (slot, L bit, G bit) straight from SDM figure 17-1.
        let table = [
            (Slot::DR0, 0x01, 0x02),
            (Slot::DR1, 0x04, 0x08),
            (Slot::DR2, 0x10, 0x20),
            (Slot::DR3, 0x40, 0x80),
        ];
        for (slot, l, g) in table {
            let local = Dr7::from_bits(l);
            let global = Dr7::from_bits(g);
            assert!(local.local(slot) && !local.global(slot) && local.enabled(slot));
            assert!(global.global(slot) && !global.local(slot) && global.enabled(slot));
            assert_eq!(Dr7::from_bits(0).with_local(slot, true).bits(), l);
            assert_eq!(Dr7::from_bits(0).with_global(slot, true).bits(), g);
            assert_eq!(Dr7::from_bits(l | g).with_local(slot, false).bits(), g);
            assert_eq!(Dr7::from_bits(l | g).with_global(slot, false).bits(), l);
            for other in Slot::ALL.into_iter().filter(|s| *s != slot) {
                assert!(!local.enabled(other) && !global.enabled(other));
            }
            assert_eq!(local.enabled_slots().collect::<Vec<_>>(), [slot]);
        }
    }

    #[test]
    fn rw_and_len_for_every_slot_and_value() {
        for slot in Slot::ALL {
            let rw_shift = 16 + 4 * u32::from(slot.number());
            for (kind, bits) in KINDS {
                let raw = u64::from(bits) << rw_shift;
                assert_eq!(Dr7::from_bits(raw).rw(slot), kind);
                assert_eq!(Dr7::from_bits(0).with_rw(slot, kind).bits(), raw);
                // Overwriting clears the old field instead of OR-ing into it.
                assert_eq!(
                    Dr7::from_bits(0b11 << rw_shift).with_rw(slot, kind).bits(),
                    raw
                );
                assert_eq!(DrKind::from_bits(bits), kind);
                assert_eq!(kind.bits(), bits);
            }
            for (len, bits, bytes) in LENS {
                let raw = u64::from(bits) << (rw_shift + 2);
                assert_eq!(Dr7::from_bits(raw).len(slot), len);
                assert_eq!(Dr7::from_bits(0).with_len(slot, len).bits(), raw);
                assert_eq!(
                    Dr7::from_bits(0b11 << (rw_shift + 2))
                        .with_len(slot, len)
                        .bits(),
                    raw
                );
                assert_eq!(DrLen::from_bits(bits), len);
                assert_eq!(len.bits(), bits);
                assert_eq!(len.bytes(), bytes);
                assert_eq!(DrLen::from_bytes(bytes), Some(len));
            }
        }
    }

    #[test]
    fn fields_of_one_slot_do_not_leak_into_others() {
        let all_ones = Dr7::from_bits(0xffff_0000);
        for slot in Slot::ALL {
            let v = all_ones
                .with_rw(slot, DrKind::Exec)
                .with_len(slot, DrLen::One);
            for other in Slot::ALL {
                let expect = if other == slot {
                    (DrKind::Exec, DrLen::One)
                } else {
                    (DrKind::ReadWrite, DrLen::Four)
                };
                assert_eq!((v.rw(other), v.len(other)), expect);
            }
        }
    }

    #[test]
    fn from_bytes_refuses_other_lengths() {
        for bytes in [0u8, 3, 5, 6, 7, 9, 16, 255] {
            assert_eq!(DrLen::from_bytes(bytes), None);
        }
    }

    #[test]
    fn flags() {
        type Getter = fn(Dr7) -> bool;
        type Setter = fn(Dr7, bool) -> Dr7;
        let table: [(u64, Getter, Setter); 4] = [
            (1 << 8, Dr7::le, Dr7::with_le),
            (1 << 9, Dr7::ge, Dr7::with_ge),
            (1 << 11, Dr7::rtm, Dr7::with_rtm),
            (1 << 13, Dr7::gd, Dr7::with_gd),
        ];
        for (bit, get, set) in table {
            assert!(get(Dr7::from_bits(bit)));
            assert!(!get(Dr7::from_bits(!bit)));
            assert_eq!(set(Dr7::from_bits(0), true).bits(), bit);
            assert_eq!(set(Dr7::from_bits(u64::MAX), false).bits(), !bit);
        }
    }

    #[test]
    fn encode_decode_round_trips_every_bit() {
        for bit in 0..64 {
            let v = 1u64 << bit;
            assert_eq!(Dr7::from_bits(v).bits(), v);
        }
    }

    #[test]
    fn validate_reserved_bits() {
        let table: [(u64, Result<(), Dr7Error>); 8] = [
            (0x400, Ok(())),
            (0, Ok(())), // bit 10 clear is not an error: hardware forces it to 1.
            (0xffff_2fff, Ok(())),
            (
                1 << 12,
                Err(Dr7Error::ReservedBits {
                    value: 1 << 12,
                    bits: 1 << 12,
                }),
            ),
            (
                1 << 14,
                Err(Dr7Error::ReservedBits {
                    value: 1 << 14,
                    bits: 1 << 14,
                }),
            ),
            (
                1 << 15,
                Err(Dr7Error::ReservedBits {
                    value: 1 << 15,
                    bits: 1 << 15,
                }),
            ),
            (
                1 << 32,
                Err(Dr7Error::ReservedBits {
                    value: 1 << 32,
                    bits: 1 << 32,
                }),
            ),
            (
                u64::MAX,
                Err(Dr7Error::ReservedBits {
                    value: u64::MAX,
                    bits: 0xffff_ffff_0000_d000,
                }),
            ),
        ];
        for (value, expect) in table {
            assert_eq!(Dr7::from_bits(value).validate(), expect, "{value:#x}");
        }
    }

    #[test]
    fn validate_refuses_enabled_io_slots_only() {
        for slot in Slot::ALL {
            let io = Dr7::INIT
                .with_rw(slot, DrKind::Io)
                .with_len(slot, DrLen::Four);
            // Disabled I/O slots are harmless: the CPU never evaluates them.
            assert_eq!(io.validate(), Ok(()));
            assert_eq!(
                io.with_local(slot, true).validate(),
                Err(Dr7Error::IoBreakpoint { slot })
            );
            assert_eq!(
                io.with_global(slot, true).validate(),
                Err(Dr7Error::IoBreakpoint { slot })
            );
            for (kind, _) in KINDS.into_iter().filter(|(k, _)| *k != DrKind::Io) {
                assert_eq!(
                    io.with_rw(slot, kind).with_local(slot, true).validate(),
                    Ok(())
                );
            }
        }
    }

    #[test]
    fn normalized_matches_a_hardware_write() {
        let table = [
            (0u64, 0x400u64),
            (0x400, 0x400),
            (0xd000, 0x400),
            (0xffff_ffff, 0xffff_2fff),
        ];
        for (written, kept) in table {
            assert_eq!(Dr7::from_bits(written).normalized().bits(), kept);
        }
    }

    #[test]
    fn display() {
        let table = [
            (Dr7::INIT, "0x400 [off]"),
            (
                Dr7::INIT.with_local(Slot::DR0, true),
                "0x401 [L0 exec/1@DR0]",
            ),
            (
                Dr7::INIT
                    .with_global(Slot::DR1, true)
                    .with_rw(Slot::DR1, DrKind::Write)
                    .with_len(Slot::DR1, DrLen::Four),
                "0xd00408 [G1 write/4@DR1]",
            ),
            (
                Dr7::INIT
                    .with_local(Slot::DR3, true)
                    .with_global(Slot::DR3, true)
                    .with_rw(Slot::DR3, DrKind::ReadWrite)
                    .with_len(Slot::DR3, DrLen::Eight)
                    .with_gd(true)
                    .with_ge(true),
                "0xb00026c0 [L3G3 rw/8@DR3, GE, GD]",
            ),
            (Dr7::from_bits(0x2d00), "0x2d00 [LE, RTM, GD]"),
        ];
        for (dr7, text) in table {
            assert_eq!(dr7.to_string(), text);
        }
    }

    #[test]
    fn error_messages_say_how_to_fix() {
        let reserved = Dr7Error::ReservedBits {
            value: 1 << 12,
            bits: 1 << 12,
        }
        .to_string();
        assert!(reserved.contains("clear them"), "{reserved}");
        let io = Dr7Error::IoBreakpoint { slot: Slot::DR2 }.to_string();
        assert!(io.contains("DR2") && io.contains("use RW=00"), "{io}");
    }
}
