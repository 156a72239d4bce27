//! A walk up a kernel stack with its ORC table ([`super::orc`]), as the kernel's own
//! `unwind_next_frame` (`arch/x86/kernel/unwind_orc.c`) walks it: from the entry of the
//! current IP, the caller's SP (from SP or BP plus an offset), its return address just below
//! that SP, and its BP (unchanged, or saved at an offset). A `pt_regs` frame (an interrupt or
//! exception, or a system call's entry) is gone through with the registers it saved, and ends
//! the walk when they are user mode's. Pure: guest memory comes through [`Memory`].

use super::orc::{Entry, Kind, OrcTable, Reg};

/// Reads guest memory at a hit (through the vCPU's page tables).
pub trait Memory {
    /// The 8 bytes at guest-virtual `vaddr`, little-endian; `None` where not mapped.
    fn read_u64(&self, vaddr: u64) -> Option<u64>;
}

/// One frame of a backtrace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its instruction pointer: where the vCPU was (the first frame, and one resumed from a
    /// `pt_regs`), else a return address.
    pub ip: u64,
    /// Whether `ip` is a return address (whose call instruction is just before it, so it is
    /// looked up and named as `ip - 1`).
    pub returns: bool,
}

/// Why a walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At a frame marked as a stack's first (a task's entry point).
    EndOfStack,
    /// At a `pt_regs` frame whose registers are user mode's (a system call or a fault from
    /// user space).
    UserMode,
    /// Memory the walk needed is not mapped.
    Unreadable(u64),
    /// An IP outside the kernel's ORC table (not kernel code, or a module's).
    NotKernel(u64),
    /// An entry the walk cannot follow: why.
    Cannot(String),
    /// The caller's SP is not above the callee's: bad data, or a loop.
    NoProgress(u64),
    /// The frame limit.
    Limit,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::EndOfStack => f.write_str("end of stack"),
            Stop::UserMode => f.write_str("user mode"),
            Stop::Unreadable(a) => write!(f, "stack memory at {a:#x} not mapped"),
            Stop::NotKernel(ip) => write!(f, "{ip:#x} is not in the kernel's ORC table"),
            Stop::Cannot(why) => f.write_str(why),
            Stop::NoProgress(sp) => write!(f, "the stack did not grow at SP {sp:#x}"),
            Stop::Limit => f.write_str("frame limit"),
        }
    }
}

/// The registers a walk starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
}

/// A walk's frames, innermost first, and why it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backtrace {
    /// The frames: the first is the start's RIP.
    pub frames: Vec<Frame>,
    /// Why there are no more.
    pub stop: Stop,
}

/// `struct pt_regs` offsets (x86-64): `bp`, then the hardware's IRET frame.
const REGS_BP: u64 = 4 * 8;
const REGS_IP: u64 = 16 * 8;
/// The IRET frame (`ip`, `cs`, `flags`, `sp`, `ss`) starts at `pt_regs.ip`.
const IRET_CS: u64 = 8;
const IRET_SP: u64 = 3 * 8;

/// Walks at most `max` frames up from `start` (at least the first, RIP's).
pub fn unwind(table: &OrcTable, start: Start, mem: &impl Memory, max: usize) -> Backtrace {
    let mut frames = Vec::new();
    let (mut ip, mut sp, mut bp) = (start.rip, start.rsp, start.rbp);
    let mut returns = false;
    let stop = loop {
        let lookup = if returns { ip.wrapping_sub(1) } else { ip };
        if !table.covers(lookup) {
            break Stop::NotKernel(ip);
        }
        frames.push(Frame { ip, returns });
        let Some(entry) = table.find(lookup) else {
            break Stop::NotKernel(ip);
        };
        match step(entry, sp, bp, mem) {
            Ok(Next::Frame {
                ip: next_ip,
                sp: next_sp,
                bp: next_bp,
                from_regs,
            }) => {
                if !from_regs && next_sp <= sp {
                    break Stop::NoProgress(sp);
                }
                if frames.len() >= max {
                    break Stop::Limit;
                }
                // The next address is a return address unless this entry says the caller was
                // interrupted there (`signal`).
                (ip, sp, bp, returns) = (next_ip, next_sp, next_bp, !entry.signal);
            }
            Ok(Next::End(stop)) | Err(stop) => break stop,
        }
    };
    Backtrace { frames, stop }
}

enum Next {
    Frame {
        ip: u64,
        sp: u64,
        bp: u64,
        from_regs: bool,
    },
    End(Stop),
}

/// The caller of the frame at (`sp`, `bp`) that `entry` describes.
fn step(entry: &Entry, sp: u64, bp: u64, mem: &impl Memory) -> Result<Next, Stop> {
    let read = |at: u64| mem.read_u64(at).ok_or(Stop::Unreadable(at));
    let off = |base: u64, by: i16| base.wrapping_add_signed(i64::from(by));
    // The type first, as the kernel's `unwind_next_frame` checks it (6.4 on).
    match entry.kind {
        Kind::EndOfStack => return Ok(Next::End(Stop::EndOfStack)),
        Kind::Undefined => {
            return Err(Stop::Cannot(
                "an ORC entry that marks its code as having no unwind data".into(),
            ))
        }
        _ => {}
    }
    let prev_sp = match entry.sp_reg {
        Reg::Undefined if entry.end => return Ok(Next::End(Stop::EndOfStack)),
        Reg::Undefined => {
            return Err(Stop::Cannot(
                "an ORC entry with an undefined stack pointer".into(),
            ))
        }
        Reg::Sp => off(sp, entry.sp_offset),
        Reg::Bp => off(bp, entry.sp_offset),
        Reg::SpIndirect => off(read(sp)?, entry.sp_offset),
        Reg::BpIndirect => read(off(bp, entry.sp_offset))?,
        Reg::PrevSp | Reg::Other(_) => {
            return Err(Stop::Cannot(format!(
                "an ORC entry whose stack pointer is based on {:?}, which a walk from a hit does not have",
                entry.sp_reg
            )))
        }
    };
    let (ip, sp, regs_bp, from_regs) = match entry.kind {
        Kind::Call => (read(prev_sp.wrapping_sub(8))?, prev_sp, None, false),
        Kind::Regs | Kind::RegsPartial => {
            // `prev_sp` is the `pt_regs` (REGS) or its IRET frame (REGS_PARTIAL).
            let iret = match entry.kind {
                Kind::Regs => prev_sp.wrapping_add(REGS_IP),
                _ => prev_sp,
            };
            if read(iret.wrapping_add(IRET_CS))? & 3 != 0 {
                return Ok(Next::End(Stop::UserMode));
            }
            let saved_bp = match entry.kind {
                Kind::Regs => Some(read(prev_sp.wrapping_add(REGS_BP))?),
                _ => None,
            };
            (
                read(iret)?,
                read(iret.wrapping_add(IRET_SP))?,
                saved_bp,
                true,
            )
        }
        Kind::Unknown(n) => return Err(Stop::Cannot(format!("an ORC entry of unknown type {n}"))),
        // Taken care of before the stack pointer.
        Kind::EndOfStack | Kind::Undefined => {
            return Err(Stop::Cannot(format!("{:?}", entry.kind)))
        }
    };
    let bp = match entry.bp_reg {
        Reg::Undefined => regs_bp.unwrap_or(bp),
        Reg::PrevSp => read(off(prev_sp, entry.bp_offset))?,
        Reg::Bp => read(off(bp, entry.bp_offset))?,
        other => {
            return Err(Stop::Cannot(format!(
                "an ORC entry whose frame pointer is based on {other:?}"
            )))
        }
    };
    Ok(Next::Frame {
        ip,
        sp,
        bp,
        from_regs,
    })
}

#[cfg(test)]
#[path = "orc_unwind_tests.rs"]
mod tests;
