//! CPUID as each vCPU sees it: what KVM supports, with this vCPU's APIC ID filled in.
//!
//! The test guest (and Linux) find their CPU index from CPUID leaf 1 EBX[31:24] and the x2APIC
//! leaves 0xB/0x1F EDX, so each vCPU must see its own index there.

use kvm_bindings::CpuId;

/// Patches `supported` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `index` of `count`.
pub fn per_vcpu_cpuid(supported: &CpuId, index: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | (u32::from(index) << 24)
                    | (u32::from(count.max(1)) << 16);
                // HTT: the logical-processor count in EBX[23:16] is valid.
                entry.edx |= 1 << 28;
            }
            0xb | 0x1f => entry.edx = u32::from(index),
            _ => {}
        }
    }
    cpuid
}
