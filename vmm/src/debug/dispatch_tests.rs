//! The real dispatch code, driven by synthetic `KVM_EXIT_DEBUG` exits through [`FakeVcpu`].
//! These pin the behaviour this host cannot show: data watchpoints in every slot, RF resume,
//! GD/BD emulation, guest slots carried in physical slots, and the step-over sequence.

use std::sync::{Arc, Mutex};

use drvisor_api::BreakKind;
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Dr6, HostBpId, Policy, Scope, WatchAccess};

use super::fake_vcpu::FakeVcpu;
use super::{
    always, DebugCaps, DebugController, HitContext, HostRequest, OnHit, VcpuDebug, Verdict,
};

const RF: u64 = 1 << 16;
const DR6_INIT: u64 = 0xffff_0ff0;
const BS: u64 = 1 << 14;
const BD: u64 = 1 << 13;

/// This project's development hosts, as the probe sees them.
const THIS_HOST: DebugCaps = DebugCaps::pvm_like();

struct Rig {
    ctl: Arc<DebugController>,
    vcpu: VcpuDebug,
    fake: FakeVcpu,
    hits: Arc<Mutex<Vec<HitContext>>>,
}

impl Rig {
    fn new(caps: DebugCaps, policy: Policy) -> Rig {
        let ctl = Arc::new(DebugController::standalone(caps, policy, 1).unwrap());
        let fake = FakeVcpu::default();
        {
            let mut s = fake.0.borrow_mut();
            s.debugregs.dr6 = DR6_INIT;
            s.debugregs.dr7 = 0x400;
            s.regs.rflags = 2;
        }
        Rig {
            vcpu: VcpuDebug::new(0, ctl.clone()),
            ctl,
            fake,
            hits: Arc::default(),
        }
    }

    fn recorder(&self, action: HitAction) -> OnHit {
        let hits = self.hits.clone();
        Arc::new(move |h: &HitContext| {
            hits.lock().unwrap().push(h.clone());
            action
        })
    }

    fn add(&mut self, spec: BreakSpec, action: HitAction) -> HostBpId {
        let on_hit = self.recorder(action);
        let id = self
            .ctl
            .add(HostRequest {
                spec,
                scope: Scope::Vm,
                label: format!("{:#x}", spec.addr()),
                on_hit,
            })
            .unwrap();
        self.vcpu.before_entry(&self.fake).unwrap();
        id
    }

    /// A rig under `GuestFirst` whose guest arms all four slots, and a host exec breakpoint at
    /// 0x1000 that they leave without a slot (checked).
    fn host_evicted_by_four_guest_slots(caps: DebugCaps) -> (Rig, HostBpId) {
        let mut rig = Rig::new(caps, Policy::GuestFirst);
        rig.guest_programs([0x5000, 0x6000, 0x7000, 0x8000], 0x400 | 0x55);
        rig.vcpu.before_entry(&rig.fake).unwrap();
        let host = rig.add(exec(0x1000), HitAction::Continue);
        assert_eq!(rig.ctl.plan().vcpus[0].phys_of_host(host), None, "{caps:?}");
        (rig, host)
    }

    /// The guest programs its own DRs (as KVM_GET_DEBUGREGS would then report).
    fn guest_programs(&mut self, dr: [u64; 4], dr7: u64) {
        let mut s = self.fake.0.borrow_mut();
        s.debugregs.db = dr;
        s.debugregs.dr7 = dr7;
    }

    fn exit(&mut self, dr6: u64, rip: u64) -> Verdict {
        self.at(rip);
        let v = self.vcpu.on_debug_exit(dr6, rip, &self.fake).unwrap();
        self.vcpu.after_exit(&self.fake).unwrap();
        self.vcpu.before_entry(&self.fake).unwrap();
        v
    }

    /// Moves the fake to `rip`; like hardware, RF clears once an instruction completes.
    fn at(&self, rip: u64) {
        let mut s = self.fake.0.borrow_mut();
        if s.regs.rip != rip {
            s.regs.rflags &= !RF;
        }
        s.regs.rip = rip;
    }

    fn hit_ids(&self) -> Vec<(u32, u8, BreakKind)> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .map(|h| (h.id.0, h.slot.unwrap_or(99), h.kind))
            .collect()
    }
}

fn exec(addr: u64) -> BreakSpec {
    BreakSpec::exec(addr).unwrap()
}

#[test]
fn nothing_armed_runs_with_guest_debug_off() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.vcpu.before_entry(&rig.fake).unwrap();
    assert!(
        rig.fake.0.borrow().guest_debug.is_empty(),
        "no ioctl at all"
    );
    let id = rig.add(exec(0x1000), HitAction::Continue);
    assert!(rig.fake.installed().hw_bp);
    rig.ctl.remove(id).unwrap();
    rig.vcpu.before_entry(&rig.fake).unwrap();
    assert!(!rig.fake.installed().is_on(), "lazy switch back to off");
}

#[test]
fn exec_hit_with_rf_sets_rf_and_resumes() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    let id = rig.add(exec(0x1000), HitAction::Continue);
    assert_eq!(rig.exit(DR6_INIT | 1 << 3, 0x1000), Verdict::Resume);
    assert_eq!(rig.hit_ids(), vec![(id.0, 3, BreakKind::Exec)]);
    assert_ne!(
        rig.fake.0.borrow().regs.rflags & RF,
        0,
        "RF set to resume past the fault"
    );
    assert!(
        !rig.fake.installed().single_step,
        "no step-over where RF works"
    );
}

#[test]
fn exec_hit_without_rf_steps_over_then_rearms() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.exit(DR6_INIT | 1 << 3, 0x1000);
    let stepping = rig.fake.installed();
    assert!(stepping.single_step);
    assert_eq!(stepping.dr7 & 0xc0, 0, "slot 3 disarmed during the step");
    assert_eq!(rig.fake.0.borrow().regs.rflags & RF, 0, "RF not relied on");
    // A step exit before the instruction retired changes nothing.
    rig.exit(DR6_INIT | BS, 0x1000);
    assert!(
        rig.fake.installed().single_step,
        "still stepping: RIP has not moved"
    );
    // The single-step exit: the VMM's own, not reported to anyone.
    rig.exit(DR6_INIT | BS, 0x1003);
    let rearmed = rig.fake.installed();
    assert!(!rearmed.single_step);
    assert_ne!(rearmed.dr7 & 0x40, 0, "slot 3 re-armed");
    assert_eq!(rig.hits.lock().unwrap().len(), 1);
    assert!(
        rig.fake.0.borrow().injected.is_empty(),
        "BS was the VMM's, not the guest's"
    );
}

#[test]
fn re_execution_with_rf_is_not_a_new_hit() {
    // The guest's own #DB handler (for its own breakpoint on the same instruction) returned to
    // the instruction with RF=1.
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.guest_programs([0x1000, 0, 0, 0], 0x401);
    rig.at(0x1000);
    rig.fake.0.borrow_mut().regs.rflags = 2 | RF;
    rig.exit(DR6_INIT | 1 << 3, 0x1000);
    assert!(
        rig.hits.lock().unwrap().is_empty(),
        "the host is not told twice"
    );
    assert!(
        rig.fake.installed().single_step,
        "but the instruction is still stepped over"
    );
    assert!(rig.fake.0.borrow().injected.is_empty(), "nor is the guest");
}

#[test]
fn rf_left_over_from_the_instruction_before_is_a_new_hit() {
    // This project's hosts leave RF set for one more instruction after the guest's iretq: a
    // host breakpoint right after a guest breakpoint exits with RF=1. The guest has no
    // breakpoint here, so this is not a re-execution: hardware would have cleared RF.
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x1004), HitAction::Continue);
    rig.guest_programs([0x1000, 0, 0, 0], 0x401);
    rig.at(0x1004);
    rig.fake.0.borrow_mut().regs.rflags = 2 | RF;
    rig.exit(DR6_INIT | 1 << 3, 0x1004);
    assert_eq!(
        rig.hits.lock().unwrap().len(),
        1,
        "the host's hit is reported"
    );
    assert!(rig.fake.installed().single_step, "and stepped over");
}

#[test]
fn write_watch_in_every_slot() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    let ids: Vec<HostBpId> = (0..4u64)
        .map(|i| {
            rig.add(
                BreakSpec::watch(0x2000 + 8 * i, WatchAccess::Write, 4).unwrap(),
                HitAction::Continue,
            )
        })
        .collect();
    // Host breakpoints fill from DR3 down: id 1 in DR3 ... id 4 in DR0.
    for (n, id) in ids.iter().enumerate() {
        let slot = 3 - n as u8;
        rig.exit(DR6_INIT | 1 << slot, 0x1234);
        assert_eq!(rig.hit_ids().last(), Some(&(id.0, slot, BreakKind::Write)));
    }
    assert_eq!(
        rig.fake.0.borrow().regs.rflags & RF,
        0,
        "data breakpoints are traps"
    );
    assert!(!rig.fake.installed().single_step);
}

#[test]
fn several_hits_at_once_are_all_dispatched() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    let a = rig.add(
        BreakSpec::watch(0x2000, WatchAccess::ReadWrite, 8).unwrap(),
        HitAction::Continue,
    );
    let b = rig.add(
        BreakSpec::watch(0x3000, WatchAccess::Write, 2).unwrap(),
        HitAction::Continue,
    );
    rig.exit(DR6_INIT | 0b1100 | BS, 0x1234);
    assert_eq!(
        rig.hit_ids(),
        vec![(b.0, 2, BreakKind::Write), (a.0, 3, BreakKind::ReadWrite)]
    );
    // BS was not the VMM's (it was not stepping): it goes to the guest.
    assert_eq!(rig.fake.0.borrow().injected, vec![DR6_INIT | BS]);
}

#[test]
fn guest_slot_in_a_physical_slot_is_reinjected_in_guest_numbering() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    // The guest enables only its DR1: first fit from the bottom puts it in physical DR0.
    rig.guest_programs([0, 0x5000, 0, 0], 0x400 | 1 << 2);
    let host = rig.add(exec(0x1000), HitAction::Continue);
    let plan = rig.ctl.plan();
    assert_eq!(plan.vcpus[0].virt_to_phys[1].map(|s| s.number()), Some(0));
    assert_eq!(rig.fake.installed().dr[0], 0x5000);
    rig.exit(DR6_INIT | 1 << 0, 0x5000);
    assert_eq!(
        rig.fake.0.borrow().injected,
        vec![DR6_INIT | 1 << 1],
        "guest sees B1"
    );
    assert!(rig.hits.lock().unwrap().is_empty());
    // Host and guest together in one exit.
    rig.exit(DR6_INIT | 1 << 0 | 1 << 3, 0x5000);
    assert_eq!(rig.hit_ids(), vec![(host.0, 3, BreakKind::Exec)]);
    assert_eq!(rig.fake.0.borrow().injected.len(), 2);
}

#[test]
fn unowned_bits_go_back_to_the_guest() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.exit(DR6_INIT | 1 << 1, 0x1000);
    assert_eq!(rig.fake.0.borrow().injected, vec![DR6_INIT | 1 << 1]);
    assert!(rig.hits.lock().unwrap().is_empty());
}

#[test]
fn conflict_outcome_under_each_policy_with_physical_carriage() {
    // The guest uses all four DRs; the host wants two.
    for (policy, host_armed, guest_armed) in [(Policy::HostFirst, 2, 2), (Policy::GuestFirst, 0, 4)]
    {
        let mut rig = Rig::new(DebugCaps::vmx_like(), policy);
        rig.guest_programs([0x10, 0x20, 0x30, 0x40], 0x400 | 0x55);
        rig.vcpu.before_entry(&rig.fake).unwrap();
        let a = rig.add(exec(0x1000), HitAction::Continue);
        let b = rig.add(exec(0x2000), HitAction::Continue);
        let plan = rig.ctl.plan();
        let armed = [a, b]
            .iter()
            .filter(|id| !plan.host_states[id].armed.is_empty())
            .count();
        assert_eq!(armed, host_armed, "{policy}");
        let guests = plan.guest_states[0]
            .iter()
            .filter(|s| matches!(s, drvisor_debug::GuestSlotState::Armed { .. }))
            .count();
        assert_eq!(guests, guest_armed, "{policy}");
        // Every physical bit reaches its owner: hosts where armed, the guest's in its numbering.
        rig.exit(DR6_INIT | 0xf, 0x3000);
        assert_eq!(rig.hits.lock().unwrap().len(), host_armed, "{policy}");
        let injected = rig.fake.0.borrow().injected.clone();
        assert_eq!(
            Dr6::from_bits(injected[0]).hit_slots().count(),
            guest_armed,
            "{policy}"
        );
    }
}

#[test]
fn deny_refuses_a_registration_that_would_starve_the_guest() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::Deny);
    rig.guest_programs([0x10, 0x20, 0x30, 0], 0x400 | 0x15);
    let _ = rig.add(exec(0x1000), HitAction::Continue); // three guest slots + one host: fits
    let refused = rig.ctl.add(HostRequest {
        spec: exec(0x2000),
        scope: Scope::Vm,
        label: "x".into(),
        on_hit: always(HitAction::Continue),
    });
    assert!(
        matches!(refused, Err(super::Error::Arbiter(_))),
        "{refused:?}"
    );
}

#[test]
fn mov_to_dr7_is_emulated_where_gd_traps() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    assert_ne!(rig.fake.installed().dr7 & BD, 0, "GD set in the host DR7");
    {
        let mut s = rig.fake.0.borrow_mut();
        s.code.insert(0x4000, vec![0x0f, 0x23, 0xf9]); // mov dr7, rcx
        s.regs.rcx = 0x400 | 1; // L0, exec
    }
    rig.exit(DR6_INIT | BD, 0x4000);
    let s = rig.fake.0.borrow();
    assert_eq!(
        s.debugregs.dr7, 0x401,
        "the guest's DR7 now holds what it wrote"
    );
    assert_eq!(s.regs.rip, 0x4003, "stepped past the MOV");
    assert!(s.injected.is_empty());
    drop(s);
    let plan = rig.ctl.plan();
    assert!(matches!(
        plan.guest_states[0][0],
        drvisor_debug::GuestSlotState::Armed { .. }
    ));
}

/// Real-mode code, as at an S3 waking vector entered at 0300:0000: the exit's pc is the
/// linear address (CS's base plus IP), RIP only the IP, and the MOV is fetched at the first.
#[test]
fn mov_dr_in_real_mode_is_fetched_at_its_linear_address() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.guest_programs([0; 4], 0x400);
    rig.add(exec(0x3000), HitAction::Continue);
    {
        let mut s = rig.fake.0.borrow_mut();
        s.code.insert(0x3018, vec![0x66, 0x0f, 0x21, 0xf8]); // mov eax, dr7 (16-bit code)
        s.regs.rip = 0x18;
        s.regs.rax = 0xdead;
    }
    let verdict = rig
        .vcpu
        .on_debug_exit(DR6_INIT | BD, 0x3018, &rig.fake)
        .unwrap();
    rig.vcpu.after_exit(&rig.fake).unwrap();
    assert_eq!(verdict, Verdict::Resume);
    let s = rig.fake.0.borrow();
    assert_eq!(s.regs.rax, 0x400, "EAX holds the guest's DR7");
    assert_eq!(s.regs.rip, 0x1c, "IP stepped past the 4-byte MOV");
}

/// A client's single-step in real-mode code (CS base 0x3000): the step exit's pc is linear and
/// RIP only the IP. The step ends when RIP moves, not at the first exit, which compares
/// linear with IP (a `rep` iteration keeps it going).
#[test]
fn client_step_in_real_mode_ends_when_ip_moves() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.fake.0.borrow_mut().regs.rip = 0x18;
    rig.ctl.step_one(0);
    rig.vcpu.before_entry(&rig.fake).unwrap();
    // A `rep movsb` iteration: IP still 0x18, linear 0x3018.
    rig.vcpu
        .on_debug_exit(DR6_INIT | BS, 0x3018, &rig.fake)
        .unwrap();
    assert_eq!(
        rig.vcpu.client_steps(),
        0,
        "IP did not move: still stepping"
    );
    rig.fake.0.borrow_mut().regs.rip = 0x1a;
    rig.vcpu
        .on_debug_exit(DR6_INIT | BS, 0x301a, &rig.fake)
        .unwrap();
    assert_eq!(rig.vcpu.client_steps(), 1, "IP moved: the step is done");
}

#[test]
fn mov_from_dr_reads_the_guests_view() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.guest_programs([0xabc, 0, 0, 0], 0x400);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.fake
        .0
        .borrow_mut()
        .code
        .insert(0x4000, vec![0x0f, 0x21, 0xc0]); // mov rax, dr0
    rig.exit(DR6_INIT | BD, 0x4000);
    assert_eq!(rig.fake.0.borrow().regs.rax, 0xabc);
}

#[test]
fn guest_gd_gets_its_own_bd_and_the_access_is_not_performed() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.guest_programs([0; 4], 0x400 | BD);
    rig.add(exec(0x1000), HitAction::Continue);
    {
        let mut s = rig.fake.0.borrow_mut();
        s.code.insert(0x4000, vec![0x0f, 0x23, 0xf9]);
        s.regs.rcx = 0x401;
    }
    rig.exit(DR6_INIT | BD, 0x4000);
    let s = rig.fake.0.borrow();
    assert_eq!(s.injected, vec![DR6_INIT | BD]);
    assert_eq!(s.regs.rip, 0x4000, "a fault: RIP stays on the MOV");
    assert_eq!(
        s.debugregs.dr7 & BD,
        0,
        "GD cleared on delivery (SDM 17.2.4)"
    );
    assert_eq!(s.debugregs.dr7 & 1, 0, "the write did not happen");
}

#[test]
fn stop_and_pause_actions() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    let stop = rig.add(exec(0x1000), HitAction::Stop);
    let _pause = rig.add(exec(0x2000), HitAction::Pause);
    assert_eq!(
        rig.exit(DR6_INIT | 1 << 3, 0x1000),
        Verdict::Stop {
            id: stop,
            rip: 0x1000
        }
    );
    assert!(!rig.ctl.is_paused());
    rig.at(0x2000);
    rig.vcpu
        .on_debug_exit(DR6_INIT | 1 << 2, 0x2000, &rig.fake)
        .unwrap();
    assert!(rig.ctl.is_paused());
    rig.ctl.resume("test");
    assert!(!rig.ctl.is_paused());
}

#[test]
fn data_watch_is_refused_where_the_host_cannot_deliver_it() {
    let rig = Rig::new(THIS_HOST, Policy::HostFirst);
    let err = rig
        .ctl
        .add(HostRequest {
            spec: BreakSpec::watch(0x2000, WatchAccess::Write, 8).unwrap(),
            scope: Scope::Vm,
            label: "w".into(),
            on_hit: always(HitAction::Continue),
        })
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("does not deliver hardware data watchpoints"));
}

#[test]
fn native_guest_changes_are_seen_at_the_next_exit() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.guest_programs([0x5000, 0, 0, 0], 0x401);
    rig.exit(DR6_INIT | BS, 0x1234); // any exit
    assert_eq!(
        rig.ctl.plan().guest_states[0][0],
        drvisor_debug::GuestSlotState::Native
    );
}

#[test]
fn guest_exec_hit_re_executed_with_rf_is_not_injected_again() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.guest_programs([0x5000, 0, 0, 0], 0x400 | 1);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.exit(DR6_INIT | 1, 0x5000);
    assert_eq!(rig.fake.0.borrow().injected.len(), 1, "first hit delivered");
    // The guest's handler returned to 0x5000 with RF=1; a host that ignores RF exits again.
    rig.fake.0.borrow_mut().regs.rflags |= RF;
    rig.exit(DR6_INIT | 1, 0x5000);
    assert_eq!(rig.fake.0.borrow().injected.len(), 1, "not delivered twice");
    assert!(rig.hits.lock().unwrap().is_empty());
}

#[test]
fn a_guest_db_waits_while_kvm_holds_another_event() {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.fake.0.borrow_mut().event_busy = true;
    rig.exit(DR6_INIT | 1 << 1, 0x1000); // an unowned bit: the guest's
    assert!(rig.fake.0.borrow().injected.is_empty(), "not overwritten");
    rig.fake.0.borrow_mut().event_busy = false;
    rig.vcpu.before_entry(&rig.fake).unwrap();
    assert_eq!(
        rig.fake.0.borrow().injected,
        vec![DR6_INIT | 1 << 1],
        "delivered once free"
    );
}

#[test]
fn step_over_follows_a_breakpoint_that_moves_slots_mid_step() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    let first = rig.add(exec(0x1000), HitAction::Continue); // DR3
    let second = rig.add(exec(0x2000), HitAction::Continue); // DR2
    rig.exit(DR6_INIT | 1 << 2, 0x2000); // #2 hit: stepping with DR2 disarmed
    assert_eq!(rig.fake.installed().dr7 & (0b11 << 4), 0);
    rig.ctl.remove(first).unwrap(); // #2 moves to DR3
    rig.vcpu.before_entry(&rig.fake).unwrap();
    let during = rig.fake.installed();
    assert!(during.single_step);
    assert_eq!(
        rig.ctl.plan().vcpus[0]
            .phys_of_host(second)
            .map(|s| s.number()),
        Some(3)
    );
    assert_eq!(
        during.dr7 & (0b11 << 6),
        0,
        "#2 stays disarmed in its new slot"
    );
    assert!(during.block_irq, "no interrupt lands inside the step");
}

#[test]
fn a_breakpoint_added_mid_step_at_the_same_address_does_not_re_fire_the_first() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    let kept = rig.add(exec(0x1000), HitAction::Continue); // DR3
    rig.exit(DR6_INIT | 1 << 3, 0x1000); // stepping over with DR3 disarmed
    let added = rig.add(exec(0x1000), HitAction::Continue); // DR2, same address, mid-step
                                                            // The new slot fires before the stepped instruction runs.
    rig.exit(DR6_INIT | 1 << 2, 0x1000);
    let during = rig.fake.installed();
    assert!(
        during.single_step,
        "still stepping over the same instruction"
    );
    assert_eq!(
        during.dr7 & (0b1111 << 4),
        0,
        "both DR2 and DR3 stay disarmed until it retires (dr7 {:#x})",
        during.dr7
    );
    rig.exit(DR6_INIT | BS, 0x1008);
    let after = rig.fake.installed();
    assert!(!after.single_step);
    assert_eq!(after.dr7 & (0b1111 << 4), 0b0101 << 4, "both re-armed");
    assert_eq!(
        rig.hit_ids(),
        vec![(kept.0, 3, BreakKind::Exec), (added.0, 2, BreakKind::Exec)],
        "one hit each for the one execution"
    );
}

#[test]
fn a_stepped_mov_dr_is_re_read() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x4000), HitAction::Continue);
    rig.fake
        .0
        .borrow_mut()
        .code
        .insert(0x4000, vec![0x0f, 0x23, 0xf9]); // mov dr7, rcx
    rig.exit(DR6_INIT | 1 << 3, 0x4000);
    // The stepped MOV DR enabled the guest's DR0; the step's exit must look at it.
    rig.guest_programs([0x5000, 0, 0, 0], 0x401);
    rig.exit(DR6_INIT | BS, 0x4003);
    assert_eq!(
        rig.ctl.plan().guest_states[0][0],
        drvisor_debug::GuestSlotState::Native
    );
}

#[test]
fn identical_host_and_guest_breakpoints_share_a_slot_and_both_get_the_hit() {
    let mut rig = Rig::new(DebugCaps::svm_like(), Policy::HostFirst);
    // The guest's four slots are busy, DR2 on the host's address: sharing makes room.
    rig.guest_programs([0x5000, 0x6000, 0x7000, 0x8000], 0x400 | 0x55);
    let host = rig.add(exec(0x7000), HitAction::Continue);
    let plan = rig.ctl.plan();
    let phys = plan.vcpus[0].phys_of_host(host).expect("armed");
    assert_eq!(
        plan.vcpus[0].phys_of_guest(drvisor_debug::Slot::DR2),
        Some(phys)
    );
    assert!(plan.guest_states[0]
        .iter()
        .all(|s| matches!(s, drvisor_debug::GuestSlotState::Armed { .. })));
    rig.exit(DR6_INIT | 1 << phys.number(), 0x7000);
    assert_eq!(
        rig.hit_ids(),
        vec![(host.0, phys.number(), BreakKind::Exec)]
    );
    assert_eq!(
        rig.fake.0.borrow().injected,
        vec![DR6_INIT | 1 << 2],
        "the guest sees its own B2"
    );
}

#[test]
fn a_plan_with_guest_slots_only_runs_with_guest_debug_off() {
    let mut rig = Rig::new(DebugCaps::svm_like(), Policy::HostFirst);
    let host = rig.add(exec(0x1000), HitAction::Continue);
    rig.guest_programs([0x5000, 0, 0, 0], 0x401);
    rig.exit(DR6_INIT | 1 << 3, 0x1000);
    assert!(rig.fake.installed().hw_bp);
    rig.ctl.remove(host).unwrap();
    rig.vcpu.before_entry(&rig.fake).unwrap();
    assert_eq!(
        rig.ctl.plan().guest_states[0][0],
        drvisor_debug::GuestSlotState::Armed {
            phys: drvisor_debug::Slot::DR0
        }
    );
    // KVM loads the guest's own DRs then: its changes take effect without waiting for an exit.
    assert!(!rig.fake.installed().is_on());
}

#[test]
fn a_host_breakpoint_evicted_by_the_guest_gets_its_slot_back_with_guest_debug_off() {
    for caps in [DebugCaps::svm_like(), DebugCaps::vmx_like()] {
        // Host debugging came on for the host's breakpoint, and the guest's four slots evicted
        // it at once: guest slots only, so guest debug is off again.
        let (mut rig, host) = Rig::host_evicted_by_four_guest_slots(caps);
        assert!(!rig.fake.installed().is_on(), "{caps:?}");
        // The guest frees its slots; the next exit of any kind must notice.
        rig.guest_programs([0; 4], 0x400);
        rig.exit(DR6_INIT | BS, 0x1234);
        assert!(
            rig.ctl.plan().vcpus[0].phys_of_host(host).is_some(),
            "{caps:?}"
        );
        assert!(rig.fake.installed().hw_bp, "{caps:?}");
    }
}

#[test]
fn a_guest_slot_armed_between_exits_is_reported_where_mov_dr_cannot_be_trapped() {
    for (caps, late) in [
        (DebugCaps::svm_like(), 1),
        (DebugCaps::vmx_like(), 0),
        (THIS_HOST, 0),
    ] {
        let mut rig = Rig::new(caps, Policy::HostFirst);
        rig.add(exec(0x1000), HitAction::Continue);
        rig.guest_programs([0x5000, 0, 0, 0], 0x401);
        rig.exit(DR6_INIT | 1 << 3, 0x1000);
        // Seen once: the same DRs at the next exit are not late again.
        rig.exit(DR6_INIT | 1 << 3, 0x1000);
        assert_eq!(rig.ctl.late_guest_slots(), late, "{caps:?}");
    }
}

#[test]
fn a_guest_hit_on_a_placement_the_guest_withdrew_is_not_delivered_where_mov_dr_is_unseen() {
    // SVM: the guest's DR0 watch on 0x5000 is placed in physical DR0. Its #DB handler then
    // moves DR0 to 0x6000, which KVM keeps to itself; the hardware still fires at 0x5000.
    let mut rig = Rig::new(DebugCaps::svm_like(), Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.guest_programs([0x5000, 0, 0, 0], 0x401);
    rig.exit(DR6_INIT | BS, 0x2000);
    assert_eq!(
        rig.ctl.plan().vcpus[0].phys_of_guest(drvisor_debug::Slot::DR0),
        Some(drvisor_debug::Slot::DR0)
    );
    let late_before = rig.ctl.late_guest_slots();
    rig.fake.0.borrow_mut().injected.clear();
    rig.guest_programs([0x6000, 0, 0, 0], 0x401);
    rig.exit(DR6_INIT | 1, 0x5000);
    assert!(
        rig.fake.0.borrow().injected.is_empty(),
        "a hit on the withdrawn placement reached the guest"
    );
    // The move is reported late, and the slot follows it.
    assert_eq!(rig.ctl.late_guest_slots(), late_before + 1);
    assert_eq!(rig.ctl.plan().vcpus[0].dr[0], 0x6000);
    // A hit on the placement the guest still arms is delivered.
    rig.exit(DR6_INIT | 1, 0x6000);
    assert_eq!(rig.fake.0.borrow().injected, vec![DR6_INIT | 1]);
}

#[test]
fn stale_guest_hits_are_those_the_guest_disarmed_or_moved() {
    use drvisor_debug::{Dr7, GuestDrFile, Slot};
    let file = |dr: [u64; 4], dr7: u64| GuestDrFile {
        dr,
        dr6: Dr6::INIT,
        dr7: Dr7::from_bits(dr7),
    };
    let placed = file([0x5000, 0x7000, 0, 0], 0x405);
    let plan = drvisor_debug::plan_for(
        drvisor_debug::GuestCarriage::Physical,
        Policy::HostFirst,
        &[],
        &[placed],
    )
    .vcpus[0];
    let both = Dr6::from_bits(DR6_INIT | 0b11);
    let stale = |now: GuestDrFile| super::vcpu_debug::stale_guest_hits(&plan, &now, both);
    assert_eq!(stale(placed), vec![]);
    // DR0 moved: its hit is stale, DR1's is not.
    assert_eq!(
        stale(file([0x6000, 0x7000, 0, 0], 0x405)),
        vec![(Slot::DR0, Slot::DR0)]
    );
    // DR1 disarmed.
    assert_eq!(
        stale(file([0x5000, 0x7000, 0, 0], 0x401)),
        vec![(Slot::DR1, Slot::DR1)]
    );
    // DR0 turned into a write watch at the same address.
    assert_eq!(
        stale(file([0x5000, 0x7000, 0, 0], 0x405 | 0b01 << 16)),
        vec![(Slot::DR0, Slot::DR0)]
    );
}

#[test]
fn late_slots_are_new_or_changed_enabled_slots() {
    use drvisor_debug::{Dr7, GuestDrFile, Slot};
    let file = |dr: [u64; 4], dr7: u64| GuestDrFile {
        dr,
        dr6: Dr6::INIT,
        dr7: Dr7::from_bits(dr7),
    };
    let none = file([0; 4], 0x400);
    let one = file([0x5000, 0, 0, 0], 0x401);
    let moved = file([0x6000, 0, 0, 0], 0x401);
    let io = file([0, 0x80, 0, 0], 0x400 | 1 << 2 | 0b10 << 20);
    let table = [
        (none, one, vec![Slot::DR0]),
        (one, one, vec![]),
        (one, moved, vec![Slot::DR0]),
        (one, none, vec![]),
        (none, io, vec![]),
    ];
    for (before, now, want) in table {
        assert_eq!(super::vcpu_debug::late_slots(&before, &now), want);
    }
}

#[test]
fn exec_breakpoints_are_refused_where_nothing_fires_or_resumes_them() {
    let table = [
        (
            DebugCaps {
                exec_breakpoints: false,
                ..THIS_HOST
            },
            Some("does not deliver host exec breakpoints"),
        ),
        (
            DebugCaps {
                rf_resumes: false,
                single_step: false,
                ..THIS_HOST
            },
            Some("neither resume past an exec breakpoint with RF nor single-step"),
        ),
        (
            DebugCaps {
                rf_resumes: true,
                single_step: false,
                ..THIS_HOST
            },
            None,
        ),
        (THIS_HOST, None),
    ];
    for (caps, refusal) in table {
        let rig = Rig::new(caps, Policy::HostFirst);
        let got = rig.ctl.add(HostRequest {
            spec: exec(0x1000),
            scope: Scope::Vm,
            label: "f".into(),
            on_hit: always(HitAction::Continue),
        });
        match refusal {
            Some(why) => assert!(
                got.as_ref().is_err_and(|e| e.to_string().contains(why)),
                "{caps:?}: {got:?}"
            ),
            None => assert!(got.is_ok(), "{caps:?}: {got:?}"),
        }
    }
    assert_eq!(
        THIS_HOST.exec_note(),
        Some("fires in CPL0 code only on this host")
    );
    assert_eq!(DebugCaps::vmx_like().exec_note(), None);
}

/// A rig on a GD host with one host breakpoint, and the guest about to run `code` at 0x4000.
fn mov_dr_rig(code: &[u8]) -> Rig {
    let mut rig = Rig::new(DebugCaps::vmx_like(), Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.fake.0.borrow_mut().code.insert(0x4000, code.to_vec());
    rig
}

#[test]
fn an_undecodable_mov_dr_ends_the_run_instead_of_trapping_for_ever() {
    let mut rig = mov_dr_rig(&[0x90, 0x90, 0x90]);
    let verdict = rig.exit(DR6_INIT | BD, 0x4000);
    assert_eq!(
        verdict,
        Verdict::Unemulated {
            rip: 0x4000,
            bytes: vec![0x90, 0x90, 0x90]
        }
    );
}

#[test]
fn reserved_bits_in_dr7_raise_gp_and_change_nothing() {
    let mut rig = mov_dr_rig(&[0x0f, 0x23, 0xf9]); // mov dr7, rcx
    rig.fake.0.borrow_mut().regs.rcx = 1 << 40 | 0x401;
    rig.exit(DR6_INIT | BD, 0x4000);
    let s = rig.fake.0.borrow();
    assert_eq!(s.faults, vec![(13, Some(0))], "#GP(0)");
    assert_eq!(s.regs.rip, 0x4000, "a fault: RIP stays on the instruction");
    assert_eq!(s.debugregs.dr7, 0x400, "the guest's DR7 is unchanged");
}

#[test]
fn dr4_and_dr5_under_cr4_de_raise_ud() {
    for (cr4, faults, rip) in [
        (drvisor_debug::CR4_DE, vec![(6, None)], 0x4000),
        (0, vec![], 0x4003),
    ] {
        let mut rig = mov_dr_rig(&[0x0f, 0x21, 0xe0]); // mov rax, dr4
        rig.fake.0.borrow_mut().cr4 = cr4;
        rig.exit(DR6_INIT | BD, 0x4000);
        let s = rig.fake.0.borrow();
        assert_eq!(s.faults, faults, "cr4={cr4:#x}");
        assert_eq!(s.regs.rip, rip, "cr4={cr4:#x}");
    }
}

#[test]
fn an_emulated_mov_dr_under_the_guests_tf_owes_it_a_single_step_db() {
    let mut rig = mov_dr_rig(&[0x0f, 0x23, 0xf9]); // mov dr7, rcx
    {
        let mut s = rig.fake.0.borrow_mut();
        s.regs.rcx = 0x401;
        s.regs.rflags |= 1 << 8;
    }
    rig.exit(DR6_INIT | BD, 0x4000);
    let s = rig.fake.0.borrow();
    assert_eq!(s.regs.rip, 0x4003);
    assert_eq!(s.injected, vec![DR6_INIT | BS], "the guest's own BS");
}

#[test]
fn a_re_execution_step_keeps_rf_across_a_step_exit_that_made_no_progress() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.guest_programs([0x1000, 0, 0, 0], 0x401);
    rig.at(0x1000);
    rig.fake.0.borrow_mut().regs.rflags = 2 | RF;
    rig.exit(DR6_INIT | 1 << 3, 0x1000);
    // The step exit arrives before the instruction retired, and RF is gone (our hosts, SMP).
    rig.fake.0.borrow_mut().regs.rflags = 2;
    rig.vcpu
        .on_debug_exit(DR6_INIT | BS, 0x1000, &rig.fake)
        .unwrap();
    assert!(rig.fake.installed().single_step, "still stepping");
    assert_ne!(
        rig.fake.0.borrow().regs.rflags & RF,
        0,
        "RF set again: the guest's own breakpoint, already delivered, must not fire twice"
    );
}

#[test]
fn a_reset_gives_the_guest_reset_drs_and_the_host_its_slot_back() {
    // Where guest slots are carried physically, the guest's four evict the host's breakpoint.
    for caps in [DebugCaps::svm_like(), DebugCaps::vmx_like()] {
        let (mut rig, host) = Rig::host_evicted_by_four_guest_slots(caps);
        // A wake from S3 resets the vCPU; then, as always, the plan is installed before entry.
        rig.vcpu.reset_guest(&rig.fake).unwrap();
        rig.vcpu.before_entry(&rig.fake).unwrap();
        let d = rig.fake.0.borrow().debugregs;
        assert_eq!((d.db, d.dr6, d.dr7), ([0; 4], DR6_INIT, 0x400), "{caps:?}");
        let (file, _, _) = rig.ctl.vcpu_view(0).unwrap();
        assert_eq!(file, drvisor_debug::GuestDrFile::default(), "{caps:?}");
        // The guest's slots are gone from the plan; the host's breakpoint is armed again.
        let slot = rig.ctl.plan().vcpus[0].phys_of_host(host);
        let slot = slot.unwrap_or_else(|| panic!("host breakpoint unarmed: {caps:?}"));
        let installed = rig.fake.installed();
        assert!(installed.hw_bp, "{caps:?}");
        assert_eq!(installed.dr[slot.index()], 0x1000, "{caps:?}");
        assert_ne!(installed.dr7 & (3 << (2 * slot.index())), 0, "{caps:?}");
    }
}

#[test]
fn a_reset_mid_step_over_rearms_the_host_breakpoint() {
    let mut rig = Rig::new(THIS_HOST, Policy::HostFirst);
    rig.add(exec(0x1000), HitAction::Continue);
    rig.exit(DR6_INIT | 1 << 3, 0x1000);
    assert!(rig.fake.installed().single_step, "stepping over");
    rig.vcpu.reset_guest(&rig.fake).unwrap();
    rig.vcpu.before_entry(&rig.fake).unwrap();
    let after = rig.fake.installed();
    assert!(
        !after.single_step,
        "the step-over belonged to abandoned code"
    );
    assert_ne!(after.dr7 & 0xc0, 0, "slot 3 armed again");
    assert_eq!(rig.fake.0.borrow().debugregs.dr7, 0x400);
}
