//! A checked condition evaluated against one hit: no allocation, no panic. What cannot be
//! evaluated (memory the guest does not map, a division by zero) is a [`Fault`].

use super::ast::{BinOp, Expr, Field, Gpr, Load, UnOp};
use crate::kernel::TaskLayout;

/// What a condition sees of a hit.
pub trait Machine {
    /// A register's full 64 bits.
    fn reg(&self, r: Gpr) -> u64;
    /// The vCPU's index.
    fn cpu(&self) -> u64;
    /// The breakpoint's hit count, this hit included.
    fn hits(&self) -> u64;
    /// Fills `buf` from guest-virtual `addr` through the vCPU's page tables: a
    /// [`Fault::Unmapped`] if a byte is not mapped to RAM, [`Fault::NoPaging`] if the page
    /// tables cannot be located.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Fault>;
    /// The kernel's per-CPU base (GS base) at the hit, if the hit is in kernel mode.
    fn kernel_gs_base(&self) -> Result<u64, Fault>;
}

/// Why a condition could not be evaluated at a hit (it then counts as false).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A read of memory the guest does not map (or that is not RAM).
    #[error("reading {len} bytes at {addr:#x}: not mapped by the guest's page tables")]
    Unmapped {
        /// Where.
        addr: u64,
        /// How many bytes.
        len: u8,
    },
    /// `/` or `%` by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// The signed division of the most negative number by -1.
    #[error("signed division overflows")]
    DivisionOverflow,
    /// `<<` or `>>` by 64 or more.
    #[error("shift by {0}: a shift takes 0 to 63")]
    Shift(u64),
    /// The guest's page tables could not be located (no synced system registers).
    #[error(
        "the guest's page tables cannot be read at this hit (the exit brought no system registers)"
    )]
    NoPaging,
    /// The hit is in user mode: GS holds the user's base then, the kernel's is in the
    /// KERNEL_GS_BASE MSR, which the exit does not bring.
    #[error("comm, pid and tgid are read only at hits in kernel mode")]
    UserMode,
    /// The guest's task layout is not known.
    #[error("the guest's task layout is not known")]
    NoTaskLayout,
    /// A string where an integer is needed (the type check rules it out).
    #[error("a string where an integer is needed")]
    NotAnInteger,
}

/// `e`'s value at the hit `m` shows.
pub fn value(e: &Expr, m: &impl Machine, task: Option<&TaskLayout>) -> Result<u64, Fault> {
    Ok(match e {
        Expr::Int(n) => *n,
        Expr::Reg(r) => {
            let v = m.reg(r.gpr);
            if r.low32 {
                v & 0xffff_ffff
            } else {
                v
            }
        }
        Expr::Cpu => m.cpu(),
        Expr::Hits => m.hits(),
        Expr::Task(Field::Pid) => task_i32(m, task, |t| t.pid)?,
        Expr::Task(Field::Tgid) => task_i32(m, task, |t| t.tgid)?,
        Expr::Task(Field::Comm) | Expr::Str(_) => return Err(Fault::NotAnInteger),
        Expr::CommIs { equal, name } => {
            let comm = comm(m, task)?;
            let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            u64::from((comm[..len] == name[..]) == *equal)
        }
        Expr::Load(load, addr) => read(m, *load, value(addr, m, task)?)?,
        Expr::Unary(op, inner) => {
            let v = value(inner, m, task)?;
            match op {
                UnOp::Neg => v.wrapping_neg(),
                UnOp::Not => !v,
                UnOp::LogicalNot => u64::from(v == 0),
            }
        }
        Expr::Binary {
            op: BinOp::And,
            lhs,
            rhs,
            ..
        } => u64::from(value(lhs, m, task)? != 0 && value(rhs, m, task)? != 0),
        Expr::Binary {
            op: BinOp::Or,
            lhs,
            rhs,
            ..
        } => u64::from(value(lhs, m, task)? != 0 || value(rhs, m, task)? != 0),
        Expr::Binary {
            op,
            signed,
            lhs,
            rhs,
        } => arithmetic(*op, *signed, value(lhs, m, task)?, value(rhs, m, task)?)?,
    })
}

/// `a op b` on two evaluated operands (not `&&`/`||`, which short-circuit).
pub fn arithmetic(op: BinOp, signed: bool, a: u64, b: u64) -> Result<u64, Fault> {
    let (sa, sb) = (a as i64, b as i64);
    let shift = |b: u64| match b {
        0..=63 => Ok(b as u32),
        _ => Err(Fault::Shift(b)),
    };
    let divide = |f: fn(i64, i64) -> Option<i64>, g: fn(u64, u64) -> Option<u64>| {
        if b == 0 {
            Err(Fault::DivisionByZero)
        } else if signed {
            f(sa, sb).map(|v| v as u64).ok_or(Fault::DivisionOverflow)
        } else {
            g(a, b).ok_or(Fault::DivisionByZero)
        }
    };
    let compare = |o: std::cmp::Ordering| -> bool {
        let got = if signed { sa.cmp(&sb) } else { a.cmp(&b) };
        got == o
    };
    use std::cmp::Ordering::{Greater, Less};
    Ok(match op {
        BinOp::Add => a.wrapping_add(b),
        BinOp::Sub => a.wrapping_sub(b),
        BinOp::Mul => a.wrapping_mul(b),
        BinOp::Div => divide(i64::checked_div, u64::checked_div)?,
        BinOp::Rem => divide(i64::checked_rem, u64::checked_rem)?,
        BinOp::Shl => a << shift(b)?,
        BinOp::Shr if signed => (sa >> shift(b)?) as u64,
        BinOp::Shr => a >> shift(b)?,
        BinOp::BitAnd => a & b,
        BinOp::BitOr => a | b,
        BinOp::BitXor => a ^ b,
        BinOp::Eq => u64::from(a == b),
        BinOp::Ne => u64::from(a != b),
        BinOp::Lt => u64::from(compare(Less)),
        BinOp::Gt => u64::from(compare(Greater)),
        BinOp::Le => u64::from(!compare(Greater)),
        BinOp::Ge => u64::from(!compare(Less)),
        BinOp::And => u64::from(a != 0 && b != 0),
        BinOp::Or => u64::from(a != 0 || b != 0),
    })
}

/// A `load` at `addr`, zero- or sign-extended.
fn read(m: &impl Machine, load: Load, addr: u64) -> Result<u64, Fault> {
    let mut buf = [0u8; 8];
    let len = usize::from(load.bytes.clamp(1, 8));
    m.read(addr, &mut buf[..len])?;
    let v = u64::from_le_bytes(buf);
    Ok(match (load.signed, len) {
        (true, 1) => v as u8 as i8 as i64 as u64,
        (true, 2) => v as u16 as i16 as i64 as u64,
        (true, 4) => v as u32 as i32 as i64 as u64,
        _ => v,
    })
}

/// The current task's address: the pointer at GS base + `current_task`.
fn current(m: &impl Machine, layout: &TaskLayout) -> Result<u64, Fault> {
    let base = m.kernel_gs_base()?;
    read(
        m,
        Load {
            bytes: 8,
            signed: false,
        },
        base.wrapping_add(layout.current_task),
    )
}

fn task_i32(
    m: &impl Machine,
    task: Option<&TaskLayout>,
    field: fn(&TaskLayout) -> u64,
) -> Result<u64, Fault> {
    let layout = task.ok_or(Fault::NoTaskLayout)?;
    let at = current(m, layout)?.wrapping_add(field(layout));
    read(
        m,
        Load {
            bytes: 4,
            signed: true,
        },
        at,
    )
}

/// Who made a hit: the current task's `comm`, `pid` and `tgid` (a kernel-mode hit of a Linux
/// guest whose layout is known).
pub fn identity(m: &impl Machine, task: &TaskLayout) -> Result<(String, i32, i32), Fault> {
    // The current task is looked up once for the three fields.
    let at = current(m, task)?;
    let mut comm = [0u8; 16];
    m.read(at.wrapping_add(task.comm), &mut comm)?;
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    let i32_at = |field: u64| {
        let mut b = [0u8; 4];
        m.read(at.wrapping_add(field), &mut b)
            .map(|()| i32::from_le_bytes(b))
    };
    Ok((
        String::from_utf8_lossy(&comm[..len]).into_owned(),
        i32_at(task.pid)?,
        i32_at(task.tgid)?,
    ))
}

fn comm(m: &impl Machine, task: Option<&TaskLayout>) -> Result<[u8; 16], Fault> {
    let layout = task.ok_or(Fault::NoTaskLayout)?;
    let at = current(m, layout)?.wrapping_add(layout.comm);
    let mut buf = [0u8; 16];
    m.read(at, &mut buf)?;
    Ok(buf)
}
