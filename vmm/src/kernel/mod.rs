//! What drvisor reads from a Linux kernel image itself, without a System.map or a debug
//! package: the kernel inside a bzImage ([`payload`]) and its symbols ([`kallsyms`],
//! [`own_symbols`]).

pub mod kallsyms;
mod own_symbols;
pub mod payload;

pub use own_symbols::{own_symbols, Source};

#[cfg(test)]
mod real_image_tests;
