//! What drvisor reads from a Linux kernel image itself, without a System.map or a debug
//! package: the kernel inside a bzImage ([`payload`]) and its symbols ([`kallsyms`],
//! [`own_symbols`]), and from its BTF where the current task and its pid and comm are
//! ([`task_layout`]), and how to walk its stack ([`orc`], decoded when first needed by [`LazyOrc`];
//! [`orc_unwind`]).

pub mod btf;
pub mod kallsyms;
mod lazy_orc;
pub mod orc;
pub mod orc_unwind;
mod own_symbols;
pub mod payload;
mod task_layout;

pub use lazy_orc::LazyOrc;
pub use own_symbols::{image_facts, own_symbols, ImageFacts, LayoutError, OrcError, Source};
pub use task_layout::{layout_from, task_layout, Error as TaskLayoutError, TaskLayout};

#[cfg(test)]
mod real_image_tests;
#[cfg(test)]
mod real_kernels;
