//! Breakpoint conditions: a small typed expression language evaluated in the VMM at each hit,
//! before any event, pause or client round trip. A hit whose condition is false is not
//! reported: the vCPU just continues.
//!
//! The language (docs/conditions.md has the grammar): integers, registers, `cpu`, `hits`,
//! memory reads `*(u32 *)(rdi + 8)`, C's operators with C's precedence, and on Linux guests
//! the current task's `comm`, `pid` and `tgid`. Parsing and type errors are the user's and
//! carry a column; faults at a hit (unmapped memory, division by zero) make the condition
//! false for that hit, and the first is logged.

pub mod ast;
pub mod error;
pub mod eval;
pub mod lexer;
pub mod parse;
pub mod typecheck;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

pub use error::{Error, Problem};
pub use eval::{Fault, Machine};

use crate::kernel::TaskLayout;

/// A parsed and checked condition, with what its hits came to.
pub struct Condition {
    text: String,
    expr: ast::Expr,
    uses_task: bool,
    matched: AtomicU64,
    faults: AtomicU64,
}

impl Condition {
    /// `text` parsed and type-checked.
    pub fn parse(text: &str) -> Result<Condition, Error> {
        let expr = parse::parse(text)?;
        Ok(Condition {
            text: text.to_owned(),
            uses_task: expr.uses_task(),
            expr,
            matched: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        })
    }

    /// As the user wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its tree.
    pub fn expr(&self) -> &ast::Expr {
        &self.expr
    }

    /// Whether it reads `comm`, `pid` or `tgid` (it then needs the guest's [`TaskLayout`]).
    pub fn uses_task(&self) -> bool {
        self.uses_task
    }

    /// Whether it holds at the hit `m` shows (pure: nothing counted).
    pub fn holds(&self, m: &impl Machine, task: Option<&TaskLayout>) -> Result<bool, Fault> {
        eval::value(&self.expr, m, task).map(|v| v != 0)
    }

    /// [`Condition::holds`] at a hit of breakpoint `label`, counted: a fault counts as false,
    /// and the first one is logged.
    pub fn test(&self, m: &impl Machine, task: Option<&TaskLayout>, label: &str) -> bool {
        match self.holds(m, task) {
            Ok(true) => {
                self.matched.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(false) => false,
            Err(fault) => {
                if self.faults.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "{}: condition `{}` could not be evaluated ({fault}); it counts as false at such hits (condition_faults counts them)",
                        crate::quote::cut(label),
                        crate::quote::cut(&self.text)
                    );
                }
                false
            }
        }
    }

    /// Hits at which it held.
    pub fn matched(&self) -> u64 {
        self.matched.load(Ordering::Relaxed)
    }

    /// Hits at which it could not be evaluated.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.text)
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Condition {}
