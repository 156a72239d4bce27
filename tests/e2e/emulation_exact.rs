//! Emulation is byte-exact: the same prologue run twice on real KVM, with host breakpoints on
//! its instructions, once resumed by drvisor's emulation and once by KVM single-stepping each
//! instruction. The registers at every hit, the registers at the end, the stack and the page
//! tables must be identical.

use std::sync::{Arc, Mutex};

use drvisor::debug::{
    DebugCaps, DebugController, HitContext, HostRequest, KvmDebugVcpu, VcpuDebug,
};
use drvisor::probe::tiny_vm::{Stop, TinyVm, CODE};
use drvisor::probe::Mechanism;
use drvisor_api::{HitAction, Registers};
use drvisor_debug::{BreakSpec, Policy, Scope};
use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress};

use crate::common::{ensure, skipped, Context, Failed, Trial};

/// Every instruction drvisor emulates, in a row, then HLT. Offsets in the comments.
const PROLOGUE: &[u8] = &[
    0xf3, 0x0f, 0x1e, 0xfa, /* 0: endbr64 */
    0x0f, 0x1f, 0x44, 0x00, 0x00, /* 4: nopl 0x0(%rax,%rax,1) */
    0x55, /* 9: push %rbp */
    0x48, 0x89, 0xe5, /* 10: mov %rsp,%rbp */
    0x48, 0x83, 0xec, 0x18, /* 13: sub $0x18,%rsp */
    0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00,
    0x00, /* 17: nopw %cs:0(%rax,%rax) */
    0x48, 0x81, 0xec, 0xf9, 0xff, 0xff, 0x7f, /* 27: sub $0x7ffffff9,%rsp: CF SF AF PF */
    0xf4, /* 34: hlt */
];
/// Two runs cover the seven instructions with four slots each.
const BREAKS: [[u64; 4]; 2] = [[0, 4, 9, 10], [13, 17, 27, 9]];
const STACK_TOP: u64 = 0x8_0000;

/// What a run leaves behind.
#[derive(Debug, PartialEq)]
struct Trace {
    hits: Vec<Registers>,
    end: kvm_regs,
    stack: Vec<u8>,
    tables: Vec<u8>,
}

fn run(caps: DebugCaps, breaks: [u64; 4], emulate: bool) -> Result<(Trace, u64), Failed> {
    let kvm = kvm_ioctls::Kvm::new()?;
    let mut vm = TinyVm::new(&kvm, 0, false, PROLOGUE)?;
    // Accessed (and for the leaf, Dirty) already set, as in a kernel that has run a while: the
    // emulator leaves tables it would have to change to KVM.
    for (entry, bits) in [(0x9000u64, 0x20u64), (0xa000, 0x20), (0xb000, 0x60)] {
        let v: u64 = vm.mem().read_obj(GuestAddress(entry))?;
        vm.mem().write_obj(v | bits, GuestAddress(entry))?;
    }
    vm.vcpu.set_regs(&kvm_regs {
        rip: CODE,
        rsp: STACK_TOP,
        rbp: 0x1122_3344_5566_7788,
        rax: 7,
        // CF, ZF and IF set, so a flag left alone shows as well as one changed.
        rflags: 0x2 | 1 | 1 << 6 | 1 << 9,
        ..Default::default()
    })?;
    if emulate {
        vm.vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
        vm.vcpu
            .set_sync_valid_reg(kvm_ioctls::SyncReg::SystemRegister);
        vm.vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::VcpuEvents);
    }
    let ctl = Arc::new(DebugController::standalone(caps, Policy::HostFirst, 1)?);
    let hits = Arc::new(Mutex::new(Vec::new()));
    for off in breaks {
        let hits = hits.clone();
        ctl.add(HostRequest {
            spec: BreakSpec::exec(CODE + off)?,
            scope: Scope::Vm,
            label: format!("+{off}"),
            on_hit: Arc::new(move |h: &HitContext| {
                hits.lock().unwrap().push(h.regs.clone());
                HitAction::Continue
            }),
        })?;
    }
    let mut dbg = VcpuDebug::new(0, ctl.clone());
    for _ in 0..1000 {
        let (vcpu, mem) = vm.vcpu_and_mem();
        dbg.before_entry(&KvmDebugVcpu::new(vcpu, mem, emulate, None))?;
        match vm.run_raw()? {
            (Stop::Debug { dr6 }, pc) => {
                let (vcpu, mem) = vm.vcpu_and_mem();
                let seam = KvmDebugVcpu::new(vcpu, mem, emulate, None);
                dbg.on_debug_exit(dr6, pc, &seam)?;
                dbg.after_exit(&seam)?;
            }
            (Stop::Hlt, _) => {
                let mut stack = vec![0u8; 0x1000];
                vm.mem()
                    .read_slice(&mut stack, GuestAddress(STACK_TOP - 0x1000))?;
                let mut tables = vec![0u8; 0x3000];
                vm.mem().read_slice(&mut tables, GuestAddress(0x9000))?;
                let end = vm.vcpu.get_regs()?;
                let hits = hits.lock().unwrap().clone();
                let resumes = dbg.resumes();
                let by_path = if emulate {
                    resumes.emulated
                } else {
                    resumes.stepped
                };
                return Ok((
                    Trace {
                        hits,
                        end,
                        stack,
                        tables,
                    },
                    by_path,
                ));
            }
            other => return Err(format!("unexpected stop {other:?}").into()),
        }
    }
    Err("the prologue never reached its hlt".into())
}

fn emulated_equals_stepped(caps: DebugCaps) -> Result<(), Failed> {
    for breaks in BREAKS {
        let (stepped, n_stepped) = run(caps, breaks, false)?;
        let (emulated, n_emulated) = run(caps, breaks, true)?;
        ensure(n_stepped == 4 && n_emulated == 4, || {
            format!("{breaks:?}: {n_stepped} hits stepped, {n_emulated} emulated (wanted 4 each)")
        })?;
        ensure(stepped.hits.len() == 4, || format!("{:?}", stepped.hits))?;
        ensure(stepped.hits == emulated.hits, || {
            format!(
                "registers at the hits differ:\nstepped  {:?}\nemulated {:?}",
                stepped.hits, emulated.hits
            )
        })?;
        ensure(stepped.end == emulated.end, || {
            format!(
                "registers at the end differ:\nstepped  {:?}\nemulated {:?}",
                stepped.end, emulated.end
            )
        })?;
        ensure(stepped.stack == emulated.stack, || {
            "the stacks differ".into()
        })?;
        ensure(stepped.tables == emulated.tables, || {
            "the page tables differ".into()
        })?;
        // And the push really stored: rbp at the top of the stack.
        ensure(
            stepped.stack[0xff8..] == 0x1122_3344_5566_7788u64.to_le_bytes(),
            || "push %rbp did not store rbp".into(),
        )?;
    }
    Ok(())
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let name = "emulation::emulated_equals_stepped_by_kvm";
    for m in [Mechanism::HostExecBreakpoint, Mechanism::SingleStep] {
        if !ctx.probe.delivers(m, 0) {
            return vec![skipped(
                name,
                &format!("the host probe found that this KVM does not deliver {m:?} at CPL0"),
            )];
        }
    }
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    if kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs) & 7 != 7 {
        return vec![skipped(
            name,
            "KVM_CAP_SYNC_REGS lacks registers, system registers or events: no emulation",
        )];
    }
    // Where RF works drvisor resumes with it; this compares the two other ways.
    let caps = DebugCaps {
        rf_resumes: false,
        ..DebugCaps::from_probe(&ctx.probe)
    };
    vec![Trial::test(name, move || emulated_equals_stepped(caps))]
}
