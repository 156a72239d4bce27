//! One engine, many clients: the entry points the command line, the REST plane, gdb and the CI
//! harness share. A client describes what it wants in the engine's terms ([`Request`], the
//! location syntax of [`location`]) and calls a [`Session`]; none has a road of its own to KVM.

mod announce;
mod api;
mod backtrace;
mod feeder;
mod guest_view;
pub mod hit_machine;
mod hits;
pub mod location;
mod request;
mod session;
pub mod snippet;

pub use guest_view::{MemoryError, StepError};
pub use hits::{hit_event, reporter};
pub use request::{Error, Request, What};
pub use session::{Facts, ImageKnowledge, Session, PAUSE_TIMEOUT, RING_CAPACITY, RING_VAR};
