//! A port of the scenarios of Linux's KVM selftest `tools/testing/selftests/kvm/x86/debug_regs.c`
//! to drvisor: real KVM tiny VMs, with every `KVM_EXIT_DEBUG` attributed by drvisor's model.
//! Each scenario runs end to end where this host delivers it; where it does not, it is listed
//! as ignored with the probe's reason, and its synthetic twin (named in the reason) runs the
//! same dispatch code on fabricated exits.

use std::sync::{Arc, Mutex};

use drvisor::debug::{
    DebugCaps, DebugController, DebugVcpu, HitContext, HostRequest, KvmDebugVcpu, VcpuDebug,
};
use drvisor::probe::tiny_vm::{Stop, TinyVm, CODE, DATA};
use drvisor::probe::Mechanism;
use drvisor_api::HitAction;
use drvisor_debug::{
    attribute, AttributionContext, BreakSpec, Dr6, GuestDrFile, HostBpId, HostBreakpoint, PhysSlot,
    Policy, Scope, VmmEvent, WatchAccess,
};
use kvm_bindings::{
    kvm_debugregs, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
};

use crate::common::{ensure, skipped, Context, Failed, Trial};

const NOPS: &[u8] = &[0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xf4];

fn kvm() -> kvm_ioctls::Kvm {
    kvm_ioctls::Kvm::new().expect("/dev/kvm")
}

/// debug_regs.c "hw_bp": an exec breakpoint in each of DR0-DR3 exits with that slot's Bn at
/// the instruction, and drvisor attributes it to the breakpoint planned in that slot.
fn exec_in_each_slot() -> Result<(), Failed> {
    let kvm = kvm();
    for slot in 0..4u64 {
        let at = CODE + 1 + slot;
        // Plan `slot + 1` host breakpoints: host slots fill from DR3 down, so the last one
        // lands in physical slot `3 - slot`... choose the count so ours lands in `slot`.
        let count = 4 - slot as u32;
        let hosts: Vec<HostBreakpoint> = (1..=count)
            .map(|id| HostBreakpoint {
                id: HostBpId(id),
                spec: BreakSpec::exec(if id == count {
                    at
                } else {
                    0x9000 + u64::from(id)
                })
                .unwrap(),
                scope: Scope::Vm,
            })
            .collect();
        let plan = drvisor_debug::plan(Policy::HostFirst, &hosts, &[GuestDrFile::default()]);
        let vp = &plan.vcpus[0];
        ensure(
            vp.slots[slot as usize] == PhysSlot::Host(HostBpId(count)),
            || format!("{vp:?}"),
        )?;
        let mut vm = TinyVm::new(&kvm, 0, false, NOPS)?;
        vm.guest_debug(
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
            vp.dr,
            vp.dr7.bits(),
        )?;
        let (stop, rip) = vm.run()?;
        let Stop::Debug { dr6 } = stop else {
            return Err(format!("slot {slot}: {stop:?}").into());
        };
        ensure(rip == at && dr6 & 0xf == 1 << slot, || {
            format!("slot {slot}: rip {rip:#x} dr6 {dr6:#x}")
        })?;
        let a = attribute(Dr6::from_bits(dr6), vp, AttributionContext::default());
        ensure(
            a.host_hits.len() == 1 && a.host_hits[0].id == HostBpId(count) && a.guest_dr6.is_none(),
            || format!("slot {slot}: {a}"),
        )?;
    }
    Ok(())
}

/// debug_regs.c "single step": each step exits with BS at the next instruction, and drvisor
/// attributes BS to itself while it is stepping.
fn single_step_sequence() -> Result<(), Failed> {
    // mov eax,1 (5); inc eax (2); nop (1); xor ebx,ebx (2); hlt
    let code = [0xb8, 1, 0, 0, 0, 0xff, 0xc0, 0x90, 0x31, 0xdb, 0xf4];
    let expected = [CODE + 5, CODE + 7, CODE + 8, CODE + 10];
    let mut vm = TinyVm::new(&kvm(), 0, false, &code)?;
    vm.guest_debug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, [0; 4], 0)?;
    let empty = drvisor_debug::VcpuPlan::empty(drvisor_debug::VcpuId(0));
    let stepping = AttributionContext {
        host_single_step: true,
        ..Default::default()
    };
    for want in expected {
        let (stop, rip) = vm.run()?;
        let Stop::Debug { dr6 } = stop else {
            return Err(format!("{stop:?} at {rip:#x}").into());
        };
        ensure(rip == want && Dr6::from_bits(dr6).bs(), || {
            format!("rip {rip:#x} dr6 {dr6:#x}, wanted {want:#x}")
        })?;
        let a = attribute(Dr6::from_bits(dr6), &empty, stepping);
        ensure(
            a.vmm_events == [VmmEvent::SingleStep] && a.guest_dr6.is_none(),
            || a.to_string(),
        )?;
    }
    Ok(())
}

/// Re-injection of a guest-owned #DB: drvisor's `inject_db` makes the guest's own #DB handler
/// run, with the DR6 drvisor set in the guest's view.
fn injected_db_reaches_the_guest() -> Result<(), Failed> {
    let mut vm = TinyVm::new(&kvm(), 0, false, NOPS)?;
    vm.install_reporting_idt()?;
    let want_dr6 = 0xffff_0ff0 | 1 << 2;
    {
        let (vcpu, mem) = vm.vcpu_and_mem();
        let seam = KvmDebugVcpu::new(vcpu, mem, false, None);
        seam.set_debugregs(&kvm_debugregs {
            dr6: want_dr6,
            dr7: 0x400,
            ..Default::default()
        })?;
        seam.inject_db()?;
    }
    let (stop, _) = vm.run()?;
    ensure(
        stop == Stop::IoOut {
            port: 0x10,
            value: 1,
        },
        || format!("{stop:?}: the guest's #DB handler did not run"),
    )?;
    let dr6 = vm.vcpu.get_debug_regs()?.dr6;
    ensure(dr6 == want_dr6, || format!("guest DR6 {dr6:#x}"))
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let mut trials = vec![
        Trial::test("debug_regs_port::exec_in_each_slot", exec_in_each_slot),
        Trial::test(
            "debug_regs_port::injected_db_reaches_the_guest",
            injected_db_reaches_the_guest,
        ),
        Trial::test(
            "debug_regs_port::driven_exec_breakpoint",
            driven_exec_breakpoint,
        ),
    ];
    let step = "debug_regs_port::single_step_sequence";
    trials.push(if ctx.probe.delivers(Mechanism::SingleStep, 0) {
        Trial::test(step, single_step_sequence)
    } else {
        skipped(
            step,
            &ctx.probe
                .why_not(Mechanism::SingleStep, 0)
                .unwrap_or_default(),
        )
    });
    for (name, mechanism, twin) in [
        (
            "debug_regs_port::write_watch_in_each_slot",
            Mechanism::HostWriteWatchpoint,
            "debug::dispatch_tests::write_watch_in_every_slot",
        ),
        (
            "debug_regs_port::gd_traps_mov_dr",
            Mechanism::GdTrapsMovDr,
            "debug::dispatch_tests::mov_to_dr7_is_emulated_where_gd_traps and guest_gd_gets_its_own_bd_*",
        ),
    ] {
        if ctx.probe.delivers(mechanism, 0) {
            let test: fn() -> Result<(), Failed> = match mechanism {
                Mechanism::HostWriteWatchpoint => write_watch_in_each_slot,
                _ => gd_traps_mov_dr,
            };
            trials.push(Trial::test(name, test));
        } else {
            let why = ctx.probe.why_not(mechanism, 0).unwrap_or_default();
            trials.push(skipped(name, &format!("{why}; runs synthetically in {twin}")));
        }
    }
    trials
}

/// A tiny VM driven by drvisor's own per-vCPU debug code, with the probe's capabilities.
struct Driven {
    vm: TinyVm,
    vcpu: VcpuDebug,
    ctl: Arc<DebugController>,
    hits: Arc<Mutex<Vec<HitContext>>>,
}

impl Driven {
    fn new(code: &[u8]) -> Result<Driven, Failed> {
        let kvm = kvm();
        let caps = DebugCaps::from_probe(&drvisor::probe::run_for_routing(&kvm)?);
        let ctl = Arc::new(DebugController::standalone(caps, Policy::HostFirst, 1)?);
        Ok(Driven {
            vm: TinyVm::new(&kvm, 0, false, code)?,
            vcpu: VcpuDebug::new(0, ctl.clone()),
            ctl,
            hits: Arc::default(),
        })
    }

    fn add(&self, spec: BreakSpec) -> Result<HostBpId, Failed> {
        let hits = self.hits.clone();
        Ok(self.ctl.add(HostRequest {
            spec,
            scope: Scope::Vm,
            label: format!("{:#x}", spec.addr()),
            on_hit: Arc::new(move |h: &HitContext| {
                hits.lock().unwrap().push(h.clone());
                HitAction::Continue
            }),
        })?)
    }

    /// Enters the guest until something other than a #DB exit; dispatches every #DB.
    fn run(&mut self) -> Result<Stop, Failed> {
        loop {
            let (vcpu, mem) = self.vm.vcpu_and_mem();
            let seam = KvmDebugVcpu::new(vcpu, mem, false, None);
            self.vcpu.before_entry(&seam)?;
            let (stop, pc) = self.vm.run_raw()?;
            let Stop::Debug { dr6 } = stop else {
                return Ok(stop);
            };
            let (vcpu, mem) = self.vm.vcpu_and_mem();
            let seam = KvmDebugVcpu::new(vcpu, mem, false, None);
            self.vcpu.on_debug_exit(dr6, pc, &seam)?;
        }
    }
}

/// The same driven harness with what every host delivers: an exec breakpoint hit once and
/// resumed past (RF or step-over, as the probe says), then the guest runs to its HLT.
fn driven_exec_breakpoint() -> Result<(), Failed> {
    let mut d = Driven::new(NOPS)?;
    let id = d.add(BreakSpec::exec(CODE + 2)?)?;
    let stop = d.run()?;
    let hits = d.hits.lock().unwrap().clone();
    ensure(
        stop == Stop::Hlt && hits.len() == 1 && hits[0].id == id && hits[0].rip == CODE + 2,
        || format!("{stop:?} {hits:?}"),
    )
}

/// debug_regs.c "hw_wp": a 4-byte write watch in each slot reports the write once, after it.
fn write_watch_in_each_slot() -> Result<(), Failed> {
    // mov eax, 0x42; mov [DATA], eax; nop; hlt
    let code = [
        0xb8, 0x42, 0, 0, 0, 0x89, 0x04, 0x25, 0, 0, 0x20, 0, 0x90, 0xf4,
    ];
    for slot in 0..4u8 {
        let mut d = Driven::new(&code)?;
        // Fillers take the slots above `slot` (host slots fill from DR3 down).
        for i in 0..(3 - slot) {
            d.add(BreakSpec::exec(0x9000 + u64::from(i))?)?;
        }
        let id = d.add(BreakSpec::watch(DATA, WatchAccess::Write, 4)?)?;
        let stop = d.run()?;
        ensure(stop == Stop::Hlt, || format!("{stop:?}"))?;
        let hits = d.hits.lock().unwrap().clone();
        ensure(
            hits.len() == 1
                && hits[0].id == id
                && hits[0].slot == Some(slot)
                && hits[0].rip == CODE + 12,
            || format!("slot {slot}: {hits:?}"),
        )?;
    }
    Ok(())
}

/// debug_regs.c "bd": with GD trapping, a guest `mov rax, dr0` exits with BD and drvisor
/// emulates it from the guest's own DR file.
fn gd_traps_mov_dr() -> Result<(), Failed> {
    let mut d = Driven::new(&[0x0f, 0x21, 0xc0, 0xf4])?; // mov rax, dr0; hlt
    d.vm.vcpu.set_debug_regs(&kvm_debugregs {
        db: [0x1234, 0, 0, 0],
        dr6: 0xffff_0ff0,
        dr7: 0x400,
        ..Default::default()
    })?;
    d.add(BreakSpec::exec(0x9000)?)?; // turns host debugging (and the GD trap) on
    let stop = d.run()?;
    let regs = d.vm.vcpu.get_regs()?;
    ensure(stop == Stop::Hlt && regs.rax == 0x1234, || {
        format!("{stop:?} rax={:#x}", regs.rax)
    })
}
