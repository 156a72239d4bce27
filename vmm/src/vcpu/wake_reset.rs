//! A vCPU's reset when the machine wakes from S3 ([`crate::sleep`]), on its own thread while
//! the gate keeps every vCPU out: the operation its last exit left pending is completed
//! without running the guest, then its power-on state goes back
//! ([`crate::cpu::power_on`]), the debug registers through the debug engine, and it either
//! starts at the waking vector (the boot vCPU) or waits for INIT and SIPI.

use kvm_bindings::{
    kvm_debugregs, kvm_mp_state, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
};

use super::{Vcpu, VcpuShared};
use crate::cpu::power_on::resume_state;
use crate::debug::{KvmError, VcpuDebug};
use crate::sleep::ResetTarget;

fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError { op, source }
}

impl Vcpu {
    /// Resets this vCPU for the wake to `target`.
    pub(super) fn reset_for_wake(
        &mut self,
        target: ResetTarget,
        shared: &VcpuShared,
        debug: Option<&mut VcpuDebug>,
    ) -> Result<(), KvmError> {
        let Some(power_on) = self.power_on.clone() else {
            return Err(KvmError {
                op: "the vCPU's power-on state (never captured)",
                source: kvm_ioctls::Error::new(libc::ENODATA),
            });
        };
        self.complete_pending_exit()?;
        let (regs, sregs) = match target {
            ResetTarget::Boot(at) => resume_state(&power_on, at),
            ResetTarget::WaitForSipi => (power_on.regs, power_on.sregs),
        };
        let fd = &self.fd;
        fd.set_vcpu_events(&power_on.events)
            .map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
        // The APIC base (in the system registers) first: KVM reads the LAPIC state in the mode
        // the base sets, and the state was captured in xAPIC mode (a guest may have left
        // x2APIC on). QEMU orders its reset the same way.
        fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        fd.set_lapic(&power_on.lapic)
            .map_err(kvm("KVM_SET_LAPIC"))?;
        fd.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
        fd.set_fpu(&power_on.fpu).map_err(kvm("KVM_SET_FPU"))?;
        match debug {
            // Through the engine, which merges them with the host's breakpoints.
            Some(debug) => debug.reset_guest(&self.debug_vcpu(shared))?,
            None => {
                let reset = drvisor_debug::GuestDrFile::default();
                let d = kvm_debugregs {
                    db: reset.dr,
                    dr6: reset.dr6.bits(),
                    dr7: reset.dr7.bits(),
                    ..Default::default()
                };
                self.fd
                    .set_debug_regs(&d)
                    .map_err(kvm("KVM_SET_DEBUGREGS"))?;
            }
        }
        let mp_state = match target {
            ResetTarget::Boot(_) => KVM_MP_STATE_RUNNABLE,
            ResetTarget::WaitForSipi => KVM_MP_STATE_INIT_RECEIVED,
        };
        self.fd
            .set_mp_state(kvm_mp_state { mp_state })
            .map_err(kvm("KVM_SET_MP_STATE"))?;
        // What drvisor remembers of the vCPU's last exit belongs to the code before the sleep;
        // the sync area holds the new registers until the next exit refreshes it.
        if self.sync_regs {
            let synced = self.fd.sync_regs_mut();
            synced.regs = regs;
            synced.sregs = sregs;
        }
        self.last_exit_rip = None;
        self.last_page_access = None;
        self.repeated_reads = Default::default();
        let structures = (&sregs).into();
        shared.watch.note_paging(self.index, &structures);
        self.last_structures = self.last_structures.map(|_| structures);
        Ok(())
    }

    /// Completes the operation the last exit left pending (a port or MMIO access is finished
    /// by the next `KVM_RUN`) without running a guest instruction: `KVM_RUN` with
    /// `immediate_exit` set does that and returns `EINTR` (KVM API, "immediate_exit").
    fn complete_pending_exit(&mut self) -> Result<(), KvmError> {
        self.fd.set_kvm_immediate_exit(1);
        let ran = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match ran {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
            Err(source) => Err(KvmError {
                op: "KVM_RUN (completing the exit before the reset)",
                source,
            }),
            Ok(()) => Ok(()),
        }
    }
}
