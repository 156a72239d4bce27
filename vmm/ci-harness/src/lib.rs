//! The CI harness behind `drvisor ci`, in three rooms, as kunit.py keeps them: the spec
//! ([`spec`]: TOML in, a validated spec or one error at its line out; [`kut_cfg`]: each entry
//! of kvm-unit-tests' `unittests.cfg` as a spec, whose `+feature`s this host's KVM lacks
//! [`qemu_cpu`] drops as QEMU does), the run, and the report.
//!
//! The run: [`plan`] turns a spec and what the host delivers into a `drvisor run` command
//! line, [`child`] runs it as a child process with its [`events_file`] and kills it at the
//! spec's timeout or on an interrupt, [`run_end`] reads its exit code, [`run`] takes one spec
//! from plan to verdict and [`schedule`] runs a suite's specs in parallel. The report: the
//! verdicts ([`judge`], over the console parsed by [`ktap`] and [`kut`], with the code
//! addresses named by [`names`]), [`report`], [`junit`], [`html`] with its [`timeline`], and
//! the split across CI jobs ([`shard`]).
//!
//! Only [`child`] and [`events_file`] have effects (a process, a temporary file). What needs
//! the VMM comes in from the caller: the path of the `drvisor` executable, what the host
//! probe found ([`plan::HostSupport`]), the guest's symbols ([`names::GuestSymbols`]) and the
//! interrupt flag.
//!
//! Errors here name no command-line flag: the binary that parses the flags adds that context.

pub mod child;
pub mod events_file;
pub mod html;
pub mod judge;
pub mod junit;
pub mod ktap;
pub mod kut;
pub mod kut_cfg;
pub mod names;
pub mod plan;
pub mod qemu_cpu;
pub mod report;
pub mod run;
pub mod run_end;
pub mod schedule;
pub mod shard;
pub mod spec;
pub mod timeline;
