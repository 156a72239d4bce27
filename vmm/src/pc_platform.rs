//! VM-wide pieces of a PC that KVM leaves to the VMM, set up as Firecracker and Cloud
//! Hypervisor do:
//! - `KVM_SET_IDENTITY_MAP_ADDR` and `KVM_SET_TSS_ADDR`: guest-physical pages that KVM's VMX
//!   code needs to run a guest in real mode or with paging off on a CPU without unrestricted
//!   guest. Without them KVM picks addresses that may lie in guest RAM. Both lie in the hole
//!   below 4 GiB ([`crate::layout::VMX_TSS`]); the e820 map reserves them.
//! - `KVM_CREATE_PIT2`: the 8254 timer. Linux calibrates its TSC and checks its timer
//!   interrupt with it early in boot; the speaker port is a dummy.
//!
//! A host whose KVM lacks the capability gets a logged reason and a VM without the piece; a
//! host that has it and fails the call is a real error.

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::layout::{IDENTITY_MAP, VMX_TSS};

/// Errors setting up the platform.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host offers the capability, yet the call failed.
    #[error("{} failed although the host offers {}: {source}", .piece.ioctl(), .piece.capability())]
    Kvm {
        /// What was being set up.
        piece: Piece,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
}

/// One piece of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// `KVM_SET_IDENTITY_MAP_ADDR` at [`IDENTITY_MAP`].
    IdentityMap,
    /// `KVM_SET_TSS_ADDR` at [`VMX_TSS`].
    VmxTss,
    /// `KVM_CREATE_PIT2` with a dummy speaker.
    Pit,
}

impl Piece {
    /// The ioctl that sets it up.
    pub fn ioctl(self) -> &'static str {
        match self {
            Piece::IdentityMap => "KVM_SET_IDENTITY_MAP_ADDR",
            Piece::VmxTss => "KVM_SET_TSS_ADDR",
            Piece::Pit => "KVM_CREATE_PIT2",
        }
    }

    /// The capability that says the host has it.
    pub fn capability(self) -> &'static str {
        match self {
            Piece::IdentityMap => "KVM_CAP_SET_IDENTITY_MAP_ADDR",
            Piece::VmxTss => "KVM_CAP_SET_TSS_ADDR",
            Piece::Pit => "KVM_CAP_PIT2",
        }
    }

    fn cap(self) -> Cap {
        match self {
            Piece::IdentityMap => Cap::SetIdentityMapAddr,
            Piece::VmxTss => Cap::SetTssAddr,
            Piece::Pit => Cap::Pit2,
        }
    }
}

/// What became of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Set up.
    Done,
    /// The host's KVM does not offer it; the VM runs without it.
    Unsupported,
}

/// The pieces set before the vCPUs exist (KVM refuses the identity map once one does).
pub const BEFORE_VCPUS: [Piece; 2] = [Piece::IdentityMap, Piece::VmxTss];
/// The pieces set after the irqchip (the PIT delivers through it).
pub const AFTER_IRQCHIP: [Piece; 1] = [Piece::Pit];

/// Judges a piece from whether the host offers it and, if it was tried, the call's result.
pub fn judge(
    piece: Piece,
    offered: bool,
    result: impl FnOnce() -> Result<(), kvm_ioctls::Error>,
) -> Result<Applied, Error> {
    if !offered {
        return Ok(Applied::Unsupported);
    }
    result().map_err(|source| Error::Kvm { piece, source })?;
    Ok(Applied::Done)
}

/// The `KVM_CREATE_PIT2` argument.
pub fn pit_config() -> kvm_pit_config {
    kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    }
}

fn call(vm: &VmFd, piece: Piece) -> Result<(), kvm_ioctls::Error> {
    match piece {
        Piece::IdentityMap => vm.set_identity_map_address(IDENTITY_MAP),
        // The address fits: it is below 4 GiB (layout tests).
        Piece::VmxTss => vm.set_tss_address(VMX_TSS as usize),
        Piece::Pit => vm.create_pit2(pit_config()),
    }
}

/// Sets up `pieces` on `vm`; logs each the host does not offer.
pub fn setup(kvm: &Kvm, vm: &VmFd, pieces: &[Piece]) -> Result<(), Error> {
    for &piece in pieces {
        let offered = kvm.check_extension(piece.cap());
        if judge(piece, offered, || call(vm, piece))? == Applied::Unsupported {
            tracing::info!(
                "this host's KVM does not offer {}: the VM has no {}",
                piece.capability(),
                piece.ioctl()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offered_piece_is_set_up() {
        let mut called = false;
        let got = judge(Piece::Pit, true, || {
            called = true;
            Ok(())
        });
        assert!(matches!(got, Ok(Applied::Done)));
        assert!(called);
    }

    #[test]
    fn a_piece_not_offered_is_not_tried() {
        let got = judge(Piece::VmxTss, false, || panic!("tried"));
        assert!(matches!(got, Ok(Applied::Unsupported)));
    }

    #[test]
    fn an_offered_piece_that_fails_is_an_error_naming_it() {
        let got = judge(Piece::IdentityMap, true, || {
            Err(kvm_ioctls::Error::new(libc::EEXIST))
        });
        let err = got.expect_err("a real failure");
        let text = err.to_string();
        assert!(text.contains("KVM_SET_IDENTITY_MAP_ADDR"), "{text}");
        assert!(text.contains("KVM_CAP_SET_IDENTITY_MAP_ADDR"), "{text}");
    }

    #[test]
    fn the_pit_speaker_is_a_dummy() {
        let c = pit_config();
        assert_eq!(c.flags, KVM_PIT_SPEAKER_DUMMY);
        assert_eq!(c.pad, [0; 15]);
    }

    #[test]
    fn the_identity_map_is_set_before_vcpus_exist() {
        assert!(BEFORE_VCPUS.contains(&Piece::IdentityMap));
        assert!(BEFORE_VCPUS.contains(&Piece::VmxTss));
        assert_eq!(AFTER_IRQCHIP, [Piece::Pit]);
    }
}
