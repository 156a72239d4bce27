//! Machine-check banks as QEMU configures them (target/i386/kvm/kvm.c, `kvm_arch_init_vcpu`):
//! ten banks with `MCG_CTL_P` and `MCG_SER_P`, as far as the host supports them. KVM's own
//! default is 32 banks; guests that enumerate the banks (kvm-unit-tests' `msr`) then test a
//! different set of MSRs than under QEMU.

use kvm_ioctls::{Kvm, VcpuFd};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

/// The ioctl numbers (include/uapi/linux/kvm.h); kvm-ioctls has no wrapper for them.
mod nr {
    #![allow(missing_docs)]
    use super::*;
    const KVMIO: u32 = 0xae;
    ioctl_ior_nr!(KVM_X86_GET_MCE_CAP_SUPPORTED, KVMIO, 0x9d, u64);
    ioctl_iow_nr!(KVM_X86_SETUP_MCE, KVMIO, 0x9c, u64);
}
use nr::{KVM_X86_GET_MCE_CAP_SUPPORTED, KVM_X86_SETUP_MCE};

/// QEMU's `MCE_BANKS_DEF`.
const BANKS: u64 = 10;
/// `MCG_CAP.Count`.
const BANKS_MASK: u64 = 0xff;
/// `MCG_CTL_P | MCG_SER_P`: QEMU's `MCE_CAP_DEF`.
const CAP_DEF: u64 = (1 << 8) | (1 << 24);

/// What the host's KVM supports: the `MCG_CAP` flags and the number of banks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supported {
    /// `KVM_X86_GET_MCE_CAP_SUPPORTED`.
    pub flags: u64,
    /// `KVM_CAP_MCE`: how many banks KVM can emulate.
    pub banks: u64,
}

/// The `MCG_CAP` QEMU would give, from what the host supports; `None` without MCE support.
pub fn mcg_cap(supported: Supported) -> Option<u64> {
    let banks = BANKS.min(supported.banks).min(BANKS_MASK);
    (banks > 0).then_some(banks | (CAP_DEF & supported.flags))
}

/// What the host's KVM supports, or `None` when it has no MCE support.
pub fn supported(kvm: &Kvm) -> Option<Supported> {
    let banks = kvm.check_extension_int(kvm_ioctls::Cap::Mce);
    if banks <= 0 {
        return None;
    }
    let mut flags = 0u64;
    // SAFETY: the ioctl writes one u64 into `flags`, which outlives the call; the fd is /dev/kvm.
    let ret = unsafe { ioctl_with_mut_ref(kvm, KVM_X86_GET_MCE_CAP_SUPPORTED(), &mut flags) };
    (ret == 0).then_some(Supported {
        flags,
        banks: banks as u64,
    })
}

/// Sets up `vcpu`'s machine-check banks with `cap`.
pub fn setup(vcpu: &VcpuFd, cap: u64) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: the ioctl reads one u64 from `cap`, which outlives the call; the fd is a vCPU.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_X86_SETUP_MCE(), &cap) };
    if ret == 0 {
        Ok(())
    } else {
        Err(kvm_ioctls::Error::last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_banks_and_the_supported_default_flags() {
        let host = |flags, banks| Supported { flags, banks };
        assert_eq!(
            mcg_cap(host((1 << 8) | (1 << 24) | (1 << 27), 32)),
            Some(10 | CAP_DEF)
        );
        assert_eq!(mcg_cap(host(1 << 8, 6)), Some(6 | (1 << 8)));
        assert_eq!(mcg_cap(host(CAP_DEF, 0)), None);
    }
}
