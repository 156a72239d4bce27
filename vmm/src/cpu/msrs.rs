//! The MSRs a vCPU boots with, as Firecracker sets them (src/vmm/src/arch/x86_64/msr.rs,
//! `create_boot_msr_entries`): the SYSENTER and SYSCALL MSRs cleared, the TSC at zero, fast
//! strings enabled and the MTRRs' default type write-back. KVM's reset values are mostly the
//! same; a real kernel on a VMX/SVM host must not depend on that, and an uncached MTRR default
//! (KVM's reset value, `MTRRdefType` = 0) makes every access of a guest without MTRR setup
//! uncacheable on hosts that honour guest MTRRs.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors setting the boot MSRs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ioctl itself failed.
    #[error("KVM_SET_MSRS failed: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
    /// KVM refused an MSR that it lists as one it supports (`KVM_GET_MSR_INDEX_LIST`).
    #[error("KVM refused boot MSR {name} ({index:#x}) = {value:#x}, an MSR it lists as supported")]
    Refused {
        /// The MSR's name.
        name: &'static str,
        /// Its index.
        index: u32,
        /// The value drvisor set.
        value: u64,
    },
}

/// One MSR and the value it boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootMsr {
    /// The MSR's name in the SDM (messages).
    pub name: &'static str,
    /// Its index.
    pub index: u32,
    /// Its boot value.
    pub value: u64,
}

/// `IA32_MISC_ENABLE.Fast-Strings Enable` (bit 0), set at reset on real processors.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// `IA32_MTRR_DEF_TYPE.E` (bit 11): MTRRs enabled.
pub const MTRR_ENABLE: u64 = 1 << 11;
/// Memory type 6: write-back (SDM Vol. 3A, Table 11-8).
pub const MTRR_MEM_TYPE_WB: u64 = 6;

/// The boot MSRs, in the order they are set (SDM Vol. 4, Table 2-2).
pub fn boot_msrs() -> Vec<BootMsr> {
    let msr = |name, index, value| BootMsr { name, index, value };
    vec![
        msr("IA32_SYSENTER_CS", 0x174, 0),
        msr("IA32_SYSENTER_ESP", 0x175, 0),
        msr("IA32_SYSENTER_EIP", 0x176, 0),
        msr("IA32_STAR", 0xc000_0081, 0),
        msr("IA32_CSTAR", 0xc000_0083, 0),
        msr("IA32_KERNEL_GS_BASE", 0xc000_0102, 0),
        msr("IA32_FMASK", 0xc000_0084, 0),
        msr("IA32_LSTAR", 0xc000_0082, 0),
        // A host write of 0 is KVM's "reset": it keeps the vCPUs' TSCs in step
        // (kvm_synchronize_tsc), rather than reading 0 at the next instruction.
        msr("IA32_TSC", 0x10, 0),
        msr("IA32_MISC_ENABLE", 0x1a0, MISC_ENABLE_FAST_STRING),
        msr("IA32_MTRR_DEF_TYPE", 0x2ff, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// What to do when KVM refuses `msr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRefusal {
    /// The host does not offer it: boot without it.
    Skip,
    /// The host offers it yet refused it: a real failure.
    Fail,
}

/// Decides about a refused `msr` from the host's `KVM_GET_MSR_INDEX_LIST`. An MSR the host
/// lists is one it promises to save and restore, so a refusal is a real failure; one it does
/// not list may simply not exist on this host (a paravirtual KVM, an old kernel), and drvisor
/// boots without it. `IA32_MTRR_DEF_TYPE` is never listed (KVM emulates the MTRRs outside that
/// list) but every KVM we know accepts it.
pub fn on_refusal(msr: &BootMsr, host_listed: &[u32]) -> OnRefusal {
    if host_listed.contains(&msr.index) {
        OnRefusal::Fail
    } else {
        OnRefusal::Skip
    }
}

/// `msrs` as the `KVM_SET_MSRS` argument.
pub fn entries(msrs: &[BootMsr]) -> Result<Msrs, kvm_ioctls::Error> {
    let list: Vec<kvm_msr_entry> = msrs
        .iter()
        .map(|m| kvm_msr_entry {
            index: m.index,
            data: m.value,
            ..Default::default()
        })
        .collect();
    // Only fails past KVM_MAX_MSR_ENTRIES (256); the list has eleven.
    Msrs::from_entries(&list).map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))
}

/// Sets the boot MSRs on `vcpu`. `KVM_SET_MSRS` stops at the first MSR it refuses and returns
/// how many it set; a refused MSR the host does not list (`host_listed`) is skipped with a
/// debug message naming it, and the rest are set after it. Returns the skipped MSRs.
pub fn setup(vcpu: &VcpuFd, host_listed: &[u32]) -> Result<Vec<BootMsr>, Error> {
    let all = boot_msrs();
    let mut rest: &[BootMsr] = &all;
    let mut skipped = Vec::new();
    while !rest.is_empty() {
        let set = vcpu.set_msrs(&entries(rest)?)?;
        if set >= rest.len() {
            break;
        }
        let refused = rest[set];
        match on_refusal(&refused, host_listed) {
            OnRefusal::Skip => {
                tracing::debug!(
                    "this host's KVM refused boot MSR {} ({:#x}) = {:#x} and does not list it; booting without it",
                    refused.name,
                    refused.index,
                    refused.value
                );
                skipped.push(refused);
            }
            OnRefusal::Fail => {
                return Err(Error::Refused {
                    name: refused.name,
                    index: refused.index,
                    value: refused.value,
                })
            }
        }
        rest = &rest[set + 1..];
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(name: &str) -> u64 {
        boot_msrs()
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is not a boot MSR"))
            .value
    }

    #[test]
    fn the_list_is_firecrackers() {
        let indices: Vec<u32> = boot_msrs().iter().map(|m| m.index).collect();
        assert_eq!(
            indices,
            [
                0x174,
                0x175,
                0x176,
                0xc000_0081,
                0xc000_0083,
                0xc000_0102,
                0xc000_0084,
                0xc000_0082,
                0x10,
                0x1a0,
                0x2ff
            ]
        );
    }

    #[test]
    fn syscall_sysenter_and_tsc_start_at_zero() {
        for name in [
            "IA32_SYSENTER_CS",
            "IA32_SYSENTER_ESP",
            "IA32_SYSENTER_EIP",
            "IA32_STAR",
            "IA32_CSTAR",
            "IA32_KERNEL_GS_BASE",
            "IA32_FMASK",
            "IA32_LSTAR",
            "IA32_TSC",
        ] {
            assert_eq!(value_of(name), 0, "{name}");
        }
    }

    #[test]
    fn fast_strings_and_write_back_mtrr_default() {
        assert_eq!(value_of("IA32_MISC_ENABLE"), 1);
        assert_eq!(value_of("IA32_MTRR_DEF_TYPE"), 0x806);
    }

    #[test]
    fn each_msr_once() {
        let mut indices: Vec<u32> = boot_msrs().iter().map(|m| m.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), boot_msrs().len());
    }

    #[test]
    fn entries_carry_index_and_value_in_order() {
        let msrs = entries(&boot_msrs()).unwrap();
        let got: Vec<(u32, u64)> = msrs.as_slice().iter().map(|e| (e.index, e.data)).collect();
        let want: Vec<(u32, u64)> = boot_msrs().iter().map(|m| (m.index, m.value)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_refused_msr_is_skipped_only_when_the_host_does_not_list_it() {
        let mtrr = boot_msrs()[10];
        assert_eq!(on_refusal(&mtrr, &[0x174, 0x10]), OnRefusal::Skip);
        assert_eq!(on_refusal(&mtrr, &[0x174, 0x2ff]), OnRefusal::Fail);
        assert_eq!(on_refusal(&mtrr, &[]), OnRefusal::Skip);
    }
}
