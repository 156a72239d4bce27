//! One engine, many clients: hits, plan changes and pauses leave their thread once, onto one
//! bounded, numbered [`EventBus`], the VM's own (`Vm::events`), so every client sees them in one
//! order. Each client (the `--events` writer, the REST stream's feeder) reads it through a
//! bounded view of its own. A slow reader loses events explicitly, with a `lost` record, and
//! never slows a vCPU.

mod bus;
mod event;
mod queue;
mod writer;

#[cfg(test)]
mod tests;

pub use bus::{EventBus, Record, RecvTimeoutError, Sequenced, Subscription};
pub use event::{Event, GuestDrLate, PageTraps};
pub use writer::{line_json, spawn_writer, WriterOptions, WriterReport, MAX_BATCH};

/// How many unread events a view holds by default: at the highest hit rates measured
/// (BENCHMARKS.md, about 10^5 hits/s over all vCPUs) this is more than 100 ms of hits, far
/// longer than a batch takes to write.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;
