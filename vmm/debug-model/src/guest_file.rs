//! The guest's virtual debug-register file and MOV DR emulation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{BreakSpec, Dr6, Dr7, DrKind, DrLen, Slot, SpecError};

/// DR0-DR3, DR6 and DR7 of one vCPU *as the guest wrote them*: the guest's view, which KVM keeps
/// apart from the hardware view and returns from `KVM_GET_DEBUGREGS`.
///
/// Planning only ever reads this (the arbiter takes `&[GuestDrFile]`), so whatever the host
/// arms, the guest reads back exactly what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GuestDrFile {
    /// DR0-DR3: breakpoint linear addresses, by virtual slot.
    pub dr: [u64; 4],
    /// DR6 as the guest sees it.
    pub dr6: Dr6,
    /// DR7 as the guest wrote it.
    pub dr7: Dr7,
}

/// Why an emulated MOV to or from a debug register must raise an exception instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MovDrError {
    /// DR8-DR15 do not exist (reachable with REX.R): #UD.
    #[error("MOV DR{reg}: there is no DR{reg} (only DR0-DR7 exist); inject #UD")]
    NoSuchRegister {
        /// The register number.
        reg: u8,
    },
    /// A write of 1s to bits 63:32 of DR6 or DR7: #GP(0) (SDM 17.2.3, 17.2.4).
    #[error(
        "MOV DR{reg}, {value:#x}: bits 63:32 of DR6 and DR7 are reserved and must be 0; \
         inject #GP(0)"
    )]
    ReservedBits {
        /// The register number as encoded (4-7).
        reg: u8,
        /// The value written.
        value: u64,
    },
    /// The guest's own DR7.GD is set: the access raises #DB with DR6.BD before it executes
    /// (SDM 17.2.4). KVM clears the guest's GD when it delivers that #DB, as the CPU would.
    #[error(
        "MOV DR{reg} with the guest's DR7.GD set: the access does not happen; inject #DB with \
         DR6.BD"
    )]
    GeneralDetect {
        /// The register number.
        reg: u8,
    },
    /// DR4 or DR5 while CR4.DE=1: #UD instead of the DR6/DR7 alias (SDM 17.2.2).
    #[error("MOV DR{reg} with CR4.DE set: DR4 and DR5 do not alias DR6 and DR7 then; inject #UD")]
    DebugExtensions {
        /// The register number (4 or 5).
        reg: u8,
    },
}

/// CR4.DE (debugging extensions).
pub const CR4_DE: u64 = 1 << 3;

/// The #UD that DR4 or DR5 raise under CR4.DE=1, checked before [`GuestDrFile::write`] or
/// [`GuestDrFile::read`], which do not see CR4.
pub fn check_debug_extensions(reg: u8, cr4: u64) -> Result<(), MovDrError> {
    if matches!(reg, 4 | 5) && cr4 & CR4_DE != 0 {
        Err(MovDrError::DebugExtensions { reg })
    } else {
        Ok(())
    }
}

impl MovDrError {
    /// The exception vector to inject: 6 (#UD), 13 (#GP) or 1 (#DB).
    pub const fn vector(&self) -> u8 {
        match self {
            MovDrError::NoSuchRegister { .. } | MovDrError::DebugExtensions { .. } => 6,
            MovDrError::ReservedBits { .. } => 13,
            MovDrError::GeneralDetect { .. } => 1,
        }
    }
}

/// What the guest armed in one of its virtual slots: the raw DR7 fields, unvalidated, because
/// the guest may arm anything the CPU accepts (an unaligned address, an I/O breakpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GuestSpec {
    /// The address in the slot's DRn.
    pub addr: u64,
    /// The slot's RW field.
    pub rw: DrKind,
    /// The slot's LEN field.
    pub len: DrLen,
}

impl GuestSpec {
    /// The same request as a validated [`BreakSpec`], for tools that display or compare it;
    /// fails where the guest armed something drvisor would refuse from a user.
    pub fn to_break_spec(&self) -> Result<BreakSpec, SpecError> {
        BreakSpec::from_dr7_fields(self.addr, self.rw, self.len)
    }
}

/// `rw/len@addr`, e.g. `write/4@0x1000`.
impl fmt::Display for GuestSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{:#x}", self.rw, self.len, self.addr)
    }
}

const HIGH_HALF: u64 = 0xffff_ffff_0000_0000;

impl Default for GuestDrFile {
    /// The state after reset (SDM table 9-1): addresses 0, DR6 and DR7 at their init values.
    fn default() -> Self {
        GuestDrFile {
            dr: [0; 4],
            dr6: Dr6::INIT,
            dr7: Dr7::INIT,
        }
    }
}

impl GuestDrFile {
    /// A file from the raw values `KVM_GET_DEBUGREGS` returns (`db`, `dr6`, `dr7`).
    pub const fn new(dr: [u64; 4], dr6: u64, dr7: u64) -> GuestDrFile {
        GuestDrFile {
            dr,
            dr6: Dr6::from_bits(dr6),
            dr7: Dr7::from_bits(dr7),
        }
    }

    /// The virtual slots the guest claims: those with Ln or Gn set in its DR7. A guest that only
    /// wrote an address into DR0-DR3 claims nothing (the 2009 review: DR0-DR3 writes always
    /// succeed and claiming is reserved for DR7).
    pub fn claimed_slots(&self) -> impl Iterator<Item = Slot> {
        self.dr7.enabled_slots()
    }

    /// What the guest armed in a virtual slot, or `None` when its DR7 does not enable the slot.
    pub fn guest_spec(&self, slot: Slot) -> Option<GuestSpec> {
        self.dr7.enabled(slot).then(|| GuestSpec {
            addr: self.dr[slot.index()],
            rw: self.dr7.rw(slot),
            len: self.dr7.len(slot),
        })
    }

    /// Emulates `MOV DRreg, value`.
    ///
    /// DR0-DR3 take any value. DR6 and DR7 keep what the CPU would keep ([`Dr6::normalized`],
    /// [`Dr7::normalized`]). DR4 and DR5 alias DR6 and DR7, which is the CPU's behaviour while
    /// CR4.DE=0 (SDM 17.2.2); with CR4.DE=1 they raise #UD, which the caller must check first
    /// because this model does not see CR4. Nothing changes when an error is returned. The
    /// privilege check (#GP at CPL>0) is the caller's too.
    pub fn write(&mut self, reg: u8, value: u64) -> Result<(), MovDrError> {
        self.check(reg)?;
        if reg >= 4 && value & HIGH_HALF != 0 {
            return Err(MovDrError::ReservedBits { reg, value });
        }
        match reg {
            0..=3 => self.dr[usize::from(reg)] = value,
            4 | 6 => self.dr6 = Dr6::from_bits(value).normalized(),
            _ => self.dr7 = Dr7::from_bits(value).normalized(),
        }
        Ok(())
    }

    /// Emulates `MOV reg, DRreg`, with the same aliasing and GD rules as [`GuestDrFile::write`].
    pub fn read(&self, reg: u8) -> Result<u64, MovDrError> {
        self.check(reg)?;
        Ok(match reg {
            0..=3 => self.dr[usize::from(reg)],
            4 | 6 => self.dr6.bits(),
            _ => self.dr7.bits(),
        })
    }

    fn check(&self, reg: u8) -> Result<(), MovDrError> {
        if reg > 7 {
            Err(MovDrError::NoSuchRegister { reg })
        } else if self.dr7.gd() {
            Err(MovDrError::GeneralDetect { reg })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_dr0_to_dr3_claims_nothing() {
        let mut file = GuestDrFile::default();
        for (reg, slot) in (0u8..).zip(Slot::ALL) {
            assert_eq!(file.write(reg, 0x1000 + u64::from(reg)), Ok(()));
            assert_eq!(file.read(reg), Ok(0x1000 + u64::from(reg)));
            assert_eq!(file.guest_spec(slot), None);
        }
        assert_eq!(file.claimed_slots().count(), 0);
    }

    #[test]
    fn dr0_to_dr3_accept_any_value() {
        let mut file = GuestDrFile::default();
        for value in [0, u64::MAX, 1 << 47, 0xdead_beef_0000_0001] {
            assert_eq!(file.write(2, value), Ok(()));
            assert_eq!(file.dr[2], value);
        }
    }

    #[test]
    fn claimed_slots_follow_l_and_g_for_every_slot() {
        for slot in Slot::ALL {
            for dr7 in [
                Dr7::INIT.with_local(slot, true),
                Dr7::INIT.with_global(slot, true),
                Dr7::INIT.with_local(slot, true).with_global(slot, true),
            ] {
                let file = GuestDrFile {
                    dr7,
                    ..GuestDrFile::default()
                };
                assert_eq!(file.claimed_slots().collect::<Vec<_>>(), [slot]);
            }
        }
        let all = GuestDrFile::new([0; 4], Dr6::INIT.bits(), 0x4ff);
        assert_eq!(all.claimed_slots().collect::<Vec<_>>(), Slot::ALL);
    }

    #[test]
    fn guest_spec_reports_the_raw_fields() {
        let mut file = GuestDrFile::default();
        let dr7 = Dr7::INIT
            .with_global(Slot::DR1, true)
            .with_rw(Slot::DR1, DrKind::Write)
            .with_len(Slot::DR1, DrLen::Eight)
            .with_local(Slot::DR3, true)
            .with_rw(Slot::DR3, DrKind::Io);
        assert_eq!(file.write(1, 0x1003), Ok(()));
        assert_eq!(file.write(3, 0x3f8), Ok(()));
        assert_eq!(file.write(7, dr7.bits()), Ok(()));
        let dr1 = GuestSpec {
            addr: 0x1003,
            rw: DrKind::Write,
            len: DrLen::Eight,
        };
        assert_eq!(file.guest_spec(Slot::DR1), Some(dr1));
        // Unaligned: the guest may do it, a user may not.
        assert!(matches!(
            dr1.to_break_spec(),
            Err(SpecError::Misaligned { .. })
        ));
        let dr3 = file.guest_spec(Slot::DR3).expect("enabled");
        assert_eq!(dr3.to_break_spec(), Err(SpecError::IoBreakpoint));
        assert_eq!(dr3.to_string(), "io/1@0x3f8");
        assert_eq!(file.guest_spec(Slot::DR0), None);
    }

    #[test]
    fn dr4_and_dr5_alias_dr6_and_dr7() {
        let mut file = GuestDrFile::default();
        assert_eq!(file.write(5, 0x401), Ok(()));
        assert_eq!(file.read(7), Ok(0x401));
        assert_eq!(file.read(5), Ok(0x401));
        assert_eq!(file.write(4, 0xffff_4ff1), Ok(()));
        assert_eq!(file.read(6), Ok(0xffff_4ff1));
        assert_eq!(file.read(4), Ok(0xffff_4ff1));
    }

    #[test]
    fn dr6_and_dr7_keep_what_the_cpu_keeps() {
        let table: [(u8, u64, u64); 4] = [
            (7, 0, 0x400),
            (7, 0xffff_ffff, 0xffff_2fff),
            (6, 0, 0xfffe_07f0),
            (6, 0x1000, 0xfffe_07f0),
        ];
        for (reg, written, kept) in table {
            let mut file = GuestDrFile::default();
            assert_eq!(file.write(reg, written), Ok(()));
            // Read the field: 0xffffffff sets GD, which makes a MOV from DR7 fault.
            let got = if reg == 7 {
                file.dr7.bits()
            } else {
                file.dr6.bits()
            };
            assert_eq!(got, kept, "DR{reg} {written:#x}");
        }
    }

    #[test]
    fn errors_and_their_vectors() {
        let gd = GuestDrFile {
            dr7: Dr7::INIT.with_gd(true),
            ..GuestDrFile::default()
        };
        let table: [(GuestDrFile, u8, u64, MovDrError, u8); 6] = [
            (
                GuestDrFile::default(),
                8,
                0,
                MovDrError::NoSuchRegister { reg: 8 },
                6,
            ),
            (
                GuestDrFile::default(),
                15,
                0,
                MovDrError::NoSuchRegister { reg: 15 },
                6,
            ),
            (
                GuestDrFile::default(),
                7,
                1 << 32,
                MovDrError::ReservedBits {
                    reg: 7,
                    value: 1 << 32,
                },
                13,
            ),
            (
                GuestDrFile::default(),
                6,
                u64::MAX,
                MovDrError::ReservedBits {
                    reg: 6,
                    value: u64::MAX,
                },
                13,
            ),
            (gd, 0, 1, MovDrError::GeneralDetect { reg: 0 }, 1),
            (gd, 7, 0x400, MovDrError::GeneralDetect { reg: 7 }, 1),
        ];
        for (file, reg, value, err, vector) in table {
            let mut after = file;
            assert_eq!(after.write(reg, value), Err(err));
            assert_eq!(after, file, "a failed write changes nothing");
            assert_eq!(err.vector(), vector);
        }
        assert_eq!(gd.read(3), Err(MovDrError::GeneralDetect { reg: 3 }));
        assert_eq!(
            GuestDrFile::default().read(9),
            Err(MovDrError::NoSuchRegister { reg: 9 })
        );
        // DR0-DR3 take any value, even with the high half set.
        assert_eq!(GuestDrFile::default().write(0, u64::MAX), Ok(()));
    }
}
