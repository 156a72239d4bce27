//! Debug-register virtualization costs (issue 3), against the baseline of the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drvisor::debug::{
    always, seam_ioctls, DebugCaps, DebugController, DebugVcpu, GuestDebug, HostRequest,
    KvmDebugVcpu, KvmError, VcpuDebug,
};
use drvisor::probe::tiny_vm::{Stop, TinyVm, CODE};
use drvisor::symbols::SymbolTable;
use drvisor::{guest_image, Outcome, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_debug::{
    plan_for, BreakSpec, DrKind, DrLen, GuestCarriage, GuestDrFile, HostBpId, HostBreakpoint,
    Policy, Scope, Slot, VcpuId,
};
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};

use crate::baseline::{loop_of, Baseline, BODY_OFFSET, EXITS};
use crate::measure::{median_of, paired_ratio, ratio, time, us};

/// How a host exec breakpoint is resumed past in a round-trip measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ResumePath {
    /// The instruction emulated by drvisor (a 2-byte NOP body, registers synced).
    Emulated,
    /// The same, as on a host where a guest MOV DR is trapped (GD): the guest's DR file is
    /// exact, so no `KVM_GET_DEBUGREGS` at the hit. This host ignores the GD bit drvisor then
    /// sets, which only makes the figure a floor.
    EmulatedGdTrap,
    /// A step-over (`inc %eax` body, which drvisor does not emulate).
    SteppedOver,
    /// RF through the sync-regs dirty bits (only where the host honours RF).
    Rf,
}

/// One path's figures.
struct RoundTrip {
    per_hit: Duration,
    ioctls_per_hit: f64,
    resumes: drvisor::debug::ResumeCounts,
}

/// A host exec breakpoint on the loop body: exit, dispatch, callback, resume, per hit.
fn breakpoint_round_trip(kvm: &Kvm, caps: DebugCaps, path: ResumePath) -> RoundTrip {
    let hits = EXITS / 4;
    let body = match path {
        ResumePath::Emulated | ResumePath::EmulatedGdTrap | ResumePath::Rf => [0x66, 0x90], // a 2-byte NOP
        ResumePath::SteppedOver => [0xff, 0xc0], // inc %eax
    };
    let caps = DebugCaps {
        rf_resumes: path == ResumePath::Rf,
        gd_trap: caps.gd_trap || path == ResumePath::EmulatedGdTrap,
        ..caps
    };
    let mut vm = TinyVm::new(kvm, 0, false, &loop_of(body, hits)).expect("VM");
    // As drvisor's own vCPUs do where KVM offers it: registers, system registers and events
    // arrive with the exit.
    let sync = kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs) & 7 == 7;
    if sync {
        vm.vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
        vm.vcpu
            .set_sync_valid_reg(kvm_ioctls::SyncReg::SystemRegister);
        vm.vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::VcpuEvents);
    }
    // Page tables with Accessed and Dirty set, as in a guest that has run a while (the tiny
    // VM's tables start without them, and the emulator leaves tables it would change to KVM).
    for (entry, bits) in [(0x9000u64, 0x20u64), (0xa000, 0x20), (0xb000, 0x60)] {
        let v: u64 = vm.mem().read_obj(GuestAddress(entry)).expect("pml");
        vm.mem()
            .write_obj(v | bits, GuestAddress(entry))
            .expect("pml");
    }
    let ctl = Arc::new(DebugController::standalone(caps, Policy::HostFirst, 1).expect("evt"));
    ctl.add(HostRequest {
        spec: BreakSpec::exec(CODE + BODY_OFFSET).expect("spec"),
        scope: Scope::Vm,
        label: "loop".into(),
        on_hit: always(HitAction::Continue),
    })
    .expect("add");
    let mut dbg = VcpuDebug::new(0, ctl.clone());
    let (vcpu, mem) = vm.vcpu_and_mem();
    dbg.before_entry(&KvmDebugVcpu::new(vcpu, mem, sync, None))
        .expect("install");
    let ioctls_before = seam_ioctls();
    let t = time(|| loop {
        let (vcpu, mem) = vm.vcpu_and_mem();
        dbg.before_entry(&KvmDebugVcpu::new(vcpu, mem, sync, None))
            .expect("install");
        match vm.run_raw().expect("run") {
            (Stop::Debug { dr6 }, pc) => {
                let (vcpu, mem) = vm.vcpu_and_mem();
                let seam = KvmDebugVcpu::new(vcpu, mem, sync, None);
                dbg.on_debug_exit(dr6, pc, &seam).expect("dispatch");
                dbg.after_exit(&seam).expect("resync");
            }
            (Stop::Hlt, _) => break,
            other => panic!("{other:?}"),
        }
    });
    let ioctls = seam_ioctls() - ioctls_before;
    assert_eq!(ctl.hits(HostBpId(1)), Some(u64::from(hits)));
    RoundTrip {
        per_hit: t / hits,
        ioctls_per_hit: ioctls as f64 / f64::from(hits),
        resumes: dbg.resumes(),
    }
}

/// The VMM's own work per host hit, with KVM taken away: attribution, the callback, and the
/// RF decision, on a vCPU that answers every ioctl at once (an RF host's path).
fn dispatch_cpu_cost() -> Duration {
    struct Instant0;
    impl DebugVcpu for Instant0 {
        fn regs(&self) -> Result<kvm_bindings::kvm_regs, KvmError> {
            Ok(kvm_bindings::kvm_regs {
                rip: 0x1000,
                rflags: 2,
                ..Default::default()
            })
        }
        fn set_regs(&self, _: &kvm_bindings::kvm_regs) -> Result<(), KvmError> {
            Ok(())
        }
        fn debugregs(&self) -> Result<kvm_bindings::kvm_debugregs, KvmError> {
            Ok(kvm_bindings::kvm_debugregs {
                dr6: 0xffff_0ff0,
                dr7: 0x400,
                ..Default::default()
            })
        }
        fn set_debugregs(&self, _: &kvm_bindings::kvm_debugregs) -> Result<(), KvmError> {
            Ok(())
        }
        fn set_guest_debug(&self, _: &GuestDebug) -> Result<(), KvmError> {
            Ok(())
        }
        fn inject_exception(&self, _: u8, _: Option<u32>) -> Result<bool, KvmError> {
            Ok(true)
        }
        fn cr4(&self) -> Result<u64, KvmError> {
            Ok(0)
        }
        fn fetch(&self, _: u64) -> Vec<u8> {
            Vec::new()
        }
    }
    let ctl = Arc::new(
        DebugController::standalone(DebugCaps::vmx_like(), Policy::HostFirst, 1).expect("evt"),
    );
    ctl.add(HostRequest {
        spec: BreakSpec::exec(0x1000).expect("spec"),
        scope: Scope::Vm,
        label: "x".into(),
        on_hit: always(HitAction::Continue),
    })
    .expect("add");
    let mut dbg = VcpuDebug::new(0, ctl);
    dbg.before_entry(&Instant0).expect("install");
    const N: u32 = 100_000;
    time(|| {
        for _ in 0..N {
            dbg.on_debug_exit(0xffff_0ff8, 0x1000, &Instant0)
                .expect("dispatch");
            dbg.before_entry(&Instant0).expect("entry");
        }
    }) / N
}

/// The `exec` scenario of the test guest, attached (nothing armed) or detached.
fn guest_workload(attached: bool) -> Duration {
    let mut config = VmConfig::new(guest_image::kernel(), "scenario=exec count=3000 ncpus=1");
    config.debug_attached = attached;
    let vm = Vm::try_from(config).expect("VM");
    time(|| {
        let outcome = vm.run().expect("run");
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
    })
}

/// How long `add` takes to reach every running vCPU (kick, install, acknowledge), and `remove`.
fn change_latency(vcpus: usize) -> Duration {
    let target = SymbolTable::from_elf(guest_image::ELF)
        .resolve("drv_watch_u8")
        .expect("symbol");
    let mut config = VmConfig::new(
        guest_image::kernel(),
        format!("scenario=smp ncpus={vcpus} count=100000000"),
    );
    config.vcpus = vcpus;
    let vm = Vm::try_from(config).expect("VM");
    let ctl = vm.debug().clone();
    let control = vm.run_control().clone();
    let runner = std::thread::spawn(move || vm.run());
    std::thread::sleep(Duration::from_millis(100));
    // An exec breakpoint on a data symbol: armed on every vCPU, never hit.
    let latency = median_of(21, || {
        let start = Instant::now();
        let id = ctl
            .add(HostRequest {
                spec: BreakSpec::exec(target).expect("spec"),
                scope: Scope::Vm,
                label: "probe".into(),
                on_hit: always(HitAction::Continue),
            })
            .expect("add");
        let t = start.elapsed();
        ctl.remove(id).expect("remove");
        t
    });
    control.finish(Outcome::Requested);
    let _ = runner.join();
    latency
}

/// `plan_for` with three VM-wide host breakpoints, one per vCPU, and guests using 0-3 slots.
fn replan_cost(vcpus: usize, carriage: GuestCarriage) -> Duration {
    let mut hosts: Vec<HostBreakpoint> = (0..3u32)
        .map(|i| HostBreakpoint {
            id: HostBpId(i + 1),
            spec: BreakSpec::exec(0x1000 * u64::from(i + 1)).expect("spec"),
            scope: Scope::Vm,
        })
        .collect();
    hosts.extend((0..vcpus as u32).map(|v| HostBreakpoint {
        id: HostBpId(100 + v),
        spec: BreakSpec::exec(0x9000 + u64::from(v)).expect("spec"),
        scope: Scope::Vcpu(VcpuId(v)),
    }));
    let guests: Vec<GuestDrFile> = (0..vcpus)
        .map(|v| {
            let mut file = GuestDrFile::default();
            for slot in Slot::ALL.into_iter().take(v % 4) {
                file.dr7 = file
                    .dr7
                    .with_local(slot, true)
                    .with_rw(slot, DrKind::Exec)
                    .with_len(slot, DrLen::One);
                file.dr[slot.index()] = 0x5000 + slot.index() as u64;
            }
            file
        })
        .collect();
    const N: u32 = 20_000;
    time(|| {
        for _ in 0..N {
            std::hint::black_box(plan_for(carriage, Policy::HostFirst, &hosts, &guests));
        }
    }) / N
}

/// Measures and prints the debug costs.
pub fn run(kvm: &Kvm, base: &Baseline) {
    let probed = DebugCaps::from_probe(&drvisor::probe::run_for_routing(kvm).expect("probe"));
    println!("host exec breakpoint hit round trip (exit, dispatch, callback, resume), per path");
    let mut paths = vec![
        (
            ResumePath::Emulated,
            "emulated (2-byte NOP)      ",
            "<= 1.25",
        ),
        (
            ResumePath::SteppedOver,
            "step-over (inc %eax)       ",
            "<= 2.2",
        ),
        (
            ResumePath::EmulatedGdTrap,
            "emulated, MOV DR trapped   ",
            "<= 1.25",
        ),
    ];
    if probed.rf_resumes {
        paths.push((ResumePath::Rf, "RF through sync regs       ", "<= 1.25"));
    } else {
        println!("  RF through sync regs: not on this host (the probe found RF ignored)");
    }
    for (path, name, target) in paths {
        let mut last = None;
        let (r, t) = paired_ratio(
            5,
            || crate::baseline::io_exit(kvm),
            || {
                let rt = breakpoint_round_trip(kvm, probed, path);
                let t = rt.per_hit;
                last = Some(rt);
                t
            },
        );
        let Some(rt) = last else { continue };
        println!(
            "  {name} {:>7.2} us = {r:>5.2} bare IO exits (target {target}), {:.2} ioctls/hit, resumes {:?}",
            us(t),
            rt.ioctls_per_hit,
            rt.resumes
        );
    }
    let cpu = dispatch_cpu_cost();
    println!(
        "  VMM work per hit without KVM (RF path)            {:>8.3} us = {:.3} bare io exits",
        us(cpu),
        ratio(cpu, base.io_exit)
    );

    let _warm = guest_workload(true);
    let mut attached = Vec::new();
    let mut detached = Vec::new();
    for _ in 0..7 {
        attached.push(guest_workload(true));
        detached.push(guest_workload(false));
    }
    attached.sort();
    detached.sort();
    let (a, d) = (attached[3], detached[3]);
    println!("guest workload (`exec` scenario, count=3000), nothing armed");
    println!(
        "  attached {:>10.1} us, detached {:>10.1} us, ratio {:>6.3}   (target <= 1.02)",
        us(a),
        us(d),
        ratio(a, d)
    );

    println!("apply a host change to every running vCPU (add returns when all run the new plan)");
    for vcpus in [1, 2, 4] {
        let latency = change_latency(vcpus);
        println!(
            "  {vcpus} vCPU(s) {:>10.1} us   ({:>6.1} bare io exits)",
            us(latency),
            ratio(latency, base.io_exit)
        );
    }

    println!(
        "arbiter re-plan (pure, 3 VM-wide + 1 per-vCPU host breakpoints, guests using 0-3 slots)"
    );
    for vcpus in [1, 4, 16] {
        let physical = replan_cost(vcpus, GuestCarriage::Physical);
        let native = replan_cost(vcpus, GuestCarriage::Native);
        println!(
            "  {vcpus:>2} vCPU(s): physical carriage {:>8.0} ns, native carriage {:>8.0} ns",
            physical.as_secs_f64() * 1e9,
            native.as_secs_f64() * 1e9
        );
    }
}
