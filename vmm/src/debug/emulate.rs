//! Resuming past an exec breakpoint by emulating the instruction, where RF does not work: one
//! exit per hit instead of a step-over's two.
//!
//! Only instructions whose whole effect drvisor can reproduce exactly are emulated, the way
//! Linux "boosts" kprobes: every NOP form (including the 5-byte `nopl 0x0(%rax,%rax,1)` that
//! ftrace leaves at the entry of every kernel function), `endbr64`, and the frame prologue
//! `push %rbp`, `mov %rsp,%rbp` and `sub $imm,%rsp`. [`decode`] decides from the bytes alone,
//! with iced-x86; [`Emulable::apply`] changes the registers and says what to store. Whether the
//! vCPU's state allows it at all (long mode, TF, the interrupt shadow, the guest's own
//! breakpoints) is the caller's decision ([`super::resume`]).

use iced_x86::{Code, Decoder, DecoderOptions, Register};
use kvm_bindings::kvm_regs;

/// An instruction drvisor can run in place of the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulable {
    /// A NOP of any form, or `endbr64`: only RIP moves.
    Skip {
        /// Its length.
        len: u8,
        /// `endbr64` (it has no effect unless CET indirect-branch tracking is on).
        endbr: bool,
    },
    /// `push %rbp`.
    PushRbp {
        /// Its length (1, or more with redundant prefixes).
        len: u8,
    },
    /// `mov %rsp,%rbp`.
    MovRbpRsp {
        /// Its length.
        len: u8,
    },
    /// `sub $imm,%rsp`.
    SubRsp {
        /// Its length.
        len: u8,
        /// The immediate, sign-extended to 64 bits.
        imm: u64,
    },
}

/// A store the emulated instruction makes: 8 bytes at a guest-virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackStore {
    /// Where (guest-virtual, the new RSP).
    pub gva: u64,
    /// What (little-endian in memory).
    pub value: u64,
}

/// The one 64-bit instruction at the start of `bytes` (fetched at `rip`), if drvisor emulates
/// it. Anything else, a LOCK prefix, or bytes that end before the instruction does, is `None`.
pub fn decode(bytes: &[u8], rip: u64) -> Option<Emulable> {
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    if !decoder.can_decode() {
        return None;
    }
    let insn = decoder.decode();
    if insn.is_invalid() || insn.has_lock_prefix() {
        return None;
    }
    let len = u8::try_from(insn.len()).ok()?;
    let reg =
        |op: u32| (insn.op_kind(op) == iced_x86::OpKind::Register).then(|| insn.op_register(op));
    match insn.code() {
        Code::Nopw | Code::Nopd | Code::Nopq | Code::Nop_rm16 | Code::Nop_rm32 | Code::Nop_rm64 => {
            Some(Emulable::Skip { len, endbr: false })
        }
        Code::Endbr64 => Some(Emulable::Skip { len, endbr: true }),
        Code::Push_r64 if insn.op0_register() == Register::RBP => Some(Emulable::PushRbp { len }),
        Code::Mov_rm64_r64 | Code::Mov_r64_rm64
            if reg(0) == Some(Register::RBP) && reg(1) == Some(Register::RSP) =>
        {
            Some(Emulable::MovRbpRsp { len })
        }
        Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32 if reg(0) == Some(Register::RSP) => {
            Some(Emulable::SubRsp {
                len,
                imm: insn.immediate(1),
            })
        }
        _ => None,
    }
}

/// RFLAGS bits SUB writes (SDM Vol. 2B, SUB: "The OF, SF, ZF, AF, PF, and CF flags are set
/// according to the result").
const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;

/// The arithmetic flags of the 64-bit `dst - src`.
fn sub_flags(dst: u64, src: u64) -> u64 {
    let result = dst.wrapping_sub(src);
    let mut flags = 0;
    if dst < src {
        flags |= CF;
    }
    // PF: even parity of the low byte of the result.
    if (result as u8).count_ones() & 1 == 0 {
        flags |= PF;
    }
    if (dst ^ src ^ result) & 0x10 != 0 {
        flags |= AF;
    }
    if result == 0 {
        flags |= ZF;
    }
    if result >> 63 != 0 {
        flags |= SF;
    }
    if ((dst ^ src) & (dst ^ result)) >> 63 != 0 {
        flags |= OF;
    }
    flags
}

impl Emulable {
    /// Its length in bytes.
    pub fn len(&self) -> u8 {
        match *self {
            Emulable::Skip { len, .. }
            | Emulable::PushRbp { len }
            | Emulable::MovRbpRsp { len }
            | Emulable::SubRsp { len, .. } => len,
        }
    }

    /// Runs it on `regs`, as the processor would with RF and TF clear: RIP moves past it, and
    /// for `push` the returned store must reach guest memory before the guest runs again.
    pub fn apply(&self, regs: &mut kvm_regs) -> Option<StackStore> {
        regs.rip = regs.rip.wrapping_add(u64::from(self.len()));
        match *self {
            Emulable::Skip { .. } => None,
            Emulable::PushRbp { .. } => {
                regs.rsp = regs.rsp.wrapping_sub(8);
                Some(StackStore {
                    gva: regs.rsp,
                    value: regs.rbp,
                })
            }
            Emulable::MovRbpRsp { .. } => {
                regs.rbp = regs.rsp;
                None
            }
            Emulable::SubRsp { imm, .. } => {
                let flags = sub_flags(regs.rsp, imm);
                regs.rflags = (regs.rflags & !(CF | PF | AF | ZF | SF | OF)) | flags;
                regs.rsp = regs.rsp.wrapping_sub(imm);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multi-byte NOPs the SDM recommends (Vol. 2B, NOP, Table 4-12), plus the prefixed
    /// forms compilers and ftrace emit.
    const NOPS: &[&[u8]] = &[
        &[0x90],
        &[0x66, 0x90],
        &[0x48, 0x90],
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00], // ftrace's 5-byte NOP
        &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[
            0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        &[0x48, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    ];

    #[test]
    fn every_nop_form_is_skipped_by_its_length() {
        for nop in NOPS {
            let mut bytes = nop.to_vec();
            bytes.extend([0xcc; 15]);
            assert_eq!(
                decode(&bytes, 0x1000),
                Some(Emulable::Skip {
                    len: nop.len() as u8,
                    endbr: false
                }),
                "{nop:02x?}"
            );
        }
    }

    #[test]
    fn prologue_instructions() {
        let table: &[(&[u8], Option<Emulable>)] = &[
            (
                &[0xf3, 0x0f, 0x1e, 0xfa],
                Some(Emulable::Skip {
                    len: 4,
                    endbr: true,
                }),
            ),
            (&[0x55], Some(Emulable::PushRbp { len: 1 })),
            (&[0x48, 0x89, 0xe5], Some(Emulable::MovRbpRsp { len: 3 })),
            (&[0x48, 0x8b, 0xec], Some(Emulable::MovRbpRsp { len: 3 })),
            (
                &[0x48, 0x83, 0xec, 0x20],
                Some(Emulable::SubRsp { len: 4, imm: 0x20 }),
            ),
            (
                &[0x48, 0x83, 0xec, 0xf0],
                Some(Emulable::SubRsp {
                    len: 4,
                    imm: (-16i64) as u64,
                }),
            ),
            (
                &[0x48, 0x81, 0xec, 0x00, 0x01, 0x00, 0x00],
                Some(Emulable::SubRsp { len: 7, imm: 0x100 }),
            ),
        ];
        for (bytes, want) in table {
            assert_eq!(decode(bytes, 0x1000), *want, "{bytes:02x?}");
        }
    }

    #[test]
    fn everything_else_falls_back() {
        let table: &[&[u8]] = &[
            &[0xf0, 0x48, 0xff, 0x05, 0, 0, 0, 0], // lock incq (the lock-inc targets)
            &[0x53],                               // push %rbx
            &[0x66, 0x55],                         // push %bp (16-bit)
            &[0x41, 0x55],                         // push %r13
            &[0x48, 0x89, 0xe3],                   // mov %rsp,%rbx
            &[0x48, 0x89, 0x65, 0x00],             // mov %rsp,0(%rbp): a store
            &[0x48, 0x83, 0xeb, 0x08],             // sub $8,%rbx
            &[0x48, 0x83, 0xc4, 0x08],             // add $8,%rsp
            &[0x48, 0x29, 0xc4],                   // sub %rax,%rsp
            &[0xf3, 0x90],                         // pause
            &[0xcc],                               // int3
            &[0xc3],                               // ret
            &[0x0f, 0x1f],                         // a NOP cut short
            &[0xf0, 0x0f, 0x1f, 0x00],             // lock nop: #UD
            &[],
        ];
        for bytes in table {
            assert_eq!(decode(bytes, 0x1000), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn apply_moves_exactly_what_the_instruction_moves() {
        let base = kvm_regs {
            rip: 0x1000,
            rsp: 0x8000,
            rbp: 0x1234,
            rflags: 0x2 | (1 << 9),
            ..Default::default()
        };
        let mut r = base;
        assert_eq!(
            Emulable::Skip {
                len: 5,
                endbr: false
            }
            .apply(&mut r),
            None
        );
        assert_eq!(
            r,
            kvm_regs {
                rip: 0x1005,
                ..base
            }
        );

        let mut r = base;
        let store = Emulable::PushRbp { len: 1 }.apply(&mut r);
        assert_eq!(
            store,
            Some(StackStore {
                gva: 0x7ff8,
                value: 0x1234
            })
        );
        assert_eq!(
            r,
            kvm_regs {
                rip: 0x1001,
                rsp: 0x7ff8,
                ..base
            }
        );

        let mut r = base;
        Emulable::MovRbpRsp { len: 3 }.apply(&mut r);
        assert_eq!(
            r,
            kvm_regs {
                rip: 0x1003,
                rbp: 0x8000,
                ..base
            }
        );
    }

    #[test]
    fn sub_sets_the_flags_the_processor_sets() {
        // (rsp, imm, the flags by the SDM's definitions, worked out by hand).
        let table: &[(u64, u64, u64)] = &[
            (0x8000, 0x20, 0),          // 0x7fe0: e0 has three 1s (PF clear)
            (0x20, 0x20, ZF | PF),      // zero
            (0x10, 0x20, CF | SF | PF), // borrow, negative: ..fff0
            (1 << 63, 1, OF | AF | PF), // signed overflow: 0x7fff..ff
            (0x18, 0x09, AF | PF),      // borrow out of bit 3: 0x0f
        ];
        for &(rsp, imm, want) in table {
            let mut r = kvm_regs {
                rsp,
                rflags: 0x2 | (1 << 9) | CF | ZF | SF | OF | AF | PF,
                ..Default::default()
            };
            Emulable::SubRsp { len: 4, imm }.apply(&mut r);
            assert_eq!(r.rsp, rsp.wrapping_sub(imm));
            assert_eq!(r.rflags, 0x2 | (1 << 9) | want, "{rsp:#x} - {imm:#x}");
        }
    }
}
