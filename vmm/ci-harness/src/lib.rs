//! The CI harness behind `drvisor ci`, its pure rooms, as kunit.py keeps them: the spec
//! ([`spec`]: TOML in, a validated spec or one error at its line out), the verdicts ([`judge`],
//! over the console parsed by [`ktap`] and [`kut`]), the reports ([`report`], [`junit`], [`html`] with its
//! [`timeline`]) and
//! the split across CI jobs ([`shard`]). No KVM, no process, no file but the spec: the `drvisor`
//! binary runs each spec as a child `drvisor run` and hands what it saw here to be judged.
//!
//! Errors here name no command-line flag: the binary that parses the flags adds that context.

pub mod html;
pub mod judge;
pub mod junit;
pub mod ktap;
pub mod kut;
pub mod report;
pub mod shard;
pub mod spec;
pub mod timeline;
