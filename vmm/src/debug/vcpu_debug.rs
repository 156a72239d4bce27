//! One vCPU's side of debug-register virtualization: install the current plan before each
//! entry, dispatch every `#DB` exit, step over exec breakpoints where RF does not work, and keep
//! the guest's DR file in view.

use std::sync::Arc;

use drvisor_api::{BreakKind, HitAction};

use super::Engine;
use crate::guest_paging::SystemRegisters;
use drvisor_debug::{
    attribute, AttributionContext, Dr6, Dr7, DrKind, GuestDrFile, HostBpId, HostHit, PhysSlot,
    Slot, VcpuPlan, VmmEvent,
};
use std::collections::HashMap;

use kvm_bindings::kvm_regs;

use super::action::{registers, HitContext};
use super::controller::{DebugController, HitTargets, LateGuestSlot};
use super::kvm_vcpu::{DebugVcpu, GuestDebug, Result};
use super::mov_dr;
use super::resume::{guest_exec_at, Emulator, ResumeCounts};
use drvisor_debug::check_debug_extensions;

/// RFLAGS.RF (SDM 17.3.1.1): suppresses instruction breakpoints for one instruction.
const RFLAGS_RF: u64 = 1 << 16;
/// DR7.GD.
const DR7_GD: u64 = 1 << 13;

/// What the run loop does after a `#DB` exit.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Re-enter the guest.
    Resume,
    /// A host breakpoint's action ended the run.
    Stop {
        /// The breakpoint.
        id: HostBpId,
        /// RIP at the hit.
        rip: u64,
    },
    /// drvisor trapped a guest MOV DR (DR7.GD) that it cannot decode, so it can neither
    /// perform it nor step past it: resuming would trap again for ever.
    Unemulated {
        /// RIP of the instruction.
        rip: u64,
        /// Its bytes, as fetched.
        bytes: Vec<u8>,
    },
}

/// What emulating a trapped MOV DR did.
enum MovDrDone {
    /// Performed; RIP advanced; nothing injected.
    Performed,
    /// An exception went to the guest instead of (#DB with BD, #UD, #GP) or after (#DB with
    /// BS for its TF) the access.
    Injected,
    /// Not a MOV DR drvisor can decode.
    Undecodable(Vec<u8>),
}

/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;

/// An exec breakpoint being stepped over: its slots stay disarmed until the instruction at
/// `rip` has retired.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StepOver {
    rip: u64,
    /// The owners whose slots stay disarmed: owners, not slot numbers, because a plan change
    /// during the step may move a breakpoint to another slot.
    disarmed: Vec<PhysSlot>,
    /// The stepped instruction is a MOV DR, so the guest's DR file may change with it.
    mov_dr: bool,
    /// RFLAGS.RF was set at the hit (a re-execution after the guest's own #DB handler): it
    /// must stay set until the instruction retires, or the guest's breakpoint there fires again.
    rf: bool,
}

/// A client's single-step under way.
#[derive(Clone, Copy, Debug)]
struct ClientStep {
    /// RIP when it began.
    from: u64,
    /// Step exits so far that left RIP there.
    stalled: u8,
}

/// How many step exits without progress end a client's step anyway (`jmp .`).
const CLIENT_STEP_STALLS: u8 = 3;

/// One vCPU's debug state.
pub struct VcpuDebug {
    index: usize,
    ctl: Arc<DebugController>,
    applied: u64,
    plan: VcpuPlan,
    /// The host breakpoints of `plan`: a hit looks its breakpoint up here, with no lock.
    targets: HitTargets,
    installed: GuestDebug,
    step_over: Option<StepOver>,
    /// A client's single-step (gdb `stepi`) is under way, from this RIP, with this many step
    /// exits that left RIP there: its BS is the client's, not the guest's.
    client_step: Option<ClientStep>,
    /// How many client single-steps this vCPU has taken.
    client_steps: u64,
    guest: GuestDrFile,
    skip_resync: bool,
    /// A guest #DB that could not be queued yet (KVM held another event); retried before entry.
    deferred_db: bool,
    /// Whether the instruction at an address is a MOV DR, for the addresses stepped over.
    mov_dr_at: HashMap<u64, bool>,
    /// Hosts without RF: the instructions resumed by emulation instead of a step-over.
    emulator: Emulator,
    /// How each exec hit was resumed, for benchmarks and tests.
    resumes: ResumeCounts,
}

impl Drop for VcpuDebug {
    fn drop(&mut self) {
        self.ctl.tally_resumes(self.resumes);
    }
}

impl VcpuDebug {
    /// The debug state of vCPU `index`, before its first entry.
    pub fn new(index: usize, ctl: Arc<DebugController>) -> Self {
        VcpuDebug {
            index,
            ctl,
            applied: u64::MAX,
            plan: VcpuPlan::empty(drvisor_debug::VcpuId(index as u32)),
            targets: HitTargets::default(),
            installed: GuestDebug::OFF,
            step_over: None,
            client_step: None,
            client_steps: 0,
            guest: GuestDrFile::default(),
            skip_resync: false,
            deferred_db: false,
            mov_dr_at: HashMap::new(),
            emulator: Emulator::default(),
            resumes: ResumeCounts::default(),
        }
    }

    /// How this vCPU has resumed past exec breakpoints so far.
    pub fn resumes(&self) -> ResumeCounts {
        self.resumes
    }

    /// The controller.
    pub fn controller(&self) -> &Arc<DebugController> {
        &self.ctl
    }

    /// The plan this vCPU runs.
    pub fn plan(&self) -> &VcpuPlan {
        &self.plan
    }

    /// Runs before every `KVM_RUN`: installs the newest plan. Cheap when nothing changed: one
    /// atomic load and one comparison.
    pub fn before_entry(&mut self, vcpu: &impl DebugVcpu) -> Result<()> {
        if self.deferred_db {
            self.deferred_db = !vcpu.inject_db()?;
        }
        if self.ctl.take_step_request(self.index) {
            self.client_step = Some(ClientStep {
                from: vcpu.regs()?.rip,
                stalled: 0,
            });
            self.install(vcpu)?;
        }
        while self.has_news() {
            let (generation, plan, targets) = self.ctl.vcpu_plan(self.index);
            let was_on = self.installed.hw_bp;
            self.plan = plan;
            self.targets = targets;
            self.install(vcpu)?;
            self.applied = generation;
            if self.installed.hw_bp && !was_on {
                // Host debugging just came on: look at the guest's DRs now, so the visible
                // states are right from the first moment. This may re-plan (hence the loop).
                // Until now KVM loaded the guest's own DRs: nothing was late.
                self.resync_guest(vcpu, false)?;
            }
            self.ctl.ack(self.index, generation);
        }
        Ok(())
    }

    /// How many client single-steps this vCPU has finished.
    pub fn client_steps(&self) -> u64 {
        self.client_steps
    }

    /// Whether a newer plan is out than the one this vCPU runs.
    pub fn has_news(&self) -> bool {
        self.ctl.generation() != self.applied
    }

    /// What `KVM_SET_GUEST_DEBUG` must hold now.
    fn desired(&self) -> GuestDebug {
        let mut dr7 = self.plan.dr7;
        if let Some(step) = &self.step_over {
            for owner in &step.disarmed {
                if let Some(slot) = self.plan.phys_of(*owner) {
                    dr7 = dr7.with_local(slot, false).with_global(slot, false);
                }
            }
        }
        // Lazy switching: with nothing of the host's to watch, the vCPU runs with guest debug
        // off and KVM loads the guest's own DRs as if drvisor were not there. That holds also
        // when the plan carries guest slots only: then they fire natively, and every guest DR
        // change takes effect at once, even on hosts that cannot trap MOV DR.
        let hw_bp = self.plan.has_host_slots();
        let stepping = self.step_over.is_some() || self.client_step.is_some();
        if !hw_bp && !stepping {
            return GuestDebug::OFF;
        }
        let mut dr7 = dr7.bits();
        if hw_bp && self.ctl.caps().gd_trap {
            // Trap the guest's MOV DR so its DR file stays exact (SDM 17.2.4).
            dr7 |= DR7_GD;
        }
        GuestDebug {
            hw_bp,
            single_step: stepping,
            block_irq: self.ctl.caps().block_irq,
            dr: self.plan.dr,
            dr7,
        }
    }

    fn install(&mut self, vcpu: &impl DebugVcpu) -> Result<()> {
        let want = self.desired();
        if want != self.installed {
            vcpu.set_guest_debug(&want)?;
            self.installed = want;
            self.ctl.set_blind(self.index, self.blind());
        }
        Ok(())
    }

    /// Whether the guest's DR writes stay invisible to drvisor until this vCPU's next exit while
    /// they matter: host debugging is on (so KVM loads the plan, not the guest's DRs), guest
    /// slots are carried physically, and MOV DR cannot be trapped (SVM). The controller's resync
    /// timer then kicks the vCPU out periodically, bounding the window.
    fn blind(&self) -> bool {
        let caps = self.ctl.caps();
        self.installed.hw_bp && !caps.gd_trap && !caps.guest_breakpoints_native
    }

    /// Runs after every exit: where MOV DR cannot be trapped, re-reads the guest's DR file while
    /// host debugging is on, and while it is off but the guest's DRs decide where host
    /// breakpoints go. The window this leaves: a guest change between two exits is seen
    /// at the second (the end of a step-over does not count: only the stepped instruction ran),
    /// so a plan that depends on it (physical carriage only) lags by one exit, and the visible
    /// guest states lag likewise.
    pub fn after_exit(&mut self, vcpu: &impl DebugVcpu) -> Result<()> {
        if std::mem::take(&mut self.skip_resync) {
            return Ok(());
        }
        if self.installed.hw_bp {
            if !self.ctl.caps().gd_trap {
                self.resync_guest(vcpu, true)?;
            }
        } else if self.ctl.guest_file_matters() {
            // Guest debug is off, so KVM loaded the guest's own DRs and nothing was late; but a
            // host breakpoint may be waiting for a slot the guest holds.
            self.resync_guest(vcpu, false)?;
        }
        Ok(())
    }

    /// Re-reads the guest's DR file; re-plans if what claims slots changed. When the guest ran
    /// since the previous read with the plan drvisor placed (`ran_our_plan`: host debugging on,
    /// physical carriage, no MOV DR trap), the guest slots armed in between were not in
    /// hardware: they are reported late.
    fn resync_guest(&mut self, vcpu: &impl DebugVcpu, ran_our_plan: bool) -> Result<()> {
        let before = self.guest;
        let d = vcpu.debugregs()?;
        let unseen = self.ctl.synced(self.index);
        let file = GuestDrFile {
            dr: d.db,
            dr6: Dr6::from_bits(d.dr6),
            dr7: Dr7::from_bits(d.dr7),
        };
        // DR6 changes on every guest #DB; only DR0-3 and DR7 claim slots.
        if file.dr != self.guest.dr || file.dr7 != self.guest.dr7 {
            self.ctl.guest_changed(self.index, file);
        }
        self.guest = file;
        let caps = self.ctl.caps();
        if ran_our_plan && !caps.gd_trap && !caps.guest_breakpoints_native {
            self.report_late_slots(&before, unseen);
        }
        Ok(())
    }

    /// Physical carriage without a MOV DR trap (SVM): KVM kept the guest's DR writes since the
    /// last exit to itself, so a guest slot armed or moved in that time was not in hardware
    /// until now. Whatever it would have caught in between is lost; say so, never silently.
    fn report_late_slots(&self, before: &GuestDrFile, unseen: std::time::Duration) {
        for virt in late_slots(before, &self.guest) {
            self.ctl.report_late_guest_slot(LateGuestSlot {
                vcpu: self.index,
                slot: virt,
                addr: self.guest.dr[virt.index()],
                kind: self.guest.dr7.rw(virt),
                len: self.guest.dr7.len(virt).bytes(),
                unseen,
            });
        }
    }

    /// The vCPU was reset (a wake from S3): its own debug registers are at their reset values
    /// (DR0-3 0, DR6 0xffff0ff0, DR7 0x400). They reach KVM and the controller through the same
    /// door as an emulated guest MOV DR ([`VcpuDebug::publish_guest_file`]), so the plan drops
    /// the guest's slots while the host's breakpoints stay armed; the next
    /// [`VcpuDebug::before_entry`] installs the plan that follows. A step-over or guest #DB
    /// under way belonged to code the reset abandoned: both are dropped.
    pub fn reset_guest(&mut self, vcpu: &impl DebugVcpu) -> Result<()> {
        self.step_over = None;
        self.deferred_db = false;
        self.guest = GuestDrFile::default();
        self.publish_guest_file(vcpu)?;
        // Without the step-over: its disarmed slots are armed again.
        self.install(vcpu)
    }

    /// The guest's DR file as drvisor holds it goes to KVM (the guest's own view) and to the
    /// controller, which re-plans if what claims slots changed.
    fn publish_guest_file(&mut self, vcpu: &impl DebugVcpu) -> Result<()> {
        let mut d = vcpu.debugregs()?;
        d.db = self.guest.dr;
        d.dr6 = self.guest.dr6.bits();
        d.dr7 = self.guest.dr7.bits();
        vcpu.set_debugregs(&d)?;
        self.ctl.guest_changed(self.index, self.guest);
        Ok(())
    }

    /// Dispatches a `KVM_EXIT_DEBUG` with physical `dr6` at linear address `pc` (the exit's
    /// `debug.arch.pc`): every bit to its owner.
    pub fn on_debug_exit(&mut self, dr6: u64, pc: u64, vcpu: &impl DebugVcpu) -> Result<Verdict> {
        let ctx = AttributionContext {
            host_single_step: self.step_over.is_some() || self.client_step.is_some(),
            host_gd_trap: self.installed.dr7 & DR7_GD != 0,
            guest_gd: self.guest.dr7.gd(),
        };
        let attribution = attribute(Dr6::from_bits(dr6), &self.plan, ctx);
        tracing::trace!(
            vcpu = self.index,
            "#DB exit pc={pc:#x} dr6={dr6:#x}: {attribution}"
        );
        let mut verdict = Verdict::Resume;
        let mut injected = false;
        // Only the end of a step-over: no registers needed, and nothing the guest ran but the
        // one stepped instruction, so the next after_exit need not re-read its DRs.
        if attribution.host_hits.is_empty() && attribution.vmm_events == [VmmEvent::SingleStep] {
            // Unless the stepped instruction was itself a MOV DR.
            self.skip_resync = !self.step_over.as_ref().is_some_and(|s| s.mov_dr);
            let guest_dr6 = self.finish_step(vcpu, pc, attribution.guest_dr6)?;
            if let Some(guest_dr6) = guest_dr6 {
                self.inject(vcpu, guest_dr6)?;
            }
            if self.step_over.as_ref().is_some_and(|s| s.rf) {
                // A step exit before the instruction retired (seen on this project's hosts
                // under SMP load) clears RF as a completed instruction would; the step goes on
                // with RF set again, so the guest's own breakpoint there, already delivered,
                // does not fire a second time.
                let mut regs = vcpu.regs()?;
                if regs.rflags & RFLAGS_RF == 0 {
                    regs.rflags |= RFLAGS_RF;
                    vcpu.set_regs(&regs)?;
                }
            }
            self.install(vcpu)?;
            return Ok(verdict);
        }
        let mut regs = vcpu.regs()?;
        let mut guest_dr6 = attribution.guest_dr6;
        // Exec slots to resume past: host hits, and the guest's that are not delivered.
        let mut exec_slots = Vec::new();
        if self.blind()
            && !self.skip_resync
            && guest_dr6.is_some_and(|d| d.hit_slots().next().is_some())
        {
            // The guest may have disarmed or moved the slot that fired since drvisor last looked
            // (its #DB handler re-arming, its scheduler switching tasks): the hardware ran a
            // placement the guest no longer has, and on hardware of its own this would not
            // have fired. Read its DR file now (this exit's after_exit then need not) and
            // deliver only hits of slots it still arms as placed.
            self.resync_guest(vcpu, true)?;
            self.skip_resync = true;
            if let Some(dr6) = guest_dr6 {
                let mut left = dr6;
                for (virt, phys) in stale_guest_hits(&self.plan, &self.guest, dr6) {
                    left = left.with_hit(virt, false);
                    if self.plan.dr7.rw(phys) == DrKind::Exec {
                        exec_slots.push(phys);
                    }
                    tracing::debug!(
                        vcpu = self.index,
                        "a hit of the guest's {virt} (physical {phys}) at {pc:#x} is not \
                         delivered: the guest disarmed or moved that slot before drvisor saw it"
                    );
                }
                guest_dr6 = left.has_events().then_some(left);
            }
        }

        for event in &attribution.vmm_events {
            match event {
                // The step-over is done once RIP has moved: the slots re-arm at the next
                // install. A BS with RIP still on the instruction is not progress: a `rep`
                // iteration, or (seen on this project's hosts under SMP load) a step exit
                // delivered before the instruction ran. Re-arming then would report the same
                // execution twice, so keep stepping.
                VmmEvent::SingleStep => guest_dr6 = self.finish_step(vcpu, pc, guest_dr6)?,
                VmmEvent::DrAccess => match self.emulate_mov_dr(vcpu, pc, &mut regs, guest_dr6)? {
                    MovDrDone::Performed => {}
                    MovDrDone::Injected => injected = true,
                    MovDrDone::Undecodable(bytes) => {
                        return Ok(Verdict::Unemulated {
                            rip: regs.rip,
                            bytes,
                        })
                    }
                },
            }
        }

        let mut reexecution = None;
        // Where the guest's page tables are, for a hit that captures memory (no ioctl: the
        // synced registers, when they came with the exit).
        let paging = vcpu.sregs().map(|s| (&s).into());
        for hit in &attribution.host_hits {
            if hit.kind == DrKind::Exec {
                exec_slots.push(hit.phys);
                if regs.rflags & RFLAGS_RF != 0
                    && match reexecution {
                        Some(known) => known,
                        None => *reexecution.insert(self.guest_reexecutes(vcpu, pc)?),
                    }
                {
                    // The instruction is being re-executed with RF=1 (the guest returned from
                    // its own #DB handler): hardware would suppress every instruction
                    // breakpoint here, so this is not a new hit (SDM 17.3.1.1).
                    continue;
                }
            }
            if let Some(stop) = self.dispatch_host_hit(hit, &regs, paging) {
                verdict = stop;
            }
        }

        // The same rule for the guest's exec breakpoints carried in physical slots: with RF=1
        // the guest is re-executing the instruction its own #DB handler returned to, so the hit
        // was delivered already. Step over it instead of injecting it again.
        if regs.rflags & RFLAGS_RF != 0 {
            if let Some(dr6) = guest_dr6 {
                let mut left = dr6;
                for virt in dr6.hit_slots() {
                    let Some(phys) = self.plan.phys_of_guest(virt) else {
                        continue;
                    };
                    if self.plan.dr7.rw(phys) == DrKind::Exec {
                        left = left.with_hit(virt, false);
                        exec_slots.push(phys);
                    }
                }
                guest_dr6 = left.has_events().then_some(left);
            }
        }
        if !exec_slots.is_empty() {
            let guest_db = injected || guest_dr6.is_some();
            self.resume_past_exec(vcpu, &mut regs, pc, exec_slots, guest_db)?;
        }
        if let Some(guest_dr6) = guest_dr6.filter(|_| !injected) {
            self.inject(vcpu, guest_dr6)?;
        }
        self.install(vcpu)?;
        Ok(verdict)
    }

    /// Whether a host exec exit at `pc` with RF=1 is the re-execution of an instruction whose
    /// breakpoints were serviced: the guest's own exec breakpoint is at `pc` (as of the previous
    /// exit, or now, if its handler disarmed it). RF=1 elsewhere is not a re-execution: this
    /// project's hosts leave RF set for one instruction more after the guest's `iretq` (a host
    /// breakpoint on the instruction right after a guest breakpoint exits with RF=1), and on
    /// hardware RF is cleared when an instruction completes (SDM 17.3.1.1), so the hit is new.
    fn guest_reexecutes(&mut self, vcpu: &impl DebugVcpu, pc: u64) -> Result<bool> {
        let before = guest_exec_at(self.guest.dr7, &self.guest.dr, pc);
        if !self.ctl.caps().gd_trap && self.installed.hw_bp && !self.skip_resync {
            // The guest may have armed it since the previous exit; the copy read now serves
            // this exit's after_exit too.
            self.resync_guest(vcpu, self.installed.hw_bp)?;
            self.skip_resync = true;
        }
        Ok(before || guest_exec_at(self.guest.dr7, &self.guest.dr, pc))
    }

    /// A single-step exit at `pc` ends the step-over once the instruction has retired. Returns
    /// the guest's DR6 for this exit.
    ///
    /// A BS the guest's own TF would have raised during the step is not added: on our hosts
    /// RFLAGS.TF at a hit cannot be told apart from KVM's own single-step flag leaking into the
    /// frame the guest's #DB handler pushed (adding it delivered one spurious BS per hit), and
    /// the guest's TF is not tracked elsewhere. docs/design.md (Known limits) says so.
    fn finish_step(
        &mut self,
        vcpu: &impl DebugVcpu,
        pc: u64,
        guest_dr6: Option<Dr6>,
    ) -> Result<Option<Dr6>> {
        // A client's step ends once RIP has moved: one instruction has run. A step exit with
        // RIP still there is a `rep` iteration or (seen on this project's hosts under SMP
        // load) an exit before the instruction ran, as for the step-over below; a jump to
        // itself never moves, so a few such exits end it too. RIP, not `pc`: the step began
        // from RIP, and the two differ where CS's base is not 0 (real mode).
        if let Some(step) = &mut self.client_step {
            if step.from == vcpu.regs()?.rip && step.stalled < CLIENT_STEP_STALLS {
                step.stalled += 1;
            } else {
                self.client_step = None;
                self.client_steps += 1;
                self.ctl.end_step(self.index);
            }
        }
        if self.step_over.as_ref().is_some_and(|s| s.rip != pc) {
            self.step_over = None;
        }
        Ok(guest_dr6)
    }

    /// Runs the breakpoint's action; `Some` if it stops the run.
    fn dispatch_host_hit(
        &self,
        hit: &HostHit,
        regs: &kvm_regs,
        paging: Option<SystemRegisters>,
    ) -> Option<Verdict> {
        let (id, kind) = (hit.id, hit.kind);
        // The breakpoint as of the plan this vCPU ran when it fired: removed since, it is still
        // reported (its `removed` comes once this vCPU runs the plan without it).
        let target = self.targets.get(&id)?;
        let count = target.count_hit();
        let hit = HitContext {
            id,
            label: target.label.clone(),
            vcpu: self.index,
            rip: regs.rip,
            addr: target.spec.addr(),
            kind: match kind {
                DrKind::Exec => BreakKind::Exec,
                DrKind::Write => BreakKind::Write,
                _ => BreakKind::ReadWrite,
            },
            engine: Engine::Hw,
            slot: Some(hit.phys.number()),
            access: None,
            count,
            regs: registers(regs),
            paging,
        };
        // The mark comes before the hit is published: a resume answering it is kept.
        let mark = self.ctl.resume_mark();
        match (target.on_hit)(&hit) {
            HitAction::Continue => None,
            HitAction::Pause => {
                self.ctl
                    .pause_unless_resumed_since(mark, &hit.pause_reason());
                None
            }
            HitAction::Stop => Some(Verdict::Stop { id, rip: regs.rip }),
        }
    }

    /// An exec breakpoint is a fault: the instruction has not run. Resume past it with RF where
    /// the host honours it (written through the sync-regs dirty bits: no `KVM_SET_REGS`). Else
    /// emulate the instruction where that is exact ([`super::resume`]): one exit per hit. Else
    /// step over it with its slots disarmed. `guest_db`: this exit also delivers a #DB to the
    /// guest, which must reach it before the instruction runs, so it is not emulated.
    fn resume_past_exec(
        &mut self,
        vcpu: &impl DebugVcpu,
        regs: &mut kvm_regs,
        pc: u64,
        slots: Vec<Slot>,
        guest_db: bool,
    ) -> Result<()> {
        if self.ctl.caps().rf_resumes {
            regs.rflags |= RFLAGS_RF;
            self.resumes.rf += 1;
            return vcpu.set_regs(regs);
        }
        if pc == regs.rip && regs.rflags & RFLAGS_RF == 0 && !guest_db && !self.deferred_db {
            // The decision needs the guest's DR file as of this exit: a guest exec breakpoint
            // on this instruction must still fire, and where MOV DR cannot be trapped, the copy
            // from the previous exit may be one change behind. So read it now, once: the
            // after_exit re-read of this exit is then skipped. No read is needed where GD
            // traps every MOV DR (the copy is exact), nor where the guest's breakpoints are
            // carried in physical slots: then they are in the plan the hardware runs, and a
            // change not yet planned would not fire on hardware either.
            let caps = self.ctl.caps();
            if !caps.gd_trap
                && caps.guest_breakpoints_native
                && self.installed.hw_bp
                && !self.skip_resync
            {
                self.resync_guest(vcpu, self.installed.hw_bp)?;
                self.skip_resync = true;
            }
            if self
                .emulator
                .try_emulate(vcpu, regs, &self.guest, &self.plan)?
            {
                self.resumes.emulated += 1;
                return Ok(());
            }
        }
        self.resumes.stepped += 1;
        let mov_dr = match self.mov_dr_at.get(&pc) {
            Some(&known) => known,
            None => {
                let known = mov_dr::decode(&vcpu.fetch(pc)).is_some();
                self.mov_dr_at.insert(pc, known);
                known
            }
        };
        // Each owner on its own: a shared slot that splits mid-step stays disarmed in both of
        // its new places.
        let owners = slots.iter().flat_map(|&s| self.plan.owner_of(s).owners());
        match &mut self.step_over {
            // A breakpoint armed at this instruction while it was being stepped over (a client
            // added one at the same address) fired before the instruction ran. The step goes on
            // with its owner disarmed too: replacing the step would re-arm the owners already
            // served, which would fire again on the same execution, each in turn, for ever.
            Some(step) if step.rip == pc => {
                for owner in owners {
                    if !step.disarmed.contains(&owner) {
                        step.disarmed.push(owner);
                    }
                }
                step.rf |= regs.rflags & RFLAGS_RF != 0;
            }
            _ => {
                self.step_over = Some(StepOver {
                    rip: pc,
                    disarmed: owners.collect(),
                    mov_dr,
                    rf: regs.rflags & RFLAGS_RF != 0,
                })
            }
        }
        Ok(())
    }

    /// Delivers `dr6` (guest numbering) to the guest as a #DB: now, or before the next entry
    /// that finds KVM's event slot free.
    fn inject(&mut self, vcpu: &impl DebugVcpu, dr6: Dr6) -> Result<()> {
        let mut d = vcpu.debugregs()?;
        d.dr6 = dr6.bits();
        vcpu.set_debugregs(&d)?;
        self.guest.dr6 = dr6;
        self.deferred_db = !vcpu.inject_db()?;
        Ok(())
    }

    /// BD with the host's GD trap: the guest executed MOV DR, at linear address `pc` (the
    /// exit's: CS's base plus RIP, which differ in real mode). Emulate it against the guest's
    /// DR file and step past it, unless the guest's own GD wants the #DB (then attribution
    /// hands the guest its BD and the access is not performed, as on hardware). Returns whether
    /// it injected the guest's #DB.
    fn emulate_mov_dr(
        &mut self,
        vcpu: &impl DebugVcpu,
        pc: u64,
        regs: &mut kvm_regs,
        guest_dr6: Option<Dr6>,
    ) -> Result<MovDrDone> {
        if guest_dr6.is_some_and(|d| d.bd()) {
            // The processor clears GD when it delivers the BD #DB (SDM 17.2.4).
            self.guest.dr7 = self.guest.dr7.with_gd(false);
            let mut d = vcpu.debugregs()?;
            d.dr7 = self.guest.dr7.bits();
            d.dr6 = guest_dr6.map(Dr6::bits).unwrap_or(d.dr6);
            vcpu.set_debugregs(&d)?;
            self.ctl.guest_changed(self.index, self.guest);
            self.deferred_db = !vcpu.inject_db()?;
            return Ok(MovDrDone::Injected);
        }
        let bytes = vcpu.fetch(pc);
        let Some(insn) = mov_dr::decode(&bytes) else {
            return Ok(MovDrDone::Undecodable(bytes));
        };
        // The checks the CPU makes before the access (SDM Vol. 2B, MOV DR "Protected Mode
        // Exceptions"): DR4/DR5 under CR4.DE are #UD, reserved DR6/DR7 bits #GP(0). The fault
        // leaves RIP on the instruction, and the access does not happen.
        let checked = check_debug_extensions(insn.dr, vcpu.cr4()?).and_then(|()| {
            if insn.to_dr {
                self.guest.write(insn.dr, mov_dr::gpr(regs, insn.gpr))
            } else {
                self.guest
                    .read(insn.dr)
                    .map(|value| mov_dr::set_gpr(regs, insn.gpr, value))
            }
        });
        if let Err(fault) = checked {
            let error_code = (fault.vector() == 13).then_some(0);
            if !vcpu.inject_exception(fault.vector(), error_code)? {
                // KVM holds another event: leave RIP on the instruction; it traps again
                // once that event is delivered.
                tracing::debug!(vcpu = self.index, "MOV DR fault deferred: {fault}");
            }
            return Ok(MovDrDone::Injected);
        }
        if insn.to_dr {
            self.publish_guest_file(vcpu)?;
        }
        regs.rip += u64::from(insn.len);
        vcpu.set_regs(regs)?;
        if regs.rflags & RFLAGS_TF != 0 {
            // The guest single-steps: the instruction drvisor performed for it still owes it
            // the #DB with BS that the CPU raises after it (SDM 17.3.1.4).
            let dr6 = guest_dr6.unwrap_or(Dr6::INIT).with_bs(true);
            self.inject(vcpu, dr6)?;
            return Ok(MovDrDone::Injected);
        }
        Ok(MovDrDone::Performed)
    }
}

/// The guest's virtual slots that `now` arms for something `before` did not: newly enabled, or
/// enabled with a new address, kind or length. I/O breakpoints take no slot and are left out.
pub(crate) fn late_slots(before: &GuestDrFile, now: &GuestDrFile) -> Vec<Slot> {
    let fields = |f: &GuestDrFile, s: Slot| (f.dr[s.index()], f.dr7.rw(s), f.dr7.len(s));
    now.claimed_slots()
        .filter(|&s| now.dr7.rw(s) != DrKind::Io)
        .filter(|&s| !before.claimed_slots().any(|b| b == s) || fields(before, s) != fields(now, s))
        .collect()
}

/// The guest hits in `dr6` (guest numbering) whose physical slot in `plan` no longer matches
/// what `guest` arms in that virtual slot (disabled, or another address, kind or length): the
/// hardware fired on a placement the guest has since withdrawn. With their physical slots.
pub(crate) fn stale_guest_hits(
    plan: &VcpuPlan,
    guest: &GuestDrFile,
    dr6: Dr6,
) -> Vec<(Slot, Slot)> {
    dr6.hit_slots()
        .filter_map(|virt| plan.phys_of_guest(virt).map(|phys| (virt, phys)))
        .filter(|&(virt, phys)| {
            let placed = (plan.dr[phys.index()], plan.dr7.rw(phys), plan.dr7.len(phys));
            let armed = (
                guest.dr[virt.index()],
                guest.dr7.rw(virt),
                guest.dr7.len(virt),
            );
            !guest.dr7.enabled(virt) || placed != armed
        })
        .collect()
}
