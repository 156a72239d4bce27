//! The registers of paused vCPUs. A client thread never touches a vCPU's file descriptor, so a
//! vCPU leaves its registers here when it parks for a pause, and takes them back when it
//! resumes, with any general registers a client wrote meanwhile (gdb's `set $rax = ...`).
//! `GET /vcpus/{n}/registers` and gdb read them. gdb also gets the rest of the vCPU's state
//! a kernel developer needs ([`SystemState`]: CR8, the kernel GS base, the x87/SSE state),
//! read by the vCPU itself when it parks, and may write the x87/SSE state back the same way.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use drvisor_api::rest::{Segment, VcpuRegisters};
use drvisor_api::Registers;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
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

/// IA32_KERNEL_GS_BASE, what `swapgs` exchanges GS.base with.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// The state a parked vCPU leaves beside [`VcpuRegisters`] (which the REST plane reports), for
/// gdb: what is not in the sync-regs area costs one ioctl each at park time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SystemState {
    /// CR8 (the task priority), from the system registers.
    pub cr8: u64,
    /// IA32_KERNEL_GS_BASE (`KVM_GET_MSRS`); `None` if KVM refused it.
    pub kernel_gs_base: Option<u64>,
    /// The x87 and SSE state (`KVM_GET_FPU`); `None` if KVM refused it.
    pub fpu: Option<kvm_fpu>,
}

/// What a client wrote while a vCPU was parked, to load before it runs again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    /// General registers.
    pub regs: Option<Registers>,
    /// The x87/SSE state (`KVM_SET_FPU`).
    pub fpu: Option<kvm_fpu>,
}

impl Written {
    /// Whether there is nothing to load.
    pub fn is_empty(&self) -> bool {
        self.regs.is_none() && self.fpu.is_none()
    }
}

#[derive(Clone, Default)]
struct Slot {
    parked: Option<VcpuRegisters>,
    /// Beside `parked`, as of the same park.
    system: SystemState,
    /// General registers a client wrote while the vCPU was parked, to load before it runs.
    written: Option<Registers>,
    /// The x87/SSE state a client wrote while the vCPU was parked.
    written_fpu: Option<kvm_fpu>,
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

    /// The slots, locked once vCPU `index` is parked (or is no vCPU); `None` if it is out for
    /// longer than `timeout`.
    fn lock_parked(
        &self,
        index: usize,
        timeout: Duration,
    ) -> Option<std::sync::MutexGuard<'_, Vec<Slot>>> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        while slots.get(index).is_some_and(|s| s.parked.is_none()) {
            slots = self.wait_slice(slots, deadline)?;
        }
        Some(slots)
    }

    /// vCPU `index` parked with these registers, having taken `steps` client single-steps
    /// since it started.
    pub fn park(&self, index: usize, mut regs: VcpuRegisters, mut system: SystemState, steps: u64) {
        if let Some(slot) = self.lock().get_mut(index) {
            if let Some(written) = &slot.written {
                regs.regs = written.clone();
            }
            if let Some(fpu) = slot.written_fpu {
                system.fpu = Some(fpu);
            }
            slot.parked = Some(regs);
            slot.system = system;
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

    /// vCPU `index` runs again: what to load first, which a client wrote.
    pub fn unpark(&self, index: usize) -> Written {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(index) else {
            return Written::default();
        };
        slot.parked = None;
        Written {
            regs: slot.written.take(),
            fpu: slot.written_fpu.take(),
        }
    }

    /// Writes vCPU `index`'s x87/SSE state (loaded before it next runs), as [`Self::write`]
    /// does the general registers.
    pub fn write_fpu(&self, index: usize, fpu: kvm_fpu, timeout: Duration) -> bool {
        let Some(mut slots) = self.lock_parked(index, timeout) else {
            return false;
        };
        match slots.get_mut(index) {
            Some(slot) if slot.parked.is_some() => {
                slot.system.fpu = Some(fpu);
                slot.written_fpu = Some(fpu);
                true
            }
            _ => false,
        }
    }

    /// vCPU `index`'s registers and the rest of its state, waiting up to `timeout` for it to
    /// park.
    pub fn wait_system(
        &self,
        index: usize,
        timeout: Duration,
    ) -> Option<(VcpuRegisters, SystemState)> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        loop {
            match slots.get(index) {
                None => return None,
                Some(Slot {
                    parked: Some(regs),
                    system,
                    ..
                }) => return Some((regs.clone(), *system)),
                Some(_) => {}
            }
            slots = self.wait_slice(slots, deadline)?;
        }
    }

    /// Writes vCPU `index`'s general registers (loaded before it next runs). `false` unless it
    /// is parked, or parks again within `timeout` (it may be out for a moment, installing a
    /// new plan).
    pub fn write(&self, index: usize, regs: Registers, timeout: Duration) -> bool {
        let Some(mut slots) = self.lock_parked(index, timeout) else {
            return false;
        };
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
/// drvisor changed for the next entry), else through the ioctls; and the rest of its state,
/// two ioctls more (`KVM_GET_FPU`, `KVM_GET_MSRS` for one MSR), made by the vCPU's own thread
/// as it parks: a pause is rare, and the stub must never touch a vCPU.
pub fn snapshot(
    index: usize,
    fd: &mut VcpuFd,
    sync_regs: bool,
) -> Option<(VcpuRegisters, SystemState)> {
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
    let system = SystemState {
        cr8: sregs.cr8,
        kernel_gs_base: kernel_gs_base(fd),
        fpu: super::fpu::read(fd),
    };
    let regs = VcpuRegisters {
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
    };
    Some((regs, system))
}

/// IA32_KERNEL_GS_BASE of the vCPU on `fd`.
fn kernel_gs_base(fd: &VcpuFd) -> Option<u64> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KERNEL_GS_BASE,
        ..Default::default()
    }])
    .ok()?;
    match fd.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice().first().map(|e| e.data),
        _ => None,
    }
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
        p.park(1, VcpuRegisters::default(), SystemState::default(), 0);
        assert!(t.join().unwrap().is_some());
        assert!(!p.wait_all(Duration::ZERO), "vCPU 0 has not parked");
        p.park(0, VcpuRegisters::default(), SystemState::default(), 0);
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
        let fpu = kvm_fpu {
            mxcsr: 0x1f80,
            ..Default::default()
        };
        assert!(p.write_fpu(0, fpu, Duration::ZERO));
        assert_eq!(
            p.wait_system(0, Duration::ZERO).unwrap().1.fpu,
            Some(fpu),
            "reads see the FPU write"
        );
        assert_eq!(
            p.unpark(0),
            Written {
                regs: Some(r),
                fpu: Some(fpu)
            },
            "the vCPU loads both"
        );
        assert!(p.wait(0, Duration::ZERO).is_none());
        assert!(
            !p.write(0, Registers::default(), Duration::ZERO),
            "not parked"
        );
        assert!(!p.write_fpu(0, fpu, Duration::ZERO), "not parked");
        assert!(p.unpark(0).is_empty(), "loaded once");
    }
}
