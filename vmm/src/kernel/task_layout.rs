//! Where a Linux kernel keeps the running task and its identity, from the kernel's own BTF
//! and kallsyms: enough to read the current task's `pid`, `tgid` and `comm` from guest memory
//! (a hit's condition on the process that hit).
//!
//! The current task pointer is a per-cpu variable: `current_task` up to 6.1 and again from
//! 6.15, the member `current_task` of `pcpu_hot` from 6.2 to 6.14. Either way the kernel reads
//! it as `%gs:VALUE`, so the pointer is at GS base + [`TaskLayout::current_task`].

use object::{Object, ObjectSection};

use super::btf::{self, Btf};
use crate::symbols::SymbolTable;

/// Offsets to find the current task and its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    /// The per-cpu offset of the current task pointer (`current_task`, or `pcpu_hot` plus its
    /// member `current_task`): the pointer is at GS base + this.
    pub current_task: u64,
    /// Byte offset of `pid` in `struct task_struct`.
    pub pid: u64,
    /// Byte offset of `tgid` in `struct task_struct`.
    pub tgid: u64,
    /// Byte offset of `comm` (16 bytes, NUL-terminated) in `struct task_struct`.
    pub comm: u64,
}

/// Why the layout could not be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not an ELF.
    #[error("the kernel is not an ELF: {source}")]
    NotElf {
        /// The ELF reader's reason.
        source: object::read::Error,
    },
    /// The `.BTF` section's bytes cannot be had (it lies past the file's end, say).
    #[error("the kernel's .BTF section cannot be read: {source}")]
    BtfUnreadable {
        /// The ELF reader's reason.
        source: object::read::Error,
    },
    /// No `.BTF` section: a kernel built without `CONFIG_DEBUG_INFO_BTF`.
    #[error("the kernel has no .BTF section (built without CONFIG_DEBUG_INFO_BTF)")]
    NoBtf,
    /// The `.BTF` section does not parse.
    #[error("the kernel's .BTF section: {0}")]
    Btf(#[source] btf::Error),
    /// A type or member the layout needs is not in the BTF.
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
    /// Neither per-cpu symbol is known.
    #[error("no per-cpu `current_task` or `pcpu_hot` among the kernel's symbols")]
    NoCurrentTask,
}

/// The layout of the kernel ELF `elf` (a vmlinux, or the kernel out of a bzImage), with the
/// per-cpu symbols from `symbols`.
pub fn task_layout(elf: &[u8], symbols: &SymbolTable) -> Result<TaskLayout, Error> {
    let file = object::File::parse(elf).map_err(|source| Error::NotElf { source })?;
    let section = file.section_by_name(".BTF").ok_or(Error::NoBtf)?;
    let data = section
        .data()
        .map_err(|source| Error::BtfUnreadable { source })?;
    layout_from(&Btf::parse(data).map_err(Error::Btf)?, symbols)
}

/// The layout from parsed BTF and the symbols.
pub fn layout_from(btf: &Btf, symbols: &SymbolTable) -> Result<TaskLayout, Error> {
    let task = btf
        .struct_named("task_struct")
        .ok_or_else(|| Error::Missing("struct task_struct".into()))?;
    let member = |name: &str| {
        btf.member_offset(task, name)
            .ok_or_else(|| Error::Missing(format!("task_struct.{name}")))
    };
    let current_task = match symbols.percpu_offset("current_task") {
        Some(offset) => offset,
        None => {
            let hot = symbols
                .percpu_offset("pcpu_hot")
                .ok_or(Error::NoCurrentTask)?;
            let ty = btf
                .struct_named("pcpu_hot")
                .ok_or_else(|| Error::Missing("struct pcpu_hot".into()))?;
            hot + btf
                .member_offset(ty, "current_task")
                .ok_or_else(|| Error::Missing("pcpu_hot.current_task".into()))?
        }
    };
    Ok(TaskLayout {
        current_task,
        pid: member("pid")?,
        tgid: member("tgid")?,
        comm: member("comm")?,
    })
}

#[cfg(test)]
#[path = "task_layout_tests.rs"]
mod tests;
