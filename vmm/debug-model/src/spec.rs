//! Breakpoint and watchpoint requests, validated against what a debug register can hold.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DrKind, DrLen};

/// What a hardware slot fires on, limited to what drvisor arms (no I/O breakpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakKind {
    /// Instruction execution at the address (DR7 RW=00); a fault, reported before the
    /// instruction runs.
    Exec,
    /// Data writes to the covered bytes (RW=01); a trap, reported after the write.
    Write,
    /// Data reads *or* writes (RW=11); a trap.
    #[serde(rename = "rw", alias = "read-write")]
    ReadWrite,
}

/// The access a user asks a watchpoint to catch: the vocabulary debuggers use (gdb's `watch`,
/// `rwatch`, `awatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchAccess {
    /// Writes only.
    Write,
    /// Reads only. Never armable in a debug register: see [`BreakSpec::watch`].
    Read,
    /// Reads or writes.
    #[serde(rename = "rw", alias = "read-write")]
    ReadWrite,
}

/// Why a breakpoint request cannot be put into a debug register. Every message says what is
/// wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Bits 63:47 of the address differ.
    #[error(
        "address {addr:#x} is not canonical: bits 63:47 must all be equal for a 48-bit linear \
         address; did you mean {suggestion:#x}?"
    )]
    NonCanonical {
        /// The requested address.
        addr: u64,
        /// The address sign-extended from bit 47.
        suggestion: u64,
    },
    /// An execution breakpoint with a length other than 1.
    #[error(
        "an exec breakpoint must have length 1, got {len}: the CPU matches only the first byte \
         of an instruction and LEN must be 00 for RW=00 (SDM 17.2.5); use length 1"
    )]
    ExecLength {
        /// The requested length.
        len: u8,
    },
    /// A watch length other than 1, 2, 4 or 8.
    #[error(
        "watch length {len} is not possible: a debug register covers 1, 2, 4 or 8 bytes \
         (SDM 17.2.5); use one of those, or split the range into several aligned watches"
    )]
    BadLength {
        /// The requested length.
        len: u8,
    },
    /// The address is not a multiple of the length.
    #[error(
        "address {addr:#x} is not aligned to its length {len}: the CPU ignores the low address \
         bits (SDM 17.2.5), so this watch would cover {aligned:#x}..{end:#x} instead; use an \
         address that is a multiple of {len}, or a smaller length",
        aligned = addr & !(u64::from(*len) - 1),
        end = (addr & !(u64::from(*len) - 1)).wrapping_add(u64::from(*len))
    )]
    Misaligned {
        /// The requested address.
        addr: u64,
        /// The requested length (1, 2, 4 or 8).
        len: u8,
    },
    /// A read-only watch.
    #[error(
        "x86 debug registers cannot watch reads alone: RW=11 fires on reads *and* writes and \
         there is no read-only encoding (SDM 17.2.4); ask for an `rw` watch and ignore the \
         write hits"
    )]
    ReadOnlyWatch,
    /// An I/O breakpoint (DR7 RW=10).
    #[error(
        "I/O breakpoints (DR7 RW=10) are not supported: KVM emulates port I/O without checking \
         them; watch the device's port handler with an exec breakpoint instead"
    )]
    IoBreakpoint,
    /// A kind or access name nobody knows.
    #[error("unknown breakpoint kind `{0}`: use exec, write, read or rw")]
    UnknownKind(String),
}

/// Addresses whose bits 63:47 are all equal (4-level paging; SDM Vol. 1, 3.3.7.1). A slot
/// loaded with any other address never matches, so the request would silently never fire.
fn canonical(addr: u64) -> Result<(), SpecError> {
    let top = addr >> 47;
    if top == 0 || top == (1 << 17) - 1 {
        Ok(())
    } else {
        // Sign-extend from bit 47: the two shifts keep the low 48 bits and copy bit 47 upwards.
        let suggestion = ((addr << 16) as i64 >> 16) as u64;
        Err(SpecError::NonCanonical { addr, suggestion })
    }
}

/// One request for a hardware slot: a validated address, kind and length.
///
/// The fields are private so that every `BreakSpec` in existence fits a debug register; build
/// one with [`BreakSpec::exec`], [`BreakSpec::watch`] or [`BreakSpec::new`]. Deserializing
/// runs the same checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawBreakSpec")]
pub struct BreakSpec {
    addr: u64,
    kind: BreakKind,
    len: u8,
}

/// The unchecked wire form of a [`BreakSpec`].
#[derive(Deserialize)]
struct RawBreakSpec {
    addr: u64,
    kind: BreakKind,
    #[serde(default = "one")]
    len: u8,
}

fn one() -> u8 {
    1
}

impl TryFrom<RawBreakSpec> for BreakSpec {
    type Error = SpecError;

    fn try_from(raw: RawBreakSpec) -> Result<Self, Self::Error> {
        BreakSpec::new(raw.addr, raw.kind, raw.len)
    }
}

impl BreakSpec {
    /// An execution breakpoint at `addr`.
    pub fn exec(addr: u64) -> Result<BreakSpec, SpecError> {
        BreakSpec::new(addr, BreakKind::Exec, 1)
    }

    /// A watchpoint on `len` bytes at `addr`.
    ///
    /// **Explicit rule: a read-only watch is refused** with [`SpecError::ReadOnlyWatch`]. x86
    /// has no read-only encoding (RW=11 is read *or* write), and silently widening it would
    /// report writes the user did not ask for. Callers that accept the widening ask for
    /// [`WatchAccess::ReadWrite`] and filter, or use a page-protection watch.
    pub fn watch(addr: u64, access: WatchAccess, len: u8) -> Result<BreakSpec, SpecError> {
        let kind = match access {
            WatchAccess::Write => BreakKind::Write,
            WatchAccess::ReadWrite => BreakKind::ReadWrite,
            WatchAccess::Read => return Err(SpecError::ReadOnlyWatch),
        };
        BreakSpec::new(addr, kind, len)
    }

    /// Any kind. Checks, in this order: the address is canonical; an exec breakpoint has length
    /// 1; a watch has length 1, 2, 4 or 8; the address is aligned to the length.
    pub fn new(addr: u64, kind: BreakKind, len: u8) -> Result<BreakSpec, SpecError> {
        canonical(addr)?;
        if kind == BreakKind::Exec && len != 1 {
            return Err(SpecError::ExecLength { len });
        }
        if DrLen::from_bytes(len).is_none() {
            return Err(SpecError::BadLength { len });
        }
        // `len` is a power of two here, so the low bits are the remainder.
        if addr & (u64::from(len) - 1) != 0 {
            return Err(SpecError::Misaligned { addr, len });
        }
        Ok(BreakSpec { addr, kind, len })
    }

    /// The spec a slot's DR7 fields describe. Refuses RW=10 (I/O) and, like [`BreakSpec::new`],
    /// non-canonical, misaligned or exec-with-LEN≠00 combinations.
    pub fn from_dr7_fields(addr: u64, rw: DrKind, len: DrLen) -> Result<BreakSpec, SpecError> {
        let kind = match rw {
            DrKind::Exec => BreakKind::Exec,
            DrKind::Write => BreakKind::Write,
            DrKind::ReadWrite => BreakKind::ReadWrite,
            DrKind::Io => return Err(SpecError::IoBreakpoint),
        };
        BreakSpec::new(addr, kind, len.bytes())
    }

    /// The linear address.
    pub const fn addr(&self) -> u64 {
        self.addr
    }

    /// The kind.
    pub const fn kind(&self) -> BreakKind {
        self.kind
    }

    /// The length in bytes: 1 for exec, 1, 2, 4 or 8 for watches.
    // Never zero, so an `is_empty` would always be false.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> u8 {
        self.len
    }

    /// The DR7 RW and LEN fields for this spec (SDM 17.2.4-17.2.5).
    pub const fn to_dr7_fields(&self) -> (DrKind, DrLen) {
        let rw = match self.kind {
            BreakKind::Exec => DrKind::Exec,
            BreakKind::Write => DrKind::Write,
            BreakKind::ReadWrite => DrKind::ReadWrite,
        };
        // Every constructor checked the length, so the fallback is unreachable.
        let len = match DrLen::from_bytes(self.len) {
            Some(len) => len,
            None => DrLen::One,
        };
        (rw, len)
    }
}

/// `exec@0x...` or `write/4@0x...`.
impl fmt::Display for BreakSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BreakKind::Exec => write!(f, "exec@{:#x}", self.addr),
            kind => write!(f, "{kind}/{}@{:#x}", self.len, self.addr),
        }
    }
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Exec => "exec",
            BreakKind::Write => "write",
            BreakKind::ReadWrite => "rw",
        })
    }
}

impl fmt::Display for WatchAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatchAccess::Write => "write",
            WatchAccess::Read => "read",
            WatchAccess::ReadWrite => "rw",
        })
    }
}

/// Accepts `write`/`w`, `read`/`r`, `rw`/`read-write`/`access`/`a` (gdb's `awatch`).
impl FromStr for WatchAccess {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "write" | "w" => Ok(WatchAccess::Write),
            "read" | "r" => Ok(WatchAccess::Read),
            "rw" | "read-write" | "access" | "a" => Ok(WatchAccess::ReadWrite),
            other => Err(SpecError::UnknownKind(other.to_owned())),
        }
    }
}

/// Accepts `exec`/`x` and every [`WatchAccess`] name; `read` is refused like
/// [`BreakSpec::watch`] refuses it, and `io` with [`SpecError::IoBreakpoint`].
impl FromStr for BreakKind {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exec" | "x" => Ok(BreakKind::Exec),
            "io" => Err(SpecError::IoBreakpoint),
            other => match other.parse::<WatchAccess>()? {
                WatchAccess::Write => Ok(BreakKind::Write),
                WatchAccess::ReadWrite => Ok(BreakKind::ReadWrite),
                WatchAccess::Read => Err(SpecError::ReadOnlyWatch),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: u64 = 0xffff_ffff_8100_0000;

    #[test]
    fn valid_specs() {
        let table = [
            (0x1000, BreakKind::Exec, 1, DrKind::Exec, DrLen::One),
            (KERNEL + 3, BreakKind::Exec, 1, DrKind::Exec, DrLen::One),
            (0x1001, BreakKind::Write, 1, DrKind::Write, DrLen::One),
            (0x1002, BreakKind::Write, 2, DrKind::Write, DrLen::Two),
            (
                0x1004,
                BreakKind::ReadWrite,
                4,
                DrKind::ReadWrite,
                DrLen::Four,
            ),
            (
                KERNEL + 8,
                BreakKind::ReadWrite,
                8,
                DrKind::ReadWrite,
                DrLen::Eight,
            ),
            (
                0x0000_7fff_ffff_fff8,
                BreakKind::Write,
                8,
                DrKind::Write,
                DrLen::Eight,
            ),
            (
                0xffff_8000_0000_0000,
                BreakKind::Write,
                8,
                DrKind::Write,
                DrLen::Eight,
            ),
        ];
        for (addr, kind, len, rw, dr_len) in table {
            let spec = BreakSpec::new(addr, kind, len).expect("valid");
            assert_eq!((spec.addr(), spec.kind(), spec.len()), (addr, kind, len));
            assert_eq!(spec.to_dr7_fields(), (rw, dr_len));
            assert_eq!(BreakSpec::from_dr7_fields(addr, rw, dr_len), Ok(spec));
        }
        assert_eq!(
            BreakSpec::exec(KERNEL).map(|s| s.kind()),
            Ok(BreakKind::Exec)
        );
    }

    #[test]
    fn every_error() {
        use SpecError::*;
        let table: [(u64, BreakKind, u8, SpecError); 9] = [
            (
                0x0000_8000_0000_0000,
                BreakKind::Exec,
                1,
                NonCanonical {
                    addr: 0x0000_8000_0000_0000,
                    suggestion: 0xffff_8000_0000_0000,
                },
            ),
            (
                0x1234_0000_0000_1000,
                BreakKind::Write,
                4,
                NonCanonical {
                    addr: 0x1234_0000_0000_1000,
                    suggestion: 0x1000,
                },
            ),
            (0x1000, BreakKind::Exec, 2, ExecLength { len: 2 }),
            (0x1000, BreakKind::Exec, 0, ExecLength { len: 0 }),
            (0x1000, BreakKind::Write, 0, BadLength { len: 0 }),
            (0x1000, BreakKind::Write, 3, BadLength { len: 3 }),
            (0x1000, BreakKind::ReadWrite, 16, BadLength { len: 16 }),
            (
                0x1002,
                BreakKind::Write,
                4,
                Misaligned {
                    addr: 0x1002,
                    len: 4,
                },
            ),
            (
                0x1004,
                BreakKind::ReadWrite,
                8,
                Misaligned {
                    addr: 0x1004,
                    len: 8,
                },
            ),
        ];
        for (addr, kind, len, err) in table {
            assert_eq!(
                BreakSpec::new(addr, kind, len),
                Err(err),
                "{addr:#x} {kind} {len}"
            );
        }
    }

    #[test]
    fn read_only_watch_is_refused_not_widened() {
        for len in [1, 2, 4, 8] {
            assert_eq!(
                BreakSpec::watch(0x2000, WatchAccess::Read, len),
                Err(SpecError::ReadOnlyWatch)
            );
        }
        let msg = SpecError::ReadOnlyWatch.to_string();
        assert!(
            msg.contains("cannot watch reads alone") && msg.contains("`rw`"),
            "{msg}"
        );
        assert_eq!(
            BreakSpec::watch(0x2000, WatchAccess::ReadWrite, 4).map(|s| s.kind()),
            Ok(BreakKind::ReadWrite)
        );
        assert_eq!(
            BreakSpec::watch(0x2000, WatchAccess::Write, 4).map(|s| s.kind()),
            Ok(BreakKind::Write)
        );
    }

    #[test]
    fn io_is_refused() {
        assert_eq!(
            BreakSpec::from_dr7_fields(0x3f8, DrKind::Io, DrLen::One),
            Err(SpecError::IoBreakpoint)
        );
        assert_eq!("io".parse::<BreakKind>(), Err(SpecError::IoBreakpoint));
    }

    #[test]
    fn from_dr7_fields_refuses_exec_with_long_len() {
        assert_eq!(
            BreakSpec::from_dr7_fields(0x1000, DrKind::Exec, DrLen::Four),
            Err(SpecError::ExecLength { len: 4 })
        );
    }

    #[test]
    fn every_message_says_how_to_fix() {
        let errors = [
            SpecError::NonCanonical {
                addr: 1 << 47,
                suggestion: 0xffff_8000_0000_0000,
            },
            SpecError::ExecLength { len: 4 },
            SpecError::BadLength { len: 3 },
            SpecError::Misaligned {
                addr: 0x1002,
                len: 4,
            },
            SpecError::ReadOnlyWatch,
            SpecError::IoBreakpoint,
            SpecError::UnknownKind("x".into()),
        ];
        let fixes = [
            "did you mean",
            "use length 1",
            "use one of",
            "use an address",
            "ask for",
            "instead",
            "use exec",
        ];
        for (err, fix) in errors.iter().zip(fixes) {
            let msg = err.to_string();
            assert!(msg.contains(fix), "{msg}");
        }
        let misaligned = SpecError::Misaligned {
            addr: 0x1002,
            len: 4,
        }
        .to_string();
        assert!(misaligned.contains("0x1000..0x1004"), "{misaligned}");
    }

    #[test]
    fn parse_and_display() {
        let kinds = [
            ("exec", Ok(BreakKind::Exec)),
            ("x", Ok(BreakKind::Exec)),
            ("write", Ok(BreakKind::Write)),
            ("w", Ok(BreakKind::Write)),
            ("rw", Ok(BreakKind::ReadWrite)),
            ("access", Ok(BreakKind::ReadWrite)),
            ("read", Err(SpecError::ReadOnlyWatch)),
            ("bogus", Err(SpecError::UnknownKind("bogus".into()))),
        ];
        for (text, expect) in kinds {
            assert_eq!(text.parse::<BreakKind>(), expect, "{text}");
        }
        for kind in [BreakKind::Exec, BreakKind::Write, BreakKind::ReadWrite] {
            assert_eq!(kind.to_string().parse::<BreakKind>(), Ok(kind));
        }
        for access in [
            WatchAccess::Write,
            WatchAccess::Read,
            WatchAccess::ReadWrite,
        ] {
            assert_eq!(access.to_string().parse::<WatchAccess>(), Ok(access));
        }
        let spec = BreakSpec::watch(0x1000, WatchAccess::Write, 4).expect("valid");
        assert_eq!(spec.to_string(), "write/4@0x1000");
        assert_eq!(
            BreakSpec::exec(0x10).expect("valid").to_string(),
            "exec@0x10"
        );
    }
}
