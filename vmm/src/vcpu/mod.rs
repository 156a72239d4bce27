//! A vCPU thread: enter the guest, classify the exit, act, repeat until the run ends.

mod exit;
mod failure;
mod fpu;
mod page_hits;
pub mod parked;
mod stuck;
mod wake_reset;

pub use crate::gate::{Held, PauseListener, Quiesced, VcpuGate};
pub use exit::{classify, classify_elements, GuestMmio, Step, UnknownAccessPolicy};

use std::sync::Arc;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use crate::debug::{DebugController, KvmDebugVcpu, VcpuDebug, Verdict};
use crate::devices::{MmioBus, PioBus};
use crate::outcome::Outcome;
use crate::run_control::RunControl;
use crate::watch::PageWatchEngine;

/// What every vCPU thread of a VM shares.
pub struct VcpuShared {
    /// Port-I/O devices.
    pub bus: PioBus,
    /// MMIO devices outside guest RAM.
    pub mmio: MmioBus,
    /// The end of the run.
    pub control: Arc<RunControl>,
    /// Guest RAM, to read instruction bytes for error reports.
    pub mem: GuestMemoryMmap,
    /// What to do with accesses no device owns.
    pub unknown_access: UnknownAccessPolicy,
    /// Debug-register virtualization.
    pub debug: Arc<DebugController>,
    /// Whether the vCPUs run the debug hooks at all (`false` only to measure their cost).
    pub debug_attached: bool,
    /// The entry gate: pauses and quiescing.
    pub gate: Arc<VcpuGate>,
    /// Page-protection watches: guest RAM accesses that exit as MMIO.
    pub watch: Arc<PageWatchEngine>,
    /// The registers of paused vCPUs, for clients.
    pub parked: Arc<parked::ParkedRegs>,
    /// ACPI S3: the sleep, and the resets at the wake (`None` without ACPI).
    pub sleep: Option<Arc<crate::sleep::SleepControl>>,
}

/// One vCPU and its index.
pub struct Vcpu {
    /// Index, equal to the KVM vCPU id and the APIC ID.
    pub index: usize,
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// The page-watch access of the previous exit, if that exit was one: the registers at it,
    /// where it ended, and the watches it hit.
    last_page_access: Option<(kvm_bindings::kvm_regs, u64, Vec<drvisor_debug::HostBpId>)>,
    /// KVM copies the registers, system registers and events into `kvm_run` at every exit
    /// (`KVM_CAP_SYNC_REGS`).
    sync_regs: bool,
    /// Where the CPU's own structures were at the previous exit (synced system registers): on
    /// SVM a triple fault resets the vCPU before drvisor sees it.
    last_structures: Option<crate::guest_paging::SystemRegisters>,
    /// RIP at the previous exit (synced registers): on SVM a triple fault resets the vCPU, and
    /// this is the last place it was seen.
    last_exit_rip: Option<u64>,
    /// Identical consecutive MMIO reads on trapped pages ([`stuck`]).
    repeated_reads: stuck::RepeatedReads,
    /// Test only: report the next exit as `KVM_EXIT_FAIL_ENTRY` with this reason
    /// ([`crate::fault_injection`]).
    pub(crate) fail_first_entry: Option<u64>,
    /// Test-only fault: make a system call no vCPU filter allows, once its filter is on.
    pub(crate) forbidden_call: bool,
    /// The state KVM created the vCPU in, to reset it to at a wake from S3.
    pub(crate) power_on: Option<crate::cpu::power_on::PowerOn>,
}

impl Vcpu {
    /// vCPU `index` on `fd`; with `sync_regs`, registers are read from `kvm_run` after exits
    /// (the host must offer all three x86 fields).
    pub fn new(index: usize, mut fd: VcpuFd, sync_regs: bool) -> Vcpu {
        if sync_regs {
            // The system registers and events too: emulating a hit's instruction needs CR3,
            // CS and the interrupt shadow, and then costs no ioctl.
            fd.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
            fd.set_sync_valid_reg(kvm_ioctls::SyncReg::SystemRegister);
            fd.set_sync_valid_reg(kvm_ioctls::SyncReg::VcpuEvents);
        }
        Vcpu {
            index,
            fd,
            last_page_access: None,
            repeated_reads: stuck::RepeatedReads::default(),
            last_structures: None,
            last_exit_rip: None,
            sync_regs,
            fail_first_entry: None,
            forbidden_call: false,
            power_on: None,
        }
    }

    /// The general registers as of the last exit.
    fn regs(&self) -> Result<kvm_bindings::kvm_regs, kvm_ioctls::Error> {
        crate::debug::exit_regs(&self.fd, self.sync_regs)
    }

    /// Whether kvm_run's sync area holds this vCPU's registers: KVM fills it at every return
    /// from KVM_RUN (a kick's included), so not before the first.
    fn synced(&self) -> bool {
        self.sync_regs && self.last_structures.is_some()
    }
}

/// The calling thread runs vCPU `index`: it may be kicked, and the controller waits for it.
/// Dropping it undoes all of that.
struct ThreadRegistration<'a> {
    index: usize,
    shared: &'a VcpuShared,
}

impl<'a> ThreadRegistration<'a> {
    fn new(index: usize, fd: &mut VcpuFd, shared: &'a VcpuShared) -> Self {
        shared.control.kicker.register_current(index);
        crate::kick::enter_vcpu_thread(fd.get_kvm_run() as *mut _);
        crate::debug::set_current_vcpu(Some(index));
        shared.debug.set_running(index, shared.debug_attached);
        ThreadRegistration { index, shared }
    }
}

impl Drop for ThreadRegistration<'_> {
    fn drop(&mut self) {
        self.shared.debug.set_running(self.index, false);
        crate::debug::set_current_vcpu(None);
        self.shared.control.kicker.unregister(self.index);
        crate::kick::leave_vcpu_thread();
    }
}

/// Where a vCPU thread's exit handling looks for what it needs.
struct Ctx<'a> {
    shared: &'a VcpuShared,
    debug: Option<&'a mut VcpuDebug>,
}

impl Vcpu {
    /// Runs this vCPU on the calling thread until the run finishes. Never panics on guest
    /// behaviour: every way the guest can stop becomes an [`Outcome`]. Returns its RIP when it
    /// stopped, if its registers can be read.
    pub fn run(mut self, shared: &VcpuShared) -> Option<u64> {
        let control = &shared.control;
        let mut debug = VcpuDebug::new(self.index, shared.debug.clone());
        // Declared after `self` (a parameter), so dropped first, also when unwinding: no kick
        // can reach this thread once its kvm_run mapping goes away.
        let _registered = ThreadRegistration::new(self.index, &mut self.fd, shared);
        let mut ctx = Ctx {
            shared,
            debug: shared.debug_attached.then_some(&mut debug),
        };
        // Read after a port-I/O exit for its element size, which `VcpuExit` does not carry.
        let kvm_run: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
        while !control.is_finished() {
            if let Some(debug) = ctx.debug.as_deref_mut() {
                if let Err(e) = debug.before_entry(&self.debug_vcpu(shared)) {
                    control.finish(self.vmm_error(e));
                    break;
                }
            }
            if control.is_finished() {
                break;
            }
            if !shared.gate.try_enter(self.index) {
                let snapped = shared.gate.is_paused();
                if snapped {
                    // Before the first exit, ask KVM.
                    let synced = self.synced();
                    let steps = ctx.debug.as_deref().map_or(0, VcpuDebug::client_steps);
                    if let Some((regs, system)) = parked::snapshot(self.index, &mut self.fd, synced)
                    {
                        shared.parked.park(self.index, regs, system, steps);
                    }
                }
                let debug = ctx.debug.as_deref();
                let index = self.index;
                // Also wakes to leave its registers when a pause comes while it waits for a
                // hold to end.
                shared.gate.park(|| {
                    debug.is_some_and(VcpuDebug::has_news)
                        || shared.gate.has_pass(index)
                        || (!snapped && shared.gate.is_paused())
                        || shared
                            .sleep
                            .as_ref()
                            .is_some_and(|s| s.reset_due(index).is_some())
                });
                // Leaving the park (to run, or to look at news and park again): the registers
                // are the vCPU's own again, with what a client wrote meanwhile.
                let written = shared.parked.unpark(self.index);
                if !written.is_empty() {
                    if let Err(e) = self.load_written(shared, &written) {
                        control.finish(self.vmm_error(e));
                        break;
                    }
                }
                // A wake from S3: reset before entering again (the gate stays closed until
                // every vCPU has).
                if let Some(sleep) = &shared.sleep {
                    if let Some(target) = sleep.reset_due(self.index) {
                        if let Err(e) =
                            self.reset_for_wake(target, shared, ctx.debug.as_deref_mut())
                        {
                            control.finish(self.vmm_error(e));
                            break;
                        }
                        sleep.reset_done(self.index);
                    }
                }
                continue;
            }
            let run = self.fd.run();
            shared.gate.leave(self.index);
            let mut stuck_read = None;
            let step = match run {
                Ok(_) if self.fail_first_entry.is_some() => {
                    Step::FailEntry(self.fail_first_entry.take().unwrap_or_default())
                }
                Ok(exit) => {
                    let read = match &exit {
                        VcpuExit::MmioRead(gpa, data) if shared.watch.is_hole(*gpa) => {
                            Some((*gpa, data.len()))
                        }
                        _ => None,
                    };
                    stuck_read = read;
                    classify_elements(
                        exit,
                        // SAFETY: `kvm_run` points at this vCPU's kvm_run mapping, alive as long as
                        // `self.fd`; `io.size` is plain data that KVM wrote before the exit and is
                        // only used for a port-I/O exit, when the `io` member is the valid one.
                        // The exit's data slice lies elsewhere in the mapping.
                        usize::from(unsafe { (*kvm_run).__bindgen_anon_1.io.size }),
                        &shared.bus,
                        &GuestMmio {
                            devices: &shared.mmio,
                            ram: &*shared.watch,
                        },
                        shared.unknown_access,
                        self.index,
                    )
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // Kicked: clear the flag the kick set, then look at the run state again.
                    self.fd.set_kvm_immediate_exit(0);
                    Step::Resume
                }
                Err(e) => {
                    control.finish(Outcome::VmmError {
                        vcpu: Some(self.index),
                        message: format!("KVM_RUN failed: {e}"),
                    });
                    break;
                }
            };
            if self.sync_regs && step != Step::TripleFault {
                // Five fields read in place from kvm_run: no ioctl, no copy of the sync area.
                let synced = self.fd.sync_regs_mut();
                self.last_exit_rip = Some(synced.regs.rip);
                let structures = (&synced.sregs).into();
                shared.watch.note_paging(self.index, &structures);
                self.last_structures = Some(structures);
            }
            if let Some(outcome) = self.stuck_on(stuck_read, shared) {
                control.finish(outcome);
                break;
            }
            if !matches!(step, Step::PageHits(_)) {
                // Pieces of one access come in consecutive exits; anything else ends them.
                self.last_page_access = None;
            }
            // Guest-virtual watches waiting for the guest's page tables are tried, and armed
            // ones the guest maps elsewhere followed, at debug and page exits too, not only on
            // their timer (one load each when there is none).
            let retry_waiting = matches!(step, Step::Debug(_) | Step::PageHits(_));
            if let Some(outcome) = self.outcome_of(step, &mut ctx) {
                control.finish(outcome);
                break;
            }
            if retry_waiting {
                shared
                    .watch
                    .retry_waiting_when_due(crate::watch::RetryBy::Exit);
                if let Some(regs) = &self.last_structures {
                    shared.watch.follow_remaps_at_exit(regs);
                }
            }
            if let Some(debug) = ctx.debug.as_deref_mut() {
                if let Err(e) = debug.after_exit(&self.debug_vcpu(shared)) {
                    control.finish(self.vmm_error(e));
                }
            }
        }
        crate::debug::exit_regs(&self.fd, self.synced())
            .ok()
            .map(|r| r.rip)
    }

    /// Loads what a client wrote while this vCPU was parked: the x87/SSE state, then the
    /// general registers.
    fn load_written(
        &mut self,
        shared: &VcpuShared,
        written: &parked::Written,
    ) -> Result<(), crate::debug::KvmError> {
        if let Some(fpu) = &written.fpu {
            fpu::write(&self.fd, fpu)?;
        }
        match &written.regs {
            Some(regs) => self.load_written_regs(shared, regs),
            None => Ok(()),
        }
    }

    /// Loads the general registers a client wrote while this vCPU was parked.
    fn load_written_regs(
        &mut self,
        shared: &VcpuShared,
        written: &drvisor_api::Registers,
    ) -> Result<(), crate::debug::KvmError> {
        use crate::debug::DebugVcpu;
        // Before the first exit the sync area is empty and a parked read asks KVM: write
        // through KVM too, so that read sees it.
        if !self.synced() {
            let mut r = self
                .fd
                .get_regs()
                .map_err(|source| crate::debug::KvmError {
                    op: "KVM_GET_REGS",
                    source,
                })?;
            apply_written(&mut r, written);
            return self
                .fd
                .set_regs(&r)
                .map_err(|source| crate::debug::KvmError {
                    op: "KVM_SET_REGS",
                    source,
                });
        }
        let seam = self.debug_vcpu(shared);
        let mut r = seam.regs()?;
        apply_written(&mut r, written);
        seam.set_regs(&r)
    }

    fn debug_vcpu<'a>(&'a mut self, shared: &'a VcpuShared) -> KvmDebugVcpu<'a> {
        KvmDebugVcpu::new(
            &mut self.fd,
            &shared.mem,
            self.sync_regs,
            Some(shared.watch.as_ref()),
        )
    }

    fn vmm_error(&self, e: impl std::fmt::Display) -> Outcome {
        Outcome::VmmError {
            vcpu: Some(self.index),
            message: e.to_string(),
        }
    }

    /// The outcome a step ends the run with, if it does.
    fn outcome_of(&mut self, step: Step, ctx: &mut Ctx<'_>) -> Option<Outcome> {
        let vcpu = self.index;
        let shared = ctx.shared;
        match step {
            Step::Resume => None,
            Step::Halted => Some(Outcome::VmmError {
                vcpu: Some(vcpu),
                message: "the vCPU halted with nothing to wake it".into(),
            }),
            Step::TripleFault => Some(self.triple_fault(shared)),
            Step::InternalError => Some(self.internal_error(shared)),
            Step::FailEntry(reason) => Some(Outcome::FailEntry { vcpu, reason }),
            Step::UnknownPort(port) => Some(Outcome::UnknownPort {
                vcpu,
                rip: self.rip(),
                port,
            }),
            Step::Debug(arch) => match ctx.debug.as_deref_mut() {
                Some(debug) => {
                    match debug.on_debug_exit(arch.dr6, arch.pc, &self.debug_vcpu(shared)) {
                        Ok(Verdict::Resume) => None,
                        Ok(Verdict::Stop { id, rip }) => Some(Outcome::HostStop {
                            vcpu,
                            rip,
                            id: id.0,
                        }),
                        Ok(Verdict::Unemulated { rip, bytes }) => Some(Outcome::InternalError {
                            vcpu,
                            rip,
                            suberror: 1,
                            insn: bytes,
                            note: Some(
                                "drvisor trapped this MOV DR (DR7.GD) but cannot decode it, so \
                                 it can neither perform it nor step past it"
                                    .into(),
                            ),
                        }),
                        Err(e) => Some(self.vmm_error(e)),
                    }
                }
                // Detached: no guest debug was enabled, so KVM should never report this.
                None => Some(self.vmm_error(format!(
                    "unexpected KVM_EXIT_DEBUG at rip={:#x} dr6={:#x}",
                    arch.pc, arch.dr6
                ))),
            },
            Step::PageHits(hits) => self.dispatch_page_hits(hits, shared),
            Step::Unhandled(what) => Some(Outcome::VmmError {
                vcpu: Some(vcpu),
                message: format!("{what} at rip={:#x}", self.rip()),
            }),
        }
    }

    fn rip(&self) -> u64 {
        self.regs().map(|r| r.rip).unwrap_or(u64::MAX)
    }
}

/// A client's general registers over the vCPU's.
fn apply_written(r: &mut kvm_bindings::kvm_regs, written: &drvisor_api::Registers) {
    let w = written;
    (r.rax, r.rbx, r.rcx, r.rdx) = (w.rax, w.rbx, w.rcx, w.rdx);
    (r.rsi, r.rdi, r.rsp, r.rbp) = (w.rsi, w.rdi, w.rsp, w.rbp);
    (r.r8, r.r9, r.r10, r.r11) = (w.r8, w.r9, w.r10, w.r11);
    (r.r12, r.r13, r.r14, r.r15) = (w.r12, w.r13, w.r14, w.r15);
    (r.rip, r.rflags) = (w.rip, w.rflags);
}
