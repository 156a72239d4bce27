//! The guest's memory as its CPU sees it, read in the VMM without an ioctl: the system
//! registers that locate the paging structures ([`SystemRegisters`]), the exact page walk that
//! emulation needs ([`page_walk`]), the pages the CPU itself reads and a plain translation
//! ([`cpu_structures`]), and reading guest-virtual bytes through them ([`read()`]).

pub mod bits;
pub mod cpu_structures;
pub mod page_walk;
pub(crate) mod read;
mod system_registers;

pub use read::{read, read_into};
pub use system_registers::SystemRegisters;
