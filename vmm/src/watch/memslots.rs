//! Installing a memslot layout in KVM: the one place that calls `KVM_SET_USER_MEMORY_REGION`.

use drvisor_watch::{Memslot, SlotOp};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why a memslot layout could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM refused an op.
    #[error("KVM_SET_USER_MEMORY_REGION ({op:?}): {source}")]
    Kvm {
        /// The op.
        op: SlotOp,
        /// KVM's answer.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A memslot names a RAM region the VM does not have (a planner bug).
    #[error("memslot {slot} names RAM region {region}, which does not exist")]
    NoRegion {
        /// The memslot.
        slot: Memslot,
        /// The region it names.
        region: usize,
    },
    /// A memslot runs past the end of its RAM region (a planner bug).
    #[error("memslot {0} runs past its RAM region")]
    PastRegion(Memslot),
    /// An op failed, and so did undoing the ones before it.
    #[error("{first}; undoing the ops already applied failed too ({undo}): KVM's memslots no longer match the layout")]
    UndoFailed {
        /// The op's failure.
        #[source]
        first: Box<Error>,
        /// The undo's failure.
        undo: Box<Error>,
    },
}

/// Applies `ops` in order (the planner puts deletes first). The caller keeps the vCPUs out of
/// the guest meanwhile: between a delete and its create the range is a hole.
///
/// All or nothing: if an op fails, the ones already applied are undone (`old` says what a
/// deleted slot was), so KVM keeps the layout the caller still believes in.
pub fn apply_all(
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    old: &[Memslot],
    ops: &[SlotOp],
) -> Result<(), Error> {
    for (done, op) in ops.iter().enumerate() {
        if let Err(e) = apply(vm_fd, mem, std::slice::from_ref(op)) {
            let undo: Vec<SlotOp> = ops[..done]
                .iter()
                .rev()
                .filter_map(|op| match op {
                    SlotOp::Create(m) => Some(SlotOp::Delete { slot: m.slot }),
                    SlotOp::Delete { slot } => old
                        .iter()
                        .find(|m| m.slot == *slot)
                        .map(|m| SlotOp::Create(*m)),
                })
                .collect();
            return match apply(vm_fd, mem, &undo) {
                Ok(()) => Err(e),
                Err(undo) => Err(Error::UndoFailed {
                    first: Box::new(e),
                    undo: Box::new(undo),
                }),
            };
        }
    }
    Ok(())
}

/// Applies `ops` in order, stopping at the first failure.
pub fn apply(vm_fd: &VmFd, mem: &GuestMemoryMmap, ops: &[SlotOp]) -> Result<(), Error> {
    for op in ops {
        let region = match op {
            SlotOp::Delete { slot } => kvm_userspace_memory_region {
                slot: *slot,
                memory_size: 0,
                ..Default::default()
            },
            SlotOp::Create(m) => create(mem, m)?,
        };
        // SAFETY: a create maps a range of a live mapping owned by `mem`, which the VM keeps
        // for its whole life (checked in `create`); a delete maps nothing.
        unsafe { vm_fd.set_user_memory_region(region) }
            .map_err(|source| Error::Kvm { op: *op, source })?;
    }
    Ok(())
}

fn create(mem: &GuestMemoryMmap, m: &Memslot) -> Result<kvm_userspace_memory_region, Error> {
    let region = mem.iter().nth(m.region).ok_or(Error::NoRegion {
        slot: *m,
        region: m.region,
    })?;
    if m.region_offset + m.size > region.len() {
        return Err(Error::PastRegion(*m));
    }
    Ok(kvm_userspace_memory_region {
        slot: m.slot,
        flags: if m.readonly { KVM_MEM_READONLY } else { 0 },
        guest_phys_addr: m.gpa,
        memory_size: m.size,
        userspace_addr: region.as_ptr() as u64 + m.region_offset,
    })
}
