//! The registers of paused vCPUs. A client thread never touches a vCPU's file descriptor, so a
//! vCPU leaves its registers here when it parks for a pause, and takes them back when it
//! resumes. `GET /vcpus/{n}/registers` reads them.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use drvisor_api::rest::{Segment, VcpuRegisters};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;

use crate::debug::registers;

/// One snapshot slot per vCPU.
pub struct ParkedRegs {
    slots: Mutex<Vec<Option<VcpuRegisters>>>,
    changed: Condvar,
}

impl ParkedRegs {
    /// Empty slots for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        ParkedRegs {
            slots: Mutex::new(vec![None; vcpus]),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<VcpuRegisters>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// vCPU `index` parked with these registers.
    pub fn park(&self, index: usize, regs: VcpuRegisters) {
        if let Some(slot) = self.lock().get_mut(index) {
            *slot = Some(regs);
        }
        self.changed.notify_all();
    }

    /// vCPU `index` runs again.
    pub fn unpark(&self, index: usize) {
        if let Some(slot) = self.lock().get_mut(index) {
            *slot = None;
        }
    }

    /// vCPU `index`'s registers, waiting up to `timeout` for it to park.
    pub fn wait(&self, index: usize, timeout: Duration) -> Option<VcpuRegisters> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        loop {
            match slots.get(index) {
                None => return None,
                Some(Some(regs)) => return Some(regs.clone()),
                Some(None) => {}
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slots = self
                .changed
                .wait_timeout(slots, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether every vCPU has parked, waiting up to `timeout`.
    pub fn wait_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        while slots.iter().any(Option::is_none) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            slots = self
                .changed
                .wait_timeout(slots, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// vCPU `index`'s registers: from the sync-regs area when KVM fills it (it also holds what
/// drvisor changed for the next entry), else through the ioctls.
pub fn snapshot(index: usize, fd: &mut VcpuFd, sync_regs: bool) -> Option<VcpuRegisters> {
    let (regs, sregs): (kvm_regs, kvm_sregs) = if sync_regs {
        let s = fd.sync_regs();
        (s.regs, s.sregs)
    } else {
        (fd.get_regs().ok()?, fd.get_sregs().ok()?)
    };
    let seg = |s: &kvm_segment| Segment {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
    };
    Some(VcpuRegisters {
        vcpu: index as u32,
        regs: registers(&regs),
        cr0: sregs.cr0,
        cr2: sregs.cr2,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
        cs: seg(&sregs.cs),
        ss: seg(&sregs.ss),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_the_vcpu_to_park() {
        let p = std::sync::Arc::new(ParkedRegs::new(2));
        assert!(p.wait(0, Duration::ZERO).is_none());
        assert!(p.wait(5, Duration::ZERO).is_none(), "no such vCPU");
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.wait(1, Duration::from_secs(10)));
        p.park(1, VcpuRegisters::default());
        assert!(t.join().unwrap().is_some());
        assert!(!p.wait_all(Duration::ZERO), "vCPU 0 has not parked");
        p.park(0, VcpuRegisters::default());
        assert!(p.wait_all(Duration::ZERO));
        p.unpark(0);
        assert!(p.wait(0, Duration::ZERO).is_none());
    }
}
