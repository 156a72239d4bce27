//! The type check, applied by the parser as it builds each node (so a message can point at the
//! operand): every operand is an integer except `comm`, a string compared only with `==`/`!=`
//! to a string literal. It also decides each operator's signedness: signed if either operand
//! is (an `i8`..`i64` read, `pid`, `tgid`, or an expression of them), unsigned otherwise
//! (registers, literals, `u8`..`u64` reads, `cpu`, `hits`). Comparisons and `!`, `&&`, `||`
//! give an unsigned 0 or 1.

use super::ast::{BinOp, Expr, Field, Load, UnOp};
use super::error::{Error, Problem};

/// TASK_COMM_LEN - 1: a task's name without its NUL.
pub const COMM_MAX: usize = 15;

/// What an expression is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// An integer, signed or not.
    Int {
        /// `i8`..`i64` reads, `pid`, `tgid` and expressions of them.
        signed: bool,
    },
    /// A string literal.
    Str,
    /// `comm`.
    Comm,
}

/// An expression with its type and the column it starts at.
#[derive(Clone, Debug)]
pub struct Typed {
    /// The tree.
    pub expr: Expr,
    /// Its type.
    pub ty: Ty,
    /// Where it starts.
    pub column: usize,
}

impl Typed {
    /// A leaf.
    pub fn leaf(expr: Expr, column: usize) -> Typed {
        let ty = match &expr {
            Expr::Str(_) => Ty::Str,
            Expr::Task(Field::Comm) => Ty::Comm,
            Expr::Task(Field::Pid | Field::Tgid) => Ty::Int { signed: true },
            _ => Ty::Int { signed: false },
        };
        Typed { expr, ty, column }
    }

    /// Its signedness, if it is an integer; else the error at its column.
    fn int(&self) -> Result<bool, Error> {
        match self.ty {
            Ty::Int { signed } => Ok(signed),
            Ty::Str => Err(self.error(Problem::StringHere)),
            Ty::Comm => Err(self.error(Problem::CommHere)),
        }
    }

    fn error(&self, problem: Problem) -> Error {
        Error {
            column: self.column,
            problem,
        }
    }
}

/// The whole condition: an integer (true where not zero).
pub fn top(t: Typed) -> Result<Expr, Error> {
    t.int()?;
    Ok(t.expr)
}

/// `*(load *)addr`, starting at `column`.
pub fn load(load: Load, addr: Typed, column: usize) -> Result<Typed, Error> {
    addr.int()?;
    Ok(Typed {
        expr: Expr::Load(load, Box::new(addr.expr)),
        ty: Ty::Int {
            signed: load.signed,
        },
        column,
    })
}

/// `op inner`, starting at `column`.
pub fn unary(op: UnOp, inner: Typed, column: usize) -> Result<Typed, Error> {
    let signed = inner.int()? && op != UnOp::LogicalNot;
    Ok(Typed {
        expr: Expr::Unary(op, Box::new(inner.expr)),
        ty: Ty::Int { signed },
        column,
    })
}

/// `lhs op rhs`.
pub fn binary(op: BinOp, lhs: Typed, rhs: Typed) -> Result<Typed, Error> {
    let column = lhs.column;
    if let Some(is) = comm_comparison(op, &lhs, &rhs)? {
        return Ok(Typed {
            expr: is,
            ty: Ty::Int { signed: false },
            column,
        });
    }
    let signed = lhs.int()? | rhs.int()?;
    let gives_bool = op.is_comparison() || matches!(op, BinOp::And | BinOp::Or);
    Ok(Typed {
        expr: Expr::Binary {
            op,
            signed,
            lhs: Box::new(lhs.expr),
            rhs: Box::new(rhs.expr),
        },
        ty: Ty::Int {
            signed: signed && !gives_bool,
        },
        column,
    })
}

/// `comm == "x"`, `"x" != comm`: the comparison as [`Expr::CommIs`]; `None` if it is not one.
fn comm_comparison(op: BinOp, lhs: &Typed, rhs: &Typed) -> Result<Option<Expr>, Error> {
    let (name, literal) = match (&lhs.expr, &rhs.expr) {
        (Expr::Task(Field::Comm), Expr::Str(s)) => (s, rhs),
        (Expr::Str(s), Expr::Task(Field::Comm)) => (s, lhs),
        _ => return Ok(None),
    };
    let equal = match op {
        BinOp::Eq => true,
        BinOp::Ne => false,
        _ => {
            let comm = if lhs.ty == Ty::Comm { lhs } else { rhs };
            return Err(comm.error(Problem::CommHere));
        }
    };
    if name.len() > COMM_MAX || name.contains(&0) {
        return Err(literal.error(Problem::CommTooLong(
            String::from_utf8_lossy(name).into_owned(),
        )));
    }
    Ok(Some(Expr::CommIs {
        equal,
        name: name.clone(),
    }))
}
