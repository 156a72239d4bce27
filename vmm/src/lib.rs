//! drvisor: a KVM micro-VMM that virtualizes the guest's x86 debug registers.
//!
//! This crate is the only code that touches KVM. Decisions about debug-register slots live in
//! the pure `drvisor-debug` crate; this one applies them.
#![deny(missing_docs)]

pub mod bios_handoff;
pub mod boot;
pub mod condition;
pub mod console_lines;
pub mod control;
pub mod cpu;
pub mod debug;
pub mod deferred;
pub mod devices;
pub mod event_loop;
pub mod events;
pub mod exit_status;
pub mod fault_injection;
pub mod gate;
pub mod gdb;
pub mod guest_image;
pub mod guest_paging;
pub mod input_file;
pub mod kernel;
pub mod kick;
pub mod layout;
pub mod memory;
#[cfg(test)]
mod no_flag_names_tests;
pub mod outcome;
pub mod pc_platform;
pub mod probe;
pub mod quote;
pub mod run_control;
pub mod seccomp;
pub mod sleep;
pub mod stack_words;
pub mod symbols;
pub mod trace_events;
pub mod vcpu;
pub mod vm;
pub mod watch;

pub use outcome::{exit_code, Outcome};
pub use vm::{Console, EarlyVm, Vm, VmConfig};
