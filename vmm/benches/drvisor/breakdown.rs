//! What one hit is made of on this host, each part divided by a bare IO exit measured right
//! before it:
//! a `KVM_EXIT_DEBUG` with nothing done but RIP moved through the sync-regs dirty bits (the
//! floor for "a hit costs one exit"), the same IO exit with every sync-regs field copied, and
//! one `KVM_GET_DEBUGREGS`.

use std::time::Duration;

use drvisor::probe::tiny_vm::{Stop, TinyVm, CODE};
use kvm_bindings::{KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_USE_HW_BP};
use kvm_ioctls::{Kvm, SyncReg};

use crate::baseline::{loop_of, BODY_OFFSET, EXITS};
use crate::measure::{paired_ratio, time, us};

fn sync_all(vm: &mut TinyVm) {
    vm.vcpu.set_sync_valid_reg(SyncReg::Register);
    vm.vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
    vm.vcpu.set_sync_valid_reg(SyncReg::VcpuEvents);
}

/// A bare IO exit with registers, system registers and events copied at every exit.
fn io_exit_synced(kvm: &Kvm) -> Duration {
    let mut vm = TinyVm::new(kvm, 0, false, &loop_of([0xe6, 0x80], EXITS)).expect("VM");
    sync_all(&mut vm);
    time(|| while let (Stop::IoOut { .. }, _) = vm.run_raw().expect("run") {}) / EXITS
}

/// An exec breakpoint exit on a 2-byte NOP, resumed by moving RIP through the dirty bits and
/// nothing else: no dispatch, no ioctl.
fn bare_debug_exit(kvm: &Kvm) -> Duration {
    let hits = EXITS / 4;
    let mut vm = TinyVm::new(kvm, 0, false, &loop_of([0x66, 0x90], hits)).expect("VM");
    sync_all(&mut vm);
    let dr7 = 0x400 | 0x2; // G0, exec
    vm.guest_debug(
        KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
        [CODE + BODY_OFFSET, 0, 0, 0],
        dr7,
    )
    .expect("guest debug");
    let mut n = 0;
    let t = time(|| loop {
        match vm.run_raw().expect("run") {
            (Stop::Debug { .. }, _) => {
                n += 1;
                vm.vcpu.sync_regs_mut().regs.rip += 2;
                vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
            }
            (Stop::Hlt, _) => break,
            other => panic!("{other:?}"),
        }
    });
    assert_eq!(n, hits);
    t / hits
}

/// The bare #DB exit plus one `KVM_GET_DEBUGREGS` at each exit, as the emulated path does.
fn debug_exit_and_get_debugregs(kvm: &Kvm) -> Duration {
    let hits = EXITS / 4;
    let mut vm = TinyVm::new(kvm, 0, false, &loop_of([0x66, 0x90], hits)).expect("VM");
    sync_all(&mut vm);
    vm.guest_debug(
        KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
        [CODE + BODY_OFFSET, 0, 0, 0],
        0x402,
    )
    .expect("guest debug");
    let t = time(|| loop {
        match vm.run_raw().expect("run") {
            (Stop::Debug { .. }, _) => {
                std::hint::black_box(vm.vcpu.get_debug_regs().expect("ioctl"));
                vm.vcpu.sync_regs_mut().regs.rip += 2;
                vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
            }
            (Stop::Hlt, _) => break,
            other => panic!("{other:?}"),
        }
    });
    t / hits
}

/// One `KVM_GET_DEBUGREGS`.
fn get_debugregs(kvm: &Kvm) -> Duration {
    let vm = TinyVm::new(kvm, 0, false, &[0xf4]).expect("VM");
    time(|| {
        for _ in 0..EXITS {
            std::hint::black_box(vm.vcpu.get_debug_regs().expect("ioctl"));
        }
    }) / EXITS
}

/// One `KVM_SET_GUEST_DEBUG`.
fn set_guest_debug(kvm: &Kvm) -> Duration {
    let vm = TinyVm::new(kvm, 0, false, &[0xf4]).expect("VM");
    time(|| {
        for i in 0..EXITS {
            vm.guest_debug(
                KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
                [CODE + u64::from(i & 1), 0, 0, 0],
                0x402,
            )
            .expect("ioctl");
        }
    }) / EXITS
}

/// A part of a hit and how to measure one.
type Part = (&'static str, fn(&Kvm) -> Duration);

/// Prints the parts.
pub fn run(kvm: &Kvm) {
    println!("what a hit is made of on this host (each / a bare IO exit measured just before it)");
    let parts: [Part; 5] = [
        ("IO exit with regs+sregs+events synced", io_exit_synced),
        ("bare #DB exit, RIP moved by dirty bits", bare_debug_exit),
        (
            "the same + one KVM_GET_DEBUGREGS",
            debug_exit_and_get_debugregs,
        ),
        ("one KVM_GET_DEBUGREGS", get_debugregs),
        ("one KVM_SET_GUEST_DEBUG", set_guest_debug),
    ];
    for (what, f) in parts {
        let (r, t) = paired_ratio(5, || crate::baseline::io_exit(kvm), || f(kvm));
        println!("  {what:<40} {:>8.2} us = {r:>5.2}", us(t));
    }
}
