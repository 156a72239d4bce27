//! The registers of paused vCPUs. A client thread never touches a vCPU's file descriptor, so a
//! vCPU leaves its registers here when it parks for a pause, and takes them back when it
//! resumes, with any general registers a client wrote meanwhile (gdb's `set $rax = ...`).
//! `GET /vcpus/{n}/registers` and gdb read them.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use drvisor_api::rest::{Segment, VcpuRegisters};
use drvisor_api::Registers;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;

use crate::debug::registers;
use crate::run_control::RunControl;

/// One snapshot slot per vCPU.
pub struct ParkedRegs {
    slots: Mutex<Vec<Slot>>,
    changed: Condvar,
    /// The run: every wait ends when it does.
    control: Arc<RunControl>,
}

/// How often a waiter looks whether the run has ended.
const SLICE: Duration = Duration::from_millis(20);

#[derive(Clone, Default)]
struct Slot {
    parked: Option<VcpuRegisters>,
    /// General registers a client wrote while the vCPU was parked, to load before it runs.
    written: Option<Registers>,
    /// How many client single-steps it had taken when it last parked.
    steps: u64,
}

impl ParkedRegs {
    /// Empty slots for the `vcpus` vCPUs of the run `control`.
    pub fn new(vcpus: usize, control: Arc<RunControl>) -> Self {
        ParkedRegs {
            slots: Mutex::new(vec![Slot::default(); vcpus]),
            changed: Condvar::new(),
            control,
        }
    }

    /// Waits on the condition variable until `deadline`, in slices; `None` once the deadline
    /// has passed or the run has ended.
    fn wait_slice<'a>(
        &self,
        slots: std::sync::MutexGuard<'a, Vec<Slot>>,
        deadline: Instant,
    ) -> Option<std::sync::MutexGuard<'a, Vec<Slot>>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        if self.control.is_finished() {
            return None;
        }
        Some(
            self.changed
                .wait_timeout(slots, left.min(SLICE))
                .unwrap_or_else(|e| e.into_inner())
                .0,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// vCPU `index` parked with these registers, having taken `steps` client single-steps
    /// since it started.
    pub fn park(&self, index: usize, mut regs: VcpuRegisters, steps: u64) {
        if let Some(slot) = self.lock().get_mut(index) {
            if let Some(written) = &slot.written {
                regs.regs = written.clone();
            }
            slot.parked = Some(regs);
            slot.steps = steps;
        }
        self.changed.notify_all();
    }

    /// How many client single-steps vCPU `index` had taken when it last parked.
    pub fn steps(&self, index: usize) -> u64 {
        self.lock().get(index).map_or(0, |s| s.steps)
    }

    /// Waits up to `timeout` until vCPU `index` is parked having taken more than `steps`
    /// client single-steps.
    pub fn wait_stepped(&self, index: usize, steps: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        while slots
            .get(index)
            .is_some_and(|s| s.steps <= steps || s.parked.is_none())
        {
            match self.wait_slice(slots, deadline) {
                Some(next) => slots = next,
                None => return false,
            }
        }
        slots.get(index).is_some()
    }

    /// vCPU `index` runs again: the general registers to load first, if a client wrote them.
    pub fn unpark(&self, index: usize) -> Option<Registers> {
        let mut slots = self.lock();
        let slot = slots.get_mut(index)?;
        slot.parked = None;
        slot.written.take()
    }

    /// Writes vCPU `index`'s general registers (loaded before it next runs). `false` unless it
    /// is parked, or parks again within `timeout` (it may be out for a moment, installing a
    /// new plan).
    pub fn write(&self, index: usize, regs: Registers, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        while slots.get(index).is_some_and(|s| s.parked.is_none()) {
            match self.wait_slice(slots, deadline) {
                Some(next) => slots = next,
                None => return false,
            }
        }
        match slots.get_mut(index) {
            Some(Slot {
                parked: Some(parked),
                written,
                ..
            }) => {
                parked.regs = regs.clone();
                *written = Some(regs);
                true
            }
            _ => false,
        }
    }

    /// vCPU `index`'s registers, waiting up to `timeout` for it to park.
    pub fn wait(&self, index: usize, timeout: Duration) -> Option<VcpuRegisters> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        loop {
            match slots.get(index) {
                None => return None,
                Some(Slot {
                    parked: Some(regs), ..
                }) => return Some(regs.clone()),
                Some(_) => {}
            }
            slots = self.wait_slice(slots, deadline)?;
        }
    }

    /// Whether every vCPU has parked, waiting up to `timeout`.
    pub fn wait_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        while slots.iter().any(|s| s.parked.is_none()) {
            match self.wait_slice(slots, deadline) {
                Some(next) => slots = next,
                None => return false,
            }
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
        ds: seg(&sregs.ds),
        es: seg(&sregs.es),
        fs: seg(&sregs.fs),
        gs: seg(&sregs.gs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_the_vcpu_to_park() {
        let p = Arc::new(ParkedRegs::new(2, Arc::new(RunControl::new().unwrap())));
        assert!(p.wait(0, Duration::ZERO).is_none());
        assert!(p.wait(5, Duration::ZERO).is_none(), "no such vCPU");
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.wait(1, Duration::from_secs(10)));
        p.park(1, VcpuRegisters::default(), 0);
        assert!(t.join().unwrap().is_some());
        assert!(!p.wait_all(Duration::ZERO), "vCPU 0 has not parked");
        p.park(0, VcpuRegisters::default(), 0);
        assert!(p.wait_all(Duration::ZERO));
        let r = Registers {
            rax: 7,
            ..Default::default()
        };
        assert!(p.write(0, r.clone(), Duration::ZERO));
        assert_eq!(
            p.wait(0, Duration::ZERO).unwrap().regs.rax,
            7,
            "reads see the write"
        );
        assert_eq!(p.unpark(0), Some(r), "the vCPU loads it");
        assert!(p.wait(0, Duration::ZERO).is_none());
        assert!(
            !p.write(0, Registers::default(), Duration::ZERO),
            "not parked"
        );
    }
}
