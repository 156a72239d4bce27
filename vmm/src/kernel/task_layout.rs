//! Where a Linux kernel keeps the current task and its identity: the per-CPU offset of the
//! `current_task` pointer and the byte offsets of `pid`, `tgid` and `comm` in `task_struct`
//! (from the image's BTF). Breakpoint conditions read `comm`, `pid` and `tgid` through it.

/// The offsets that locate the current task and its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    /// The per-CPU offset of the current task pointer: read at GS base + this.
    pub current_task: u64,
    /// `task_struct.pid` (an `i32`).
    pub pid: u64,
    /// `task_struct.tgid` (an `i32`).
    pub tgid: u64,
    /// `task_struct.comm` (16 bytes, NUL-padded).
    pub comm: u64,
}
