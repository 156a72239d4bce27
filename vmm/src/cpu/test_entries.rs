//! CPUID entries for the unit tests of this module's CPUID code.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf `function`, subleaf `index`, with EAX, EBX, ECX, EDX = `regs` (leaves 7 and 0xD are
/// marked as indexed, as KVM marks them).
pub fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: if matches!(function, 7 | 0xd) {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
        ..Default::default()
    }
}
