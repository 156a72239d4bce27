//! Architectural state a vCPU starts with: CPUID, machine-check banks, the local APIC's LINT
//! pins, the boot MSRs and the registers of each boot protocol.

mod boot_state;
mod cpuid;
mod feature_edits;
pub mod feature_table;
mod gdt;
pub mod lapic;
pub mod mce;
mod models;
pub mod msrs;
pub mod power_on;
#[cfg(test)]
mod test_entries;
mod vendor;

pub use boot_state::{configure, Error};
pub use cpuid::{hide_features, per_vcpu_cpuid, with_hypervisor_leaves, CpuFeature, CpuidMode};
pub use feature_edits::{Applied, ApplyError, FeatureEdits, ParseError as FeatureListError};
pub use models::CpuModel;
pub use vendor::{CpuVendor, VendorError};
