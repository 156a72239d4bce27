//! Architectural state a vCPU starts with: CPUID, machine-check banks and the registers of each
//! boot protocol.

mod boot_state;
mod cpuid;
mod gdt;
pub mod mce;

pub use boot_state::{configure, Error};
pub use cpuid::per_vcpu_cpuid;
