//! The first steps of building a VM, taken as early as a start allows: the VM and its irqchip
//! (and PIT). Guest RAM's memslots come last, in [`crate::Vm::build`].
//!
//! Where KVM frees its I/O-bus copies after an SRCU grace period (the irqchip registers the PIC
//! and the I/O APIC there), that grace period runs on timer ticks, about four of them (16 ms on
//! our `kvm_pvm` hosts) from the irqchip's creation, and destroying the VM waits for it. A
//! short run (the embedded guest's `hello`) used to end before it, and its process lived on
//! until then. So:
//! - the irqchip is created first, before the kernel is read or the probe's cache looked at,
//!   so that the grace period starts as early as it can;
//! - the memslots are set last, once the vCPUs are made: setting one waits for that grace
//!   period to end, and asks for it to be expedited (here the call returns 2 to 9 ms after the
//!   irqchip's creation, most of which the rest of the VM's build covers), and the VM's end is
//!   left with little or nothing to wait for.
//!
//! (In the other order, the memslots first, each call is fast, and the whole grace period is
//! left for the run's end: BENCHMARKS.md, start-up.)

use std::sync::Arc;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::Error;
use crate::memory;
use crate::pc_platform;

/// What the early steps need to know of the VM: the parts of a [`crate::VmConfig`] they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Number of vCPUs (checked against KVM's limit here).
    pub vcpus: usize,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Whether the VM has the in-kernel PIT.
    pub pit: bool,
    /// The most memslots the watch engine may use; `None` for all KVM offers.
    pub memslot_limit: Option<usize>,
}

/// A VM with its irqchip and guest RAM mapped (not yet a memslot), not yet loaded nor given
/// devices and vCPUs: the first part of [`crate::Vm`], which [`crate::Vm::build`] finishes.
pub struct EarlyVm {
    pub(crate) shape: Shape,
    pub(crate) kvm: Kvm,
    pub(crate) vm_fd: Arc<VmFd>,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) max_slots: usize,
}

impl EarlyVm {
    /// Opens KVM, checks the vCPU count, maps guest RAM, creates the VM, then its irqchip (and
    /// the PIT if `shape.pit`).
    pub fn create(shape: Shape) -> Result<EarlyVm, Error> {
        let kvm = Kvm::new().map_err(Error::KvmAccess)?;
        let max = kvm.get_max_vcpus();
        if shape.vcpus == 0 || shape.vcpus > max || shape.vcpus > u8::MAX as usize {
            return Err(Error::VcpuCount {
                asked: shape.vcpus,
                max: max.min(u8::MAX as usize),
            });
        }
        let mem = memory::create(shape.mem_mib)?;
        let vm_fd = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
        pc_platform::setup(&kvm, &vm_fd, &pc_platform::BEFORE_VCPUS)?;
        let nr_memslots = kvm.get_nr_memslots();
        let max_slots = shape
            .memslot_limit
            .map_or(nr_memslots, |l| l.min(nr_memslots));
        vm_fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        if shape.pit {
            pc_platform::setup(&kvm, &vm_fd, &pc_platform::AFTER_IRQCHIP)?;
        }
        Ok(EarlyVm {
            shape,
            kvm,
            vm_fd,
            mem,
            max_slots,
        })
    }

    /// What it was made for.
    pub fn shape(&self) -> Shape {
        self.shape
    }
}

fn kvm_err(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { step, source }
}
