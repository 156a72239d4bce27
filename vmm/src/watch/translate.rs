//! Guest-virtual to guest-physical, with `KVM_TRANSLATE` on a vCPU.
//!
//! The translator holds its own duplicate of vCPU 0's file descriptor, so it works whatever
//! thread runs the vCPU. KVM serialises vCPU ioctls, so a translation waits while the vCPU is
//! inside `KVM_RUN`; callers translate with the vCPUs quiesced, where it returns at once.

use std::os::fd::{AsRawFd, OwnedFd};

use kvm_bindings::kvm_translation;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

/// kvm-ioctls wraps KVM_TRANSLATE only on its own `VcpuFd`; this is the same request number
/// (linux/kvm.h: `_IOWR(KVMIO, 0x85, struct kvm_translation)`) for a duplicated descriptor.
mod request {
    #![allow(missing_docs)]
    use kvm_bindings::kvm_translation;
    use vmm_sys_util::ioctl_iowr_nr;
    ioctl_iowr_nr!(KVM_TRANSLATE, kvm_bindings::KVMIO, 0x85, kvm_translation);
}
use request::KVM_TRANSLATE;

/// Page size of the translation granule.
const PAGE: u64 = 0x1000;

/// Translates through one vCPU's page tables.
pub struct Translator {
    vcpu: OwnedFd,
}

/// Why an address does not translate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The guest's page tables do not map it.
    #[error("guest-virtual {0:#x} is not mapped by the guest's page tables (yet); watch a guest-physical address with phys:ADDR, or arm it once the guest maps it")]
    NotMapped(u64),
    /// The ioctl failed, with this errno.
    #[error("KVM_TRANSLATE failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Kvm(i32),
}

impl Translator {
    /// A translator through the vCPU whose fd is `vcpu_fd` (duplicated).
    pub fn new(vcpu_fd: &impl AsRawFd) -> std::io::Result<Translator> {
        // SAFETY: `vcpu_fd` is an open descriptor for the duration of this call; dup makes a
        // new descriptor that the OwnedFd owns and closes.
        let fd = unsafe { libc::dup(vcpu_fd.as_raw_fd()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by dup and is owned by nothing else.
        let vcpu = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Translator { vcpu })
    }

    /// The guest-physical address of `gva`.
    pub fn translate(&self, gva: u64) -> Result<u64, Error> {
        let mut t = kvm_translation {
            linear_address: gva,
            ..Default::default()
        };
        // SAFETY: KVM_TRANSLATE reads and writes exactly one kvm_translation, which `t` is.
        let ret = unsafe { ioctl_with_mut_ref(&self.vcpu, KVM_TRANSLATE(), &mut t) };
        if ret < 0 {
            return Err(Error::Kvm(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        if t.valid == 0 {
            return Err(Error::NotMapped(gva));
        }
        Ok(t.physical_address)
    }

    /// `[gva, gva + len)` as guest-physical ranges, one per run of physically contiguous pages.
    pub fn translate_range(&self, gva: u64, len: u64) -> Result<Vec<(u64, u64)>, Error> {
        physical_runs(gva, len, |at| self.translate(at))
    }
}

/// `[gva, gva + len)` as guest-physical ranges, one per run of physically contiguous pages,
/// with `physical` giving the guest-physical address of one byte (asked once per page).
pub fn physical_runs<E>(
    gva: u64,
    len: u64,
    mut physical: impl FnMut(u64) -> Result<u64, E>,
) -> Result<Vec<(u64, u64)>, E> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let end = gva.saturating_add(len);
    let mut at = gva;
    while at < end {
        // The last page of the address space ends at 2^64: saturate rather than overflow.
        let page_end = (at / PAGE).saturating_add(1).saturating_mul(PAGE);
        let chunk = page_end.min(end).saturating_sub(at).max(1);
        let gpa = physical(at)?;
        match out.last_mut() {
            Some((start, n)) if start.checked_add(*n) == Some(gpa) => *n += chunk,
            _ => out.push((gpa, chunk)),
        }
        at = at.saturating_add(chunk);
        if at == u64::MAX {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::physical_runs;

    #[test]
    fn contiguous_pages_make_one_run_and_a_jump_starts_another() {
        // 0x1000.. maps to 0x8000.., except that 0x3000 maps to 0x20000.
        let map = |va: u64| -> Result<u64, ()> {
            let page = va & !0xfff;
            let base = if page == 0x3000 {
                0x20000
            } else {
                0x7000 + page
            };
            Ok(base | (va & 0xfff))
        };
        assert_eq!(
            physical_runs(0x1ff8, 0x2010, map),
            Ok(vec![(0x8ff8, 0x1008), (0x20000, 0x1000), (0xb000, 8)])
        );
        assert_eq!(
            physical_runs(0x5000, 1, |_| Err::<u64, _>("unmapped")),
            Err("unmapped")
        );
    }
}
