//! DR6, the debug status register (Intel SDM Vol. 3, 17.2.3).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Slot;

/// The debug status register DR6 (SDM 17.2.3).
///
/// Holds the raw value. Two status bits are *active low*: BLD (bit 11) and RTM (bit 16) are 1
/// when nothing happened and 0 when their event occurred, which is why the reset value is
/// [`Dr6::INIT`] = `0xffff0ff0` and not 0. The accessors below hide the polarity: `rtm()` is true
/// when an RTM event is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dr6(u64);

impl Dr6 {
    /// Bus-lock detected (BLD, bit 11), active low.
    pub const BLD: u64 = 1 << 11;
    /// Debug-register access detected (BD, bit 13): DR7.GD trapped a MOV DR.
    pub const BD: u64 = 1 << 13;
    /// Single step (BS, bit 14): RFLAGS.TF (or the host's single-step) trapped.
    pub const BS: u64 = 1 << 14;
    /// Task switch (BT, bit 15): a task switch to a TSS with its T flag set.
    pub const BT: u64 = 1 << 15;
    /// RTM debug event (bit 16), active low.
    pub const RTM: u64 = 1 << 16;
    /// The four breakpoint-condition bits B0-B3.
    pub const HITS: u64 = 0xf;
    /// Bits that read as 1 whatever is written: 10:4 and 31:17. Bit 12 and 63:32 read as 0.
    pub const FIXED_ONE: u64 = 0xfffe_07f0;
    /// The active-low bits (BLD and RTM).
    pub const ACTIVE_LOW: u64 = Self::BLD | Self::RTM;
    /// Every bit that carries information: B0-B3, BLD, BD, BS, BT, RTM.
    pub const STATUS: u64 = Self::HITS | Self::BLD | Self::BD | Self::BS | Self::BT | Self::RTM;
    /// The value after reset: no event reported (SDM table 9-1).
    pub const INIT: Dr6 = Dr6(Self::FIXED_ONE | Self::ACTIVE_LOW);

    /// Wraps a raw value without checking it.
    pub const fn from_bits(bits: u64) -> Dr6 {
        Dr6(bits)
    }

    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The value the CPU keeps after `MOV DR6, value` when bits 63:32 are clear: fixed bits read
    /// back as 1, bit 12 as 0 (SDM 17.2.3; KVM stores the guest's DR6 this way).
    pub const fn normalized(self) -> Dr6 {
        Dr6((self.0 & Self::STATUS) | Self::FIXED_ONE)
    }

    /// The reported events in positive polarity (a set bit means "happened"), restricted to the
    /// status bits. This is the format of the VMCS "pending debug exceptions" field and of the
    /// `exception_payload` KVM takes for a #DB in `KVM_SET_VCPU_EVENTS` when
    /// `KVM_CAP_EXCEPTION_PAYLOAD` is enabled: KVM then merges it into the guest's DR6 itself.
    pub const fn exception_payload(self) -> u64 {
        (self.0 ^ Self::ACTIVE_LOW) & Self::STATUS
    }

    /// [`Dr6::INIT`] with the events of a positive-polarity payload reported: the inverse of
    /// [`Dr6::exception_payload`] for values built from `INIT`.
    pub const fn from_exception_payload(payload: u64) -> Dr6 {
        Dr6(Self::INIT.0 ^ (payload & Self::STATUS))
    }

    /// Whether any event is reported (any Bn, BD, BS, BT, or an active-low bit cleared).
    pub const fn has_events(self) -> bool {
        self.exception_payload() != 0
    }

    const fn with_mask(self, mask: u64, on: bool) -> Dr6 {
        if on {
            Dr6(self.0 | mask)
        } else {
            Dr6(self.0 & !mask)
        }
    }

    const fn hit_bit(slot: Slot) -> u64 {
        1 << slot.number()
    }

    /// Bn: the breakpoint condition of slot n was met.
    ///
    /// The CPU may set Bn for a slot whose conditions match even when DR7 does not enable it
    /// (SDM 17.2.3), so a Bn bit alone does not prove anyone armed the slot.
    pub const fn hit(self, slot: Slot) -> bool {
        self.0 & Self::hit_bit(slot) != 0
    }

    /// Sets or clears Bn.
    pub const fn with_hit(self, slot: Slot, on: bool) -> Dr6 {
        self.with_mask(Self::hit_bit(slot), on)
    }

    /// The slots whose Bn is set, ascending. Several can be set by one #DB.
    pub fn hit_slots(self) -> impl Iterator<Item = Slot> {
        Slot::ALL.into_iter().filter(move |s| self.hit(*s))
    }

    /// BD, bit 13.
    pub const fn bd(self) -> bool {
        self.0 & Self::BD != 0
    }

    /// BS, bit 14.
    pub const fn bs(self) -> bool {
        self.0 & Self::BS != 0
    }

    /// BT, bit 15.
    pub const fn bt(self) -> bool {
        self.0 & Self::BT != 0
    }

    /// Whether an RTM event is reported (bit 16 *clear*).
    pub const fn rtm(self) -> bool {
        self.0 & Self::RTM == 0
    }

    /// Whether a bus lock is reported (bit 11 *clear*).
    pub const fn bld(self) -> bool {
        self.0 & Self::BLD == 0
    }

    /// Sets or clears BD.
    pub const fn with_bd(self, on: bool) -> Dr6 {
        self.with_mask(Self::BD, on)
    }

    /// Sets or clears BS.
    pub const fn with_bs(self, on: bool) -> Dr6 {
        self.with_mask(Self::BS, on)
    }

    /// Sets or clears BT.
    pub const fn with_bt(self, on: bool) -> Dr6 {
        self.with_mask(Self::BT, on)
    }

    /// Reports (`true`: clears bit 16) or withdraws (`true`: sets bit 16) an RTM event.
    pub const fn with_rtm(self, event: bool) -> Dr6 {
        self.with_mask(Self::RTM, !event)
    }

    /// Reports (`true`: clears bit 11) or withdraws (`false`: sets bit 11) a bus lock.
    pub const fn with_bld(self, event: bool) -> Dr6 {
        self.with_mask(Self::BLD, !event)
    }
}

impl Default for Dr6 {
    fn default() -> Self {
        Dr6::INIT
    }
}

/// `0x...` followed by the reported events, e.g. `0xffff4ff1 [B0, BS]`.
impl fmt::Display for Dr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} [", self.0)?;
        let mut names = Vec::with_capacity(9);
        names.extend(
            self.hit_slots()
                .map(|s| ["B0", "B1", "B2", "B3"][s.index()]),
        );
        for (on, name) in [
            (self.bld(), "BLD"),
            (self.bd(), "BD"),
            (self.bs(), "BS"),
            (self.bt(), "BT"),
            (self.rtm(), "RTM"),
        ] {
            if on {
                names.push(name);
            }
        }
        if names.is_empty() {
            f.write_str("none")?;
        } else {
            f.write_str(&names.join(", "))?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_the_reset_value() {
        assert_eq!(Dr6::INIT.bits(), 0xffff_0ff0);
        assert_eq!(Dr6::default(), Dr6::INIT);
        assert!(!Dr6::INIT.has_events());
        assert_eq!(Dr6::INIT.exception_payload(), 0);
        assert_eq!(Dr6::INIT.hit_slots().count(), 0);
        assert!(!Dr6::INIT.rtm() && !Dr6::INIT.bld());
    }

    #[test]
    fn hit_bits_for_every_slot() {
        for slot in Slot::ALL {
            let bit = 1u64 << slot.number();
            let dr6 = Dr6::INIT.with_hit(slot, true);
            assert_eq!(dr6.bits(), 0xffff_0ff0 | bit);
            assert!(dr6.hit(slot));
            assert_eq!(dr6.hit_slots().collect::<Vec<_>>(), [slot]);
            assert_eq!(dr6.with_hit(slot, false), Dr6::INIT);
            assert_eq!(dr6.exception_payload(), bit);
            assert_eq!(Dr6::from_exception_payload(bit), dr6);
        }
        let all = Dr6::from_bits(0xffff_0fff);
        assert_eq!(all.hit_slots().collect::<Vec<_>>(), Slot::ALL);
    }

    #[test]
    fn status_bits_and_polarity() {
        type Setter = fn(Dr6, bool) -> Dr6;
        type Getter = fn(Dr6) -> bool;
        // (setter, getter, raw value after setting the event on INIT, payload bit)
        let table: [(Setter, Getter, u64, u64); 5] = [
            (Dr6::with_bd, Dr6::bd, 0xffff_2ff0, 1 << 13),
            (Dr6::with_bs, Dr6::bs, 0xffff_4ff0, 1 << 14),
            (Dr6::with_bt, Dr6::bt, 0xffff_8ff0, 1 << 15),
            (Dr6::with_rtm, Dr6::rtm, 0xfffe_0ff0, 1 << 16),
            (Dr6::with_bld, Dr6::bld, 0xffff_07f0, 1 << 11),
        ];
        for (set, get, raw, payload) in table {
            let dr6 = set(Dr6::INIT, true);
            assert_eq!(dr6.bits(), raw, "{dr6}");
            assert!(get(dr6) && !get(Dr6::INIT));
            assert!(dr6.has_events());
            assert_eq!(dr6.exception_payload(), payload);
            assert_eq!(Dr6::from_exception_payload(payload), dr6);
            assert_eq!(set(dr6, false), Dr6::INIT);
        }
    }

    #[test]
    fn normalized_matches_a_hardware_write() {
        let table = [
            (0u64, 0xfffe_07f0u64),
            (0xffff_0ff0, 0xffff_0ff0),
            (0x1000, 0xfffe_07f0), // bit 12 reads as 0
            (0x1_e80f, 0xffff_efff),
        ];
        for (written, kept) in table {
            assert_eq!(
                Dr6::from_bits(written).normalized().bits(),
                kept,
                "{written:#x}"
            );
        }
    }

    #[test]
    fn display() {
        let table = [
            (Dr6::INIT, "0xffff0ff0 [none]"),
            (
                Dr6::INIT.with_hit(Slot::DR0, true).with_bs(true),
                "0xffff4ff1 [B0, BS]",
            ),
            (
                Dr6::INIT
                    .with_hit(Slot::DR1, true)
                    .with_hit(Slot::DR3, true)
                    .with_bd(true)
                    .with_bt(true)
                    .with_rtm(true),
                "0xfffeaffa [B1, B3, BD, BT, RTM]",
            ),
            (Dr6::INIT.with_bld(true), "0xffff07f0 [BLD]"),
        ];
        for (dr6, text) in table {
            assert_eq!(dr6.to_string(), text);
        }
    }
}
