//! The gdb remote stub: one more client of the session, like the REST plane. gdb's breakpoints
//! and watchpoints go through the same arbiter and engines as every other client's (owner
//! `gdb`), so the guest's own debug registers keep working while gdb is attached, and watches
//! fall back to the page engine where no hardware slot can serve them.
//!
//! All-stop: a hit of a gdb breakpoint pauses every vCPU (the `pause` action), and gdb's
//! threads are the vCPUs. The stub runs on a thread of its own and never touches a vCPU: it
//! reads the registers the parked vCPUs left, and writes registers through the same mailbox.
//! gdb gets QEMU's register set ([`arch`]): the general, x87 and SSE registers, the segment
//! bases and the system registers.

mod arch;
mod buffered_conn;
mod error;
mod event_loop;
mod evictions;
mod listen;
mod monitor_break;
mod points;
mod target;

pub use error::Error;
pub use listen::{parse_listen, serve, Listen, ListenError, Served};
pub use monitor_break::{MonitorError, UsageError};
