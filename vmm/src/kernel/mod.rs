//! What drvisor reads from a Linux kernel image itself, without a System.map or a debug
//! package: the kernel inside a bzImage ([`payload`]) and its symbols ([`kallsyms`]).

pub mod kallsyms;
pub mod payload;

#[cfg(test)]
mod real_image_tests;
