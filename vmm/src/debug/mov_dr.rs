//! Decoding and emulating a guest `MOV` to or from a debug register, for hosts where a
//! host DR7.GD traps it (SDM Vol. 2B "MOV—Move to/from Debug Registers": `0F 21 /r` reads DRn
//! into r64, `0F 23 /r` writes r64 to DRn; the ModRM mod bits are ignored and treated as 11b).

use kvm_bindings::kvm_regs;

/// A decoded `MOV DR` instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovDr {
    /// `MOV DRn, r64` (true) or `MOV r64, DRn` (false).
    pub to_dr: bool,
    /// The debug register, 0-7.
    pub dr: u8,
    /// The general register, 0-15 in encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..).
    pub gpr: u8,
    /// Instruction length in bytes.
    pub len: u8,
}

/// Decodes `bytes` (at the guest's RIP) as a `MOV DR`, or `None` if it is something else.
pub fn decode(bytes: &[u8]) -> Option<MovDr> {
    let mut i = 0;
    let mut rex = 0u8;
    // Legacy prefixes are ignored by MOV DR; a REX prefix must come last.
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => i += 1,
            0x40..=0x4f => {
                rex = b;
                i += 1;
                break;
            }
            _ => break,
        }
    }
    let (op0, op1, modrm) = (*bytes.get(i)?, *bytes.get(i + 1)?, *bytes.get(i + 2)?);
    if op0 != 0x0f || !(op1 == 0x21 || op1 == 0x23) {
        return None;
    }
    let dr = ((modrm >> 3) & 7) | ((rex & 0x4) << 1);
    if dr > 7 {
        return None; // DR8-DR15 do not exist: #UD, not a debug-register access.
    }
    Some(MovDr {
        to_dr: op1 == 0x23,
        dr,
        gpr: (modrm & 7) | ((rex & 0x1) << 3),
        len: (i + 3) as u8,
    })
}

/// The general register `n` of `regs`.
pub fn gpr(regs: &kvm_regs, n: u8) -> u64 {
    match n {
        0 => regs.rax,
        1 => regs.rcx,
        2 => regs.rdx,
        3 => regs.rbx,
        4 => regs.rsp,
        5 => regs.rbp,
        6 => regs.rsi,
        7 => regs.rdi,
        8 => regs.r8,
        9 => regs.r9,
        10 => regs.r10,
        11 => regs.r11,
        12 => regs.r12,
        13 => regs.r13,
        14 => regs.r14,
        _ => regs.r15,
    }
}

/// Sets general register `n` of `regs`.
pub fn set_gpr(regs: &mut kvm_regs, n: u8, value: u64) {
    let r = match n {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    };
    *r = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_forms_a_kernel_emits() {
        // mov rax, dr0
        assert_eq!(
            decode(&[0x0f, 0x21, 0xc0]),
            Some(MovDr {
                to_dr: false,
                dr: 0,
                gpr: 0,
                len: 3
            })
        );
        // mov dr7, rcx
        assert_eq!(
            decode(&[0x0f, 0x23, 0xf9]),
            Some(MovDr {
                to_dr: true,
                dr: 7,
                gpr: 1,
                len: 3
            })
        );
        // mov dr6, r9 (REX.B)
        assert_eq!(
            decode(&[0x41, 0x0f, 0x23, 0xf1]),
            Some(MovDr {
                to_dr: true,
                dr: 6,
                gpr: 9,
                len: 4
            })
        );
        // mov r15, dr3 (REX.B)
        assert_eq!(
            decode(&[0x41, 0x0f, 0x21, 0xdf]),
            Some(MovDr {
                to_dr: false,
                dr: 3,
                gpr: 15,
                len: 4
            })
        );
    }

    #[test]
    fn refuses_other_instructions_and_dr8_up() {
        assert_eq!(decode(&[0x0f, 0x20, 0xc0]), None); // mov rax, cr0
        assert_eq!(decode(&[0x90]), None);
        assert_eq!(decode(&[0x44, 0x0f, 0x21, 0xc0]), None); // REX.R: DR8
        assert_eq!(decode(&[0x0f, 0x21]), None);
    }

    #[test]
    fn gpr_round_trip() {
        let mut r = kvm_regs::default();
        for n in 0..16 {
            set_gpr(&mut r, n, 100 + u64::from(n));
        }
        for n in 0..16 {
            assert_eq!(gpr(&r, n), 100 + u64::from(n));
        }
    }
}
