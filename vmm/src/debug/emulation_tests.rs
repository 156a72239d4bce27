//! The resume decision, driven by synthetic exits through a fake vCPU that also has the synced
//! system registers, events and guest memory: emulated where that is exact, stepped over in
//! every case the decision must refuse, and RF through the sync-regs dirty bits on RF hosts.

use std::cell::Cell;
use std::sync::Arc;

use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Policy, Scope};
use kvm_bindings::{kvm_debugregs, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::fake_vcpu::FakeVcpu;
use super::kvm_vcpu::{DebugVcpu, GuestDebug, Result};
use super::{always, DebugCaps, DebugController, HostRequest, ResumeCounts, VcpuDebug};

const CODE: u64 = 0x10_0000;
const STACK: u64 = 0x8_0000;
const PML4: u64 = 0x9000;
/// The host's breakpoint takes the top slot: DR6.B3.
const HIT: u64 = 0xffff_0ff0 | 1 << 3;
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;

const THIS_HOST: DebugCaps = DebugCaps::pvm_like();

/// [`FakeVcpu`] plus what arrives with a synced exit, and guest RAM with identity-mapped
/// 2 MiB pages (Accessed and Dirty set) over the first 4 MiB.
struct SyncedFake {
    fake: FakeVcpu,
    mem: GuestMemoryMmap,
    sregs: Option<kvm_sregs>,
    events: kvm_vcpu_events,
    /// A page watch traps this page.
    trapped: Option<u64>,
    set_regs: Cell<u32>,
}

impl SyncedFake {
    fn new(code: &[u8]) -> SyncedFake {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let w = |v: u64, at: u64| mem.write_obj(v, GuestAddress(at)).unwrap();
        w(0xa000 | 0x23, PML4); // present, writable, accessed
        w(0xb000 | 0x23, 0xa000);
        w(0x63 | 0x80, 0xb000); // 0-2 MiB: large, accessed, dirty
        w(0x20_0000 | 0xe3, 0xb008); // 2-4 MiB
        mem.write_slice(code, GuestAddress(CODE)).unwrap();
        let fake = FakeVcpu::default();
        {
            let mut s = fake.0.borrow_mut();
            s.debugregs.dr6 = 0xffff_0ff0;
            s.debugregs.dr7 = 0x400;
            s.regs = kvm_regs {
                rip: CODE,
                rsp: STACK,
                rbp: 0xabcd,
                rflags: 2,
                ..Default::default()
            };
        }
        let sregs = kvm_sregs {
            cr0: 0x8000_0031,
            cr3: PML4,
            cr4: 0x20,
            efer: 0x500,
            cs: kvm_segment {
                l: 1,
                dpl: 0,
                selector: 8,
                present: 1,
                s: 1,
                type_: 11,
                ..Default::default()
            },
            ..Default::default()
        };
        SyncedFake {
            fake,
            mem,
            sregs: Some(sregs),
            events: kvm_vcpu_events::default(),
            trapped: None,
            set_regs: Cell::new(0),
        }
    }

    fn regs(&self) -> kvm_regs {
        self.fake.0.borrow().regs
    }
}

impl DebugVcpu for SyncedFake {
    fn regs(&self) -> Result<kvm_regs> {
        self.fake.regs()
    }
    fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.set_regs.set(self.set_regs.get() + 1);
        self.fake.set_regs(regs)
    }
    fn debugregs(&self) -> Result<kvm_debugregs> {
        self.fake.debugregs()
    }
    fn set_debugregs(&self, regs: &kvm_debugregs) -> Result<()> {
        self.fake.set_debugregs(regs)
    }
    fn set_guest_debug(&self, dbg: &GuestDebug) -> Result<()> {
        self.fake.set_guest_debug(dbg)
    }
    fn inject_exception(&self, vector: u8, error_code: Option<u32>) -> Result<bool> {
        self.fake.inject_exception(vector, error_code)
    }
    fn cr4(&self) -> Result<u64> {
        self.fake.cr4()
    }
    fn fetch(&self, rip: u64) -> Vec<u8> {
        let mut b = vec![0u8; 15];
        self.mem.read_slice(&mut b, GuestAddress(rip)).unwrap();
        b
    }
    fn sregs(&self) -> Option<kvm_sregs> {
        self.sregs
    }
    fn events(&self) -> Option<kvm_vcpu_events> {
        Some(self.events)
    }
    fn memory(&self) -> Option<&GuestMemoryMmap> {
        Some(&self.mem)
    }
    fn plain_ram(&self, gpa: u64) -> bool {
        self.trapped != Some(gpa & !0xfff)
    }
}

/// One host exec hit at `CODE` through the real dispatch; how it was resumed.
fn hit_once(caps: DebugCaps, fake: &SyncedFake) -> (VcpuDebug, ResumeCounts) {
    let ctl = Arc::new(DebugController::standalone(caps, Policy::HostFirst, 1).unwrap());
    ctl.add(HostRequest {
        spec: BreakSpec::exec(CODE).unwrap(),
        scope: Scope::Vm,
        label: "code".into(),
        on_hit: always(HitAction::Continue),
    })
    .unwrap();
    let mut vcpu = VcpuDebug::new(0, ctl.clone());
    vcpu.before_entry(fake).unwrap();
    vcpu.on_debug_exit(HIT, CODE, fake).unwrap();
    vcpu.after_exit(fake).unwrap();
    assert_eq!(ctl.hits(drvisor_debug::HostBpId(1)), Some(1));
    let r = vcpu.resumes();
    (vcpu, r)
}

const NOP5: &[u8] = &[0x0f, 0x1f, 0x44, 0x00, 0x00];
const PUSH_RBP: &[u8] = &[0x55];
const ENDBR64: &[u8] = &[0xf3, 0x0f, 0x1e, 0xfa];
const EMULATED: ResumeCounts = ResumeCounts {
    rf: 0,
    emulated: 1,
    stepped: 0,
};
const STEPPED: ResumeCounts = ResumeCounts {
    rf: 0,
    emulated: 0,
    stepped: 1,
};

#[test]
fn a_nop_is_emulated_with_no_step_and_no_set_guest_debug() {
    let fake = SyncedFake::new(NOP5);
    let installs = |f: &SyncedFake| f.fake.0.borrow().guest_debug.len();
    let (_v, r) = hit_once(THIS_HOST, &fake);
    assert_eq!(r, EMULATED);
    assert_eq!(fake.regs().rip, CODE + 5);
    assert!(!fake.fake.installed().single_step);
    // Armed once before the first entry; the hit itself changed nothing.
    assert_eq!(installs(&fake), 1);
}

#[test]
fn push_stores_rbp_through_the_page_tables() {
    let fake = SyncedFake::new(PUSH_RBP);
    let (_v, r) = hit_once(THIS_HOST, &fake);
    assert_eq!(r, EMULATED);
    assert_eq!(fake.regs().rsp, STACK - 8);
    assert_eq!(fake.regs().rip, CODE + 1);
    let stored: u64 = fake.mem.read_obj(GuestAddress(STACK - 8)).unwrap();
    assert_eq!(stored, 0xabcd);
}

/// Every case the decision must refuse: each is stepped over, and nothing changed.
#[test]
fn refusals_fall_back_to_the_step_over() {
    type Setup = fn(&mut SyncedFake);
    let cases: &[(&str, &[u8], Setup)] = &[
        ("TF set", NOP5, |f| f.fake.0.borrow_mut().regs.rflags |= TF),
        ("RF set", NOP5, |f| f.fake.0.borrow_mut().regs.rflags |= RF),
        ("STI shadow", NOP5, |f| f.events.interrupt.shadow = 1),
        ("MOV SS shadow", NOP5, |f| f.events.interrupt.shadow = 2),
        ("exception injected", NOP5, |f| {
            f.events.exception.injected = 1
        }),
        ("NMI injected", NOP5, |f| f.events.nmi.injected = 1),
        ("interrupt injected", NOP5, |f| {
            f.events.interrupt.injected = 1
        }),
        ("no synced sregs", NOP5, |f| f.sregs = None),
        ("CPL 3", NOP5, |f| f.sregs.as_mut().unwrap().cs.dpl = 3),
        ("compatibility mode", NOP5, |f| {
            f.sregs.as_mut().unwrap().cs.l = 0
        }),
        ("endbr64 with CET", ENDBR64, |f| {
            f.sregs.as_mut().unwrap().cr4 |= 1 << 23
        }),
        ("code page not accessed yet", NOP5, |f| {
            f.mem.write_obj(0xa000u64 | 3, GuestAddress(PML4)).unwrap()
        }),
        ("guest exec breakpoint here", NOP5, |f| {
            let mut s = f.fake.0.borrow_mut();
            s.debugregs.db[0] = CODE;
            s.debugregs.dr7 = 0x401;
        }),
        ("push onto a page-watched page", PUSH_RBP, |f| {
            f.trapped = Some(STACK - 0x1000)
        }),
        ("push onto a guest write watch", PUSH_RBP, |f| {
            let mut s = f.fake.0.borrow_mut();
            s.debugregs.db[1] = STACK - 4;
            s.debugregs.dr7 = 0x400 | 1 << 2 | 0b01 << 20 | 0b11 << 22; // L1, write, 4 bytes
        }),
        ("push across a page boundary", PUSH_RBP, |f| {
            f.fake.0.borrow_mut().regs.rsp = STACK + 4
        }),
        ("lock inc", &[0xf0, 0x48, 0xff, 0x05, 0, 0, 0, 0], |_| {}),
    ];
    for (what, code, setup) in cases {
        let mut fake = SyncedFake::new(code);
        setup(&mut fake);
        let before = fake.regs();
        let stack_before: u64 = fake.mem.read_obj(GuestAddress(STACK - 8)).unwrap();
        let (_v, r) = hit_once(THIS_HOST, &fake);
        assert_eq!(r, STEPPED, "{what}");
        assert_eq!(fake.regs(), before, "{what}: registers changed");
        let stack: u64 = fake.mem.read_obj(GuestAddress(STACK - 8)).unwrap();
        assert_eq!(stack, stack_before, "{what}: memory changed");
        assert!(fake.fake.installed().single_step, "{what}: not stepping");
    }
}

#[test]
fn code_patched_after_the_decision_is_decoded_again() {
    let fake = SyncedFake::new(NOP5);
    let ctl = Arc::new(DebugController::standalone(THIS_HOST, Policy::HostFirst, 1).unwrap());
    ctl.add(HostRequest {
        spec: BreakSpec::exec(CODE).unwrap(),
        scope: Scope::Vm,
        label: "code".into(),
        on_hit: always(HitAction::Continue),
    })
    .unwrap();
    let mut vcpu = VcpuDebug::new(0, ctl);
    vcpu.before_entry(&fake).unwrap();
    vcpu.on_debug_exit(HIT, CODE, &fake).unwrap();
    assert_eq!(vcpu.resumes().emulated, 1);
    // ftrace turns the NOP into a call: the cached decision must not survive it.
    fake.mem
        .write_slice(&[0xe8, 0, 0, 0, 0], GuestAddress(CODE))
        .unwrap();
    fake.fake.0.borrow_mut().regs.rip = CODE;
    vcpu.on_debug_exit(HIT, CODE, &fake).unwrap();
    assert_eq!(vcpu.resumes().stepped, 1);
    assert_eq!(fake.regs().rip, CODE);
}

#[test]
fn rf_hosts_set_rf_through_set_regs_and_nothing_else() {
    let fake = SyncedFake::new(NOP5);
    let caps = DebugCaps {
        rf_resumes: true,
        ..THIS_HOST
    };
    let (_v, r) = hit_once(caps, &fake);
    assert_eq!(
        r,
        ResumeCounts {
            rf: 1,
            emulated: 0,
            stepped: 0
        }
    );
    assert_eq!(fake.set_regs.get(), 1);
    assert_eq!(fake.regs().rflags & RF, RF);
    assert_eq!(fake.regs().rip, CODE);
}

#[test]
fn a_guest_db_in_the_same_exit_is_delivered_before_the_instruction_runs() {
    // Physical carriage: the guest's write watch sits in DR0 and reports in the same exit as
    // the host's exec breakpoint. The guest's #DB must come before the instruction runs, so it
    // is stepped, not emulated.
    let caps = DebugCaps {
        guest_breakpoints_native: false,
        ..THIS_HOST
    };
    let fake = SyncedFake::new(NOP5);
    {
        let mut s = fake.fake.0.borrow_mut();
        s.debugregs.db[0] = 0x5000;
        s.debugregs.dr7 = 0x400 | 1 | 0b01 << 16 | 0b11 << 18; // L0, write, 4 bytes
    }
    let ctl = Arc::new(DebugController::standalone(caps, Policy::HostFirst, 1).unwrap());
    ctl.add(HostRequest {
        spec: BreakSpec::exec(CODE).unwrap(),
        scope: Scope::Vm,
        label: "code".into(),
        on_hit: always(HitAction::Continue),
    })
    .unwrap();
    let mut vcpu = VcpuDebug::new(0, ctl);
    vcpu.before_entry(&fake).unwrap();
    vcpu.after_exit(&fake).unwrap();
    vcpu.before_entry(&fake).unwrap();
    let guest_phys = fake.fake.installed();
    assert_ne!(
        guest_phys.dr7 & 0b11,
        0,
        "the guest's watch is carried in DR0"
    );
    vcpu.on_debug_exit(HIT | 1, CODE, &fake).unwrap();
    assert_eq!(vcpu.resumes(), STEPPED);
    assert_eq!(fake.regs().rip, CODE);
    assert_eq!(
        fake.fake.0.borrow().injected.len(),
        1,
        "the guest got its #DB"
    );
}
