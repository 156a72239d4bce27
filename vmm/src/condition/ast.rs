//! A condition's syntax tree, and how it prints back (fully parenthesized, so that printing
//! and parsing again gives the same tree).

use std::fmt;

/// A register a condition reads (the variants are the registers' names).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gpr {
    Rax,
    Rbx,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    Rsp,
    Rbp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    Rip,
    Rflags,
}

/// A register name: the full 64 bits, or the low 32 (`eax`, `r8d`, `eflags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// Which register.
    pub gpr: Gpr,
    /// Only its low 32 bits.
    pub low32: bool,
}

/// Every register name, with what it reads.
pub const REGISTERS: &[(&str, Gpr, bool)] = &[
    ("rax", Gpr::Rax, false),
    ("rbx", Gpr::Rbx, false),
    ("rcx", Gpr::Rcx, false),
    ("rdx", Gpr::Rdx, false),
    ("rsi", Gpr::Rsi, false),
    ("rdi", Gpr::Rdi, false),
    ("rsp", Gpr::Rsp, false),
    ("rbp", Gpr::Rbp, false),
    ("r8", Gpr::R8, false),
    ("r9", Gpr::R9, false),
    ("r10", Gpr::R10, false),
    ("r11", Gpr::R11, false),
    ("r12", Gpr::R12, false),
    ("r13", Gpr::R13, false),
    ("r14", Gpr::R14, false),
    ("r15", Gpr::R15, false),
    ("rip", Gpr::Rip, false),
    ("rflags", Gpr::Rflags, false),
    ("eax", Gpr::Rax, true),
    ("ebx", Gpr::Rbx, true),
    ("ecx", Gpr::Rcx, true),
    ("edx", Gpr::Rdx, true),
    ("esi", Gpr::Rsi, true),
    ("edi", Gpr::Rdi, true),
    ("esp", Gpr::Rsp, true),
    ("ebp", Gpr::Rbp, true),
    ("r8d", Gpr::R8, true),
    ("r9d", Gpr::R9, true),
    ("r10d", Gpr::R10, true),
    ("r11d", Gpr::R11, true),
    ("r12d", Gpr::R12, true),
    ("r13d", Gpr::R13, true),
    ("r14d", Gpr::R14, true),
    ("r15d", Gpr::R15, true),
    ("eip", Gpr::Rip, true),
    ("eflags", Gpr::Rflags, true),
];

impl Reg {
    /// The register called `name`.
    pub fn named(name: &str) -> Option<Reg> {
        REGISTERS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, gpr, low32)| Reg { gpr, low32 })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        REGISTERS
            .iter()
            .find(|(_, g, l)| *g == self.gpr && *l == self.low32)
            .map(|(n, _, _)| *n)
            .unwrap_or("?")
    }
}

/// The current task's fields (Linux guests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `task_struct.comm`: a string.
    Comm,
    /// `task_struct.pid`.
    Pid,
    /// `task_struct.tgid`.
    Tgid,
}

/// The width and signedness of a memory read, `*(u32 *)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Bytes: 1, 2, 4 or 8.
    pub bytes: u8,
    /// `i8`..`i64`: sign-extended.
    pub signed: bool,
}

impl Load {
    /// The type called `name` (`u8`..`u64`, `i8`..`i64`).
    pub fn named(name: &str) -> Option<Load> {
        let (signed, bits) = match name.split_at_checked(1)? {
            ("u", bits) => (false, bits),
            ("i", bits) => (true, bits),
            _ => return None,
        };
        let bytes = match bits {
            "8" => 1,
            "16" => 2,
            "32" => 4,
            "64" => 8,
            _ => return None,
        };
        Some(Load { bytes, signed })
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.signed { 'i' } else { 'u' };
        write!(f, "{sign}{}", u32::from(self.bytes) * 8)
    }
}

/// A prefix operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-`: two's complement.
    Neg,
    /// `~`: every bit flipped.
    Not,
    /// `!`: 1 if zero, else 0.
    LogicalNot,
}

/// An infix operator (the variants are C's operators, named; [`BINARY`] has their text).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Shl,
    Shr,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    BitAnd,
    BitXor,
    BitOr,
    And,
    Or,
}

/// Every infix operator: its text and binding power (higher binds tighter), as in C.
pub const BINARY: &[(&str, BinOp, u8)] = &[
    ("||", BinOp::Or, 1),
    ("&&", BinOp::And, 2),
    ("|", BinOp::BitOr, 3),
    ("^", BinOp::BitXor, 4),
    ("&", BinOp::BitAnd, 5),
    ("==", BinOp::Eq, 6),
    ("!=", BinOp::Ne, 6),
    ("<", BinOp::Lt, 7),
    ("<=", BinOp::Le, 7),
    (">", BinOp::Gt, 7),
    (">=", BinOp::Ge, 7),
    ("<<", BinOp::Shl, 8),
    (">>", BinOp::Shr, 8),
    ("+", BinOp::Add, 9),
    ("-", BinOp::Sub, 9),
    ("*", BinOp::Mul, 10),
    ("/", BinOp::Div, 10),
    ("%", BinOp::Rem, 10),
];

impl BinOp {
    /// Its text.
    pub fn text(self) -> &'static str {
        BINARY
            .iter()
            .find(|(_, op, _)| *op == self)
            .map(|(t, _, _)| *t)
            .unwrap_or("?")
    }

    /// A comparison: its result is 0 or 1.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

/// An expression. `signed` on an operator is decided by the type check (signed if either
/// operand is); the parser leaves it `false`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// An integer literal.
    Int(u64),
    /// A string literal (only beside `comm` in `==`/`!=`).
    Str(Box<[u8]>),
    /// A register.
    Reg(Reg),
    /// The vCPU's index.
    Cpu,
    /// The breakpoint's hit count, this hit included.
    Hits,
    /// A field of the current task.
    Task(Field),
    /// A memory read through the vCPU's page tables.
    Load(Load, Box<Expr>),
    /// A prefix operator.
    Unary(UnOp, Box<Expr>),
    /// An infix operator.
    Binary {
        /// Which.
        op: BinOp,
        /// Compared, divided and shifted as signed.
        signed: bool,
        /// The left operand.
        lhs: Box<Expr>,
        /// The right operand.
        rhs: Box<Expr>,
    },
    /// `comm == "..."` or `comm != "..."`, after the type check.
    CommIs {
        /// `==` (else `!=`).
        equal: bool,
        /// The name compared with.
        name: Box<[u8]>,
    },
}

impl Expr {
    /// Whether it reads the current task (needs a [`crate::kernel::TaskLayout`]).
    pub fn uses_task(&self) -> bool {
        match self {
            Expr::Task(_) | Expr::CommIs { .. } => true,
            Expr::Int(_) | Expr::Str(_) | Expr::Reg(_) | Expr::Cpu | Expr::Hits => false,
            Expr::Load(_, e) | Expr::Unary(_, e) => e.uses_task(),
            Expr::Binary { lhs, rhs, .. } => lhs.uses_task() || rhs.uses_task(),
        }
    }
}

fn write_str(f: &mut fmt::Formatter<'_>, s: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Int(n) => write!(f, "{n:#x}"),
            Expr::Str(s) => write_str(f, s),
            Expr::Reg(r) => f.write_str(r.name()),
            Expr::Cpu => f.write_str("cpu"),
            Expr::Hits => f.write_str("hits"),
            Expr::Task(Field::Comm) => f.write_str("comm"),
            Expr::Task(Field::Pid) => f.write_str("pid"),
            Expr::Task(Field::Tgid) => f.write_str("tgid"),
            Expr::Load(load, e) => write!(f, "*({load} *)({e})"),
            Expr::Unary(op, e) => {
                let op = match op {
                    UnOp::Neg => '-',
                    UnOp::Not => '~',
                    UnOp::LogicalNot => '!',
                };
                write!(f, "{op}({e})")
            }
            Expr::Binary { op, lhs, rhs, .. } => write!(f, "({lhs} {} {rhs})", op.text()),
            Expr::CommIs { equal, name } => {
                write!(f, "(comm {} ", if *equal { "==" } else { "!=" })?;
                write_str(f, name)?;
                f.write_str(")")
            }
        }
    }
}
