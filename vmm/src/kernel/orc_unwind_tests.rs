use std::collections::HashMap;

use super::*;
use crate::kernel::orc::OrcTable;

/// Guest memory: the words written, nothing else mapped.
#[derive(Default)]
struct Fake(HashMap<u64, u64>);

impl Memory for Fake {
    fn read_u64(&self, vaddr: u64) -> Option<u64> {
        self.0.get(&vaddr).copied()
    }
}

const TEXT: u64 = 0xffff_ffff_8100_0000;
const BASE: u64 = 0xffff_ffff_8200_0000;
const STACK: u64 = 0xffff_c900_0000_8000;

/// A table of `(start, sp_off, bp_off, sp_reg, bp_reg, type, end)` entries.
fn table(entries: &[(u64, i16, i16, u16, u16, u16, bool)]) -> OrcTable {
    let mut ips = Vec::new();
    let mut raw = Vec::new();
    for (i, &(ip, sp_off, bp_off, sp_reg, bp_reg, kind, end)) in entries.iter().enumerate() {
        let slot = BASE + 4 * i as u64;
        ips.extend((ip.wrapping_sub(slot) as i64 as i32).to_le_bytes());
        let bits = sp_reg | (bp_reg << 4) | (kind << 8) | (u16::from(end) << 10);
        raw.extend(sp_off.to_le_bytes());
        raw.extend(bp_off.to_le_bytes());
        raw.extend(bits.to_le_bytes());
    }
    OrcTable::from_sections(BASE, &ips, &raw).unwrap()
}

const SP: u16 = 5;
const BP: u16 = 4;
const PREV_SP: u16 = 1;
const UNDEF: u16 = 0;
const CALL: u16 = 0;
const REGS: u16 = 1;
const PARTIAL: u16 = 2;

/// Three functions: `leaf` (0x100.., at its first instruction: SP+8), `mid` (0x200..,
/// pushed BP: SP+16, BP saved at prev_sp-16), `top` (0x300.., the end of the stack), and an
/// end marker at 0x400.
fn three() -> OrcTable {
    table(&[
        (TEXT + 0x100, 8, 0, SP, UNDEF, CALL, false),
        (TEXT + 0x200, 16, -16, SP, PREV_SP, CALL, false),
        (TEXT + 0x300, 0, 0, UNDEF, UNDEF, CALL, true),
        (TEXT + 0x400, 0, 0, UNDEF, UNDEF, CALL, false),
    ])
}

fn ips(bt: &Backtrace) -> Vec<u64> {
    bt.frames.iter().map(|f| f.ip).collect()
}

#[test]
fn walks_call_frames_to_the_end_of_the_stack() {
    let mut mem = Fake::default();
    // leaf's return address at RSP, into mid; mid's frame: saved BP, then the return into top.
    mem.0.insert(STACK, TEXT + 0x210);
    mem.0.insert(STACK + 8, 0x1234_5678);
    mem.0.insert(STACK + 16, TEXT + 0x320);
    let start = Start {
        rip: TEXT + 0x100,
        rsp: STACK,
        rbp: 0xdead,
    };
    let bt = unwind(&three(), start, &mem, 16);
    assert_eq!(ips(&bt), [TEXT + 0x100, TEXT + 0x210, TEXT + 0x320]);
    assert_eq!(bt.stop, Stop::EndOfStack);
    assert!(!bt.frames[0].returns && bt.frames[1].returns && bt.frames[2].returns);
}

#[test]
fn the_frame_pointer_comes_back_from_where_the_entry_says() {
    // mid's caller's SP from BP: BP + 16, and BP restored from BP + 0.
    let t = table(&[
        (TEXT + 0x100, 16, 0, BP, BP, CALL, false),
        (TEXT + 0x200, 0, 0, UNDEF, UNDEF, CALL, true),
        (TEXT + 0x300, 0, 0, UNDEF, UNDEF, CALL, false),
    ]);
    let mut mem = Fake::default();
    let bp = STACK + 0x40;
    mem.0.insert(bp, 0x4242);
    mem.0.insert(bp + 8, TEXT + 0x208);
    let bt = unwind(
        &t,
        Start {
            rip: TEXT + 0x150,
            rsp: STACK,
            rbp: bp,
        },
        &mem,
        16,
    );
    assert_eq!(ips(&bt), [TEXT + 0x150, TEXT + 0x208]);
    assert_eq!(bt.stop, Stop::EndOfStack);
}

#[test]
fn a_return_address_is_looked_up_one_byte_before_it() {
    // `leaf` ends with a call to a function that does not return: the return address is the
    // next function's first byte, whose entry (the end of the stack) must not be used.
    let t = table(&[
        (TEXT + 0x100, 8, 0, SP, UNDEF, CALL, false),
        (TEXT + 0x200, 0, 0, UNDEF, UNDEF, CALL, true),
        (TEXT + 0x300, 0, 0, UNDEF, UNDEF, CALL, false),
    ]);
    let mut mem = Fake::default();
    mem.0.insert(STACK, TEXT + 0x200);
    mem.0.insert(STACK + 8, TEXT + 0x250);
    let start = Start {
        rip: TEXT + 0x100,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&t, start, &mem, 16);
    // 0x200 is looked up as 0x1ff, in `leaf` (SP+8): one more frame, at 0x250 (the end).
    assert_eq!(ips(&bt), [TEXT + 0x100, TEXT + 0x200, TEXT + 0x250]);
    assert_eq!(bt.stop, Stop::EndOfStack);
}

#[test]
fn unreadable_memory_a_foreign_ip_and_the_limit_stop_the_walk() {
    let start = Start {
        rip: TEXT + 0x100,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&three(), start, &Fake::default(), 16);
    assert_eq!(ips(&bt), [TEXT + 0x100]);
    assert_eq!(bt.stop, Stop::Unreadable(STACK));

    let mut mem = Fake::default();
    mem.0.insert(STACK, 0x40_1000);
    let bt = unwind(&three(), start, &mem, 16);
    assert_eq!(ips(&bt), [TEXT + 0x100]);
    assert_eq!(bt.stop, Stop::NotKernel(0x40_1000));

    mem.0.insert(STACK, TEXT + 0x210);
    mem.0.insert(STACK + 8, 0);
    mem.0.insert(STACK + 16, TEXT + 0x320);
    let bt = unwind(&three(), start, &mem, 2);
    assert_eq!(ips(&bt), [TEXT + 0x100, TEXT + 0x210]);
    assert_eq!(bt.stop, Stop::Limit);
}

#[test]
fn a_stack_that_does_not_grow_is_bad_data() {
    // SP - 8: the caller's SP below the callee's.
    let t = table(&[
        (TEXT + 0x100, -8, 0, SP, UNDEF, CALL, false),
        (TEXT + 0x200, 0, 0, UNDEF, UNDEF, CALL, false),
    ]);
    let mut mem = Fake::default();
    mem.0.insert(STACK - 16, TEXT + 0x180);
    let start = Start {
        rip: TEXT + 0x100,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&t, start, &mem, 16);
    assert_eq!(bt.stop, Stop::NoProgress(STACK));
    assert_eq!(ips(&bt), [TEXT + 0x100]);
}

#[test]
fn an_undefined_stack_pointer_without_the_end_mark_is_told() {
    let start = Start {
        rip: TEXT + 0x400,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&three(), start, &Fake::default(), 16);
    assert!(
        matches!(bt.stop, Stop::Cannot(ref why) if why.contains("undefined")),
        "{:?}",
        bt.stop
    );
}

/// An interrupt entry at 0x500 whose `pt_regs` is at SP (REGS, SP+0), interrupting `mid` at
/// 0x234 with BP 0x77, and `mid`'s caller `top`.
#[test]
fn a_kernel_pt_regs_frame_is_gone_through_with_its_saved_registers() {
    let t = table(&[
        (TEXT + 0x200, 16, -16, SP, PREV_SP, CALL, false),
        (TEXT + 0x300, 0, 0, UNDEF, UNDEF, CALL, true),
        (TEXT + 0x400, 0, 0, UNDEF, UNDEF, CALL, false),
        (TEXT + 0x500, 0, 0, SP, UNDEF, REGS, false),
    ]);
    let regs = STACK;
    let task_sp = STACK + 0x1000;
    let mut mem = Fake::default();
    mem.0.insert(regs + REGS_BP, 0x77);
    mem.0.insert(regs + REGS_IP, TEXT + 0x234);
    mem.0.insert(regs + REGS_IP + IRET_CS, 0x10);
    mem.0.insert(regs + REGS_IP + IRET_SP, task_sp);
    mem.0.insert(task_sp, 0x99);
    mem.0.insert(task_sp + 8, TEXT + 0x310);
    let start = Start {
        rip: TEXT + 0x500,
        rsp: regs,
        rbp: 0,
    };
    let bt = unwind(&t, start, &mem, 16);
    assert_eq!(ips(&bt), [TEXT + 0x500, TEXT + 0x234, TEXT + 0x310]);
    assert!(
        !bt.frames[1].returns,
        "the interrupted IP is no return address"
    );
    assert_eq!(bt.stop, Stop::EndOfStack);
}

#[test]
fn a_user_mode_iret_frame_ends_the_walk() {
    let t = table(&[
        (TEXT + 0x500, 0, 0, SP, UNDEF, PARTIAL, false),
        (TEXT + 0x600, 0, 0, UNDEF, UNDEF, CALL, false),
    ]);
    let mut mem = Fake::default();
    mem.0.insert(STACK, 0x40_1000);
    mem.0.insert(STACK + IRET_CS, 0x33);
    mem.0.insert(STACK + IRET_SP, 0x7fff_0000);
    let start = Start {
        rip: TEXT + 0x500,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&t, start, &mem, 16);
    assert_eq!(ips(&bt), [TEXT + 0x500]);
    assert_eq!(bt.stop, Stop::UserMode);
}

/// Memory that answers every read with the same word.
struct Everywhere(u64);

impl Memory for Everywhere {
    fn read_u64(&self, _: u64) -> Option<u64> {
        Some(self.0)
    }
}

#[test]
fn hostile_registers_and_stacks_end_the_walk_without_panicking() {
    // Every kind of entry, reached with registers and stack words at the edges of the address
    // space (the guest controls both): the walk ends, within the limit, whatever it reads.
    let t = table(&[
        (TEXT, 0, 0, UNDEF, UNDEF, CALL, false),
        (TEXT + 0x100, i16::MAX, i16::MIN, SP, PREV_SP, CALL, false),
        (TEXT + 0x200, i16::MIN, i16::MAX, BP, BP, CALL, false),
        (TEXT + 0x300, -8, 8, 9, UNDEF, REGS, false),
        (TEXT + 0x400, 8, -8, 8, PREV_SP, PARTIAL, false),
        (TEXT + 0x500, 0, 0, 7, 2, 3, false),
        (TEXT + 0x600, 0, 0, UNDEF, UNDEF, CALL, false),
    ]);
    let edges = [0, 1, 7, 8, TEXT, TEXT + 0x301, u64::MAX - 7, u64::MAX];
    for rip in (0..7).map(|i| TEXT + 0x100 * i + 1) {
        for &sp in &edges {
            for &word in &edges {
                let start = Start {
                    rip,
                    rsp: sp,
                    rbp: sp,
                };
                let bt = unwind(&t, start, &Everywhere(word), 8);
                assert!(bt.frames.len() <= 8);
            }
        }
    }
}

/// A table in the layout of Linux 6.4 on: `(start, sp_off, sp_reg, type, signal)`.
fn table_6_4(entries: &[(u64, i16, u16, u16, bool)]) -> OrcTable {
    let mut ips = Vec::new();
    let mut raw = Vec::new();
    for (i, &(ip, sp_off, sp_reg, kind, signal)) in entries.iter().enumerate() {
        let slot = BASE + 4 * i as u64;
        ips.extend((ip.wrapping_sub(slot) as i64 as i32).to_le_bytes());
        let bits = sp_reg | (kind << 8) | (u16::from(signal) << 11);
        raw.extend(sp_off.to_le_bytes());
        raw.extend(0i16.to_le_bytes());
        raw.extend(bits.to_le_bytes());
    }
    OrcTable::from_sections_in(crate::kernel::orc::Layout::Linux6_4, BASE, &ips, &raw).unwrap()
}

#[test]
fn on_6_4_a_signal_call_frame_names_its_caller_exactly_and_end_of_stack_is_a_type() {
    const UNDEFINED: u16 = 0;
    const END_OF_STACK: u16 = 1;
    const CALL_6_4: u16 = 2;
    // `leaf` at its first instruction, marked `signal`: its caller's address is where that
    // caller was interrupted, at the first byte of `top` (looked up as it is: one byte before
    // would be `mid`'s). `top` ends the stack; past 0x400 nothing is known.
    let t = table_6_4(&[
        (TEXT + 0x100, 8, SP, CALL_6_4, true),
        (TEXT + 0x200, 8, SP, CALL_6_4, false),
        (TEXT + 0x300, 0, UNDEF, END_OF_STACK, false),
        (TEXT + 0x400, 0, UNDEF, UNDEFINED, false),
    ]);
    let mut mem = Fake::default();
    mem.0.insert(STACK, TEXT + 0x300);
    let start = Start {
        rip: TEXT + 0x100,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&t, start, &mem, 16);
    assert_eq!(ips(&bt), [TEXT + 0x100, TEXT + 0x300]);
    assert!(
        !bt.frames[1].returns,
        "a signal frame's caller is not a return address"
    );
    assert_eq!(bt.stop, Stop::EndOfStack);
    // Code whose entry is UNDEFINED has no unwind data.
    let start = Start {
        rip: TEXT + 0x400,
        rsp: STACK,
        rbp: 0,
    };
    let bt = unwind(&t, start, &mem, 16);
    assert!(
        matches!(&bt.stop, Stop::Cannot(why) if why.contains("no unwind data")),
        "{:?}",
        bt.stop
    );
}
