//! The probe's experiments, one function per row group, in `kvm-probe.c`'s order.

use std::time::Instant;

use kvm_bindings::{
    kvm_debugregs, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
};
use kvm_ioctls::Kvm;

use super::tiny_vm::{Result, Stop, TinyVm, CODE, DATA};
use super::{Caps, Mechanism, ProbeReport, ProbeRow};

const HW_BP: u32 = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
const DR6_INIT: u64 = 0xffff_0ff0;
/// DR7 enabling slot 0 (L0) with bit 10 set, RW=00 (exec), LEN=00.
const DR7_L0_EXEC: u64 = 0x401;
/// DR7 enabling slot 1 (L1) for exec.
const DR7_L1_EXEC: u64 = 0x404;

/// `mov rax,0x42; mov [DATA],al; mov [DATA+8],rax; nop; mov rbx,[DATA+8]; hlt`
const PROG: &[u8] = &[
    0x48, 0xc7, 0xc0, 0x42, 0, 0, 0, /* 0x00 mov rax,0x42 */
    0x88, 0x04, 0x25, 0, 0, 0x20, 0, /* 0x07 mov [0x200000],al */
    0x48, 0x89, 0x04, 0x25, 0x08, 0, 0x20, 0,    /* 0x0e mov [0x200008],rax */
    0x90, /* 0x16 nop */
    0x48, 0x8b, 0x1c, 0x25, 0x08, 0, 0x20, 0,    /* 0x17 mov rbx,[0x200008] */
    0xf4, /* 0x1f hlt */
];
const NOP_AT: u64 = CODE + 0x16;
const AFTER_FIRST: u64 = CODE + 7;

/// Runs every experiment on `kvm` and returns the table.
pub fn run_all(kvm: &Kvm) -> Result<ProbeReport> {
    let mut report = run_for_routing(kvm)?;
    report.rows.push(native_speed(kvm)?);
    Ok(report)
}

/// The experiments that routing and the guest's CPUID depend on: all but the speed measurement,
/// so that a VM start pays milliseconds for it.
///
/// The experiments are independent VMs, so they run on threads of their own: the rows at CPL0,
/// those at CPL3, the single ones, and the instruction rows. The table keeps its order.
pub fn run_for_routing(kvm: &Kvm) -> Result<ProbeReport> {
    std::thread::scope(|s| {
        let per_cpl = [0, 3].map(|cpl| {
            s.spawn(move || -> Result<Vec<ProbeRow>> {
                let mut rows = Vec::new();
                exec_breakpoint(kvm, cpl, &mut rows)?;
                write_watchpoint(kvm, cpl, &mut rows)?;
                single_step(kvm, cpl, &mut rows)?;
                readonly_memslot(kvm, cpl, &mut rows)?;
                Ok(rows)
            })
        });
        let singles = s.spawn(|| -> Result<Vec<ProbeRow>> {
            Ok(vec![
                gd_trap(kvm)?,
                guest_breakpoint_live(kvm)?,
                host_first_at_shared_address(kvm)?,
                int3(kvm)?,
            ])
        });
        let instructions = s.spawn(|| super::instructions::run(kvm));
        let mut rows = Vec::new();
        for handle in per_cpl {
            rows.extend(joined(handle)?);
        }
        rows.extend(joined(singles)?);
        Ok(ProbeReport {
            caps: Caps::read(kvm),
            rows,
            instructions: joined(instructions)?,
        })
    })
}

/// A probe thread's result; its panic (a bug, never the host's answer) goes on in the caller.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn row(mechanism: Mechanism, cpl: u8, works: bool, observed: String) -> ProbeRow {
    ProbeRow {
        mechanism,
        cpl,
        works,
        observed,
    }
}

/// `printf("%#llx")`: `0` for zero, `0x..` otherwise, so rows read exactly as `kvm-probe.c`'s.
fn c_hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

fn dr6_of(stop: &Stop) -> u64 {
    match stop {
        Stop::Debug { dr6 } => *dr6,
        _ => 0,
    }
}

fn exec_breakpoint(kvm: &Kvm, cpl: u8, rows: &mut Vec<ProbeRow>) -> Result<()> {
    let mut vm = TinyVm::new(kvm, cpl, false, PROG)?;
    vm.guest_debug(HW_BP, [NOP_AT, 0, 0, 0], DR7_L0_EXEC)?;
    let (stop, rip) = vm.run()?;
    let fired = matches!(stop, Stop::Debug { .. }) && rip == NOP_AT;
    rows.push(row(
        Mechanism::HostExecBreakpoint,
        cpl,
        fired,
        format!(
            "exit={} rip={rip:#x} dr6={}",
            stop.exit_number(),
            c_hex(dr6_of(&stop))
        ),
    ));
    if matches!(stop, Stop::Debug { .. }) {
        // Does RF (SDM Vol. 3, 17.3.1.1) suppress the same breakpoint on resume?
        let mut regs = vm.vcpu.get_regs()?;
        regs.rflags |= 1 << 16;
        vm.vcpu.set_regs(&regs)?;
        let (stop, rip) = vm.run()?;
        let repeated = matches!(stop, Stop::Debug { .. }) && rip == NOP_AT;
        rows.push(row(
            Mechanism::RfResumesPastBreakpoint,
            cpl,
            !repeated,
            format!("exit={} rip={rip:#x}", stop.exit_number()),
        ));
    }
    Ok(())
}

fn write_watchpoint(kvm: &Kvm, cpl: u8, rows: &mut Vec<ProbeRow>) -> Result<()> {
    let mut vm = TinyVm::new(kvm, cpl, false, PROG)?;
    // Slot 0: RW=01 (write), LEN=10 (8 bytes) on DATA+8.
    vm.guest_debug(
        HW_BP,
        [DATA + 8, 0, 0, 0],
        DR7_L0_EXEC | (1 << 16) | (2 << 18),
    )?;
    let (stop, rip) = vm.run()?;
    rows.push(row(
        Mechanism::HostWriteWatchpoint,
        cpl,
        matches!(stop, Stop::Debug { .. }),
        format!("exit={} rip={rip:#x}", stop.exit_number()),
    ));
    Ok(())
}

fn single_step(kvm: &Kvm, cpl: u8, rows: &mut Vec<ProbeRow>) -> Result<()> {
    let mut vm = TinyVm::new(kvm, cpl, false, PROG)?;
    vm.guest_debug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, [0; 4], 0)?;
    let (stop, rip) = vm.run()?;
    rows.push(row(
        Mechanism::SingleStep,
        cpl,
        matches!(stop, Stop::Debug { .. }) && rip == AFTER_FIRST,
        format!(
            "exit={} rip={rip:#x} dr6={}",
            stop.exit_number(),
            c_hex(dr6_of(&stop))
        ),
    ));
    Ok(())
}

fn readonly_memslot(kvm: &Kvm, cpl: u8, rows: &mut Vec<ProbeRow>) -> Result<()> {
    let mut vm = TinyVm::new(kvm, cpl, true, PROG)?;
    let (stop, _) = vm.run()?;
    let (works, observed) = match stop {
        Stop::Mmio { addr, len, write } => (
            write,
            format!(
                "exit={} phys={addr:#x} len={len} write={}",
                stop.exit_number(),
                write as u8
            ),
        ),
        _ => (false, format!("exit={}", stop.exit_number())),
    };
    rows.push(row(Mechanism::ReadonlyMemslotTrap, cpl, works, observed));
    Ok(())
}

fn gd_trap(kvm: &Kvm) -> Result<ProbeRow> {
    // mov rax,dr0; hlt — with host DR7.GD (bit 13) set.
    let mut vm = TinyVm::new(kvm, 0, false, &[0x0f, 0x21, 0xc0, 0xf4])?;
    vm.guest_debug(HW_BP, [0; 4], 0x2400)?;
    let (stop, rip) = vm.run()?;
    Ok(row(
        Mechanism::GdTrapsMovDr,
        0,
        matches!(stop, Stop::Debug { .. }),
        format!(
            "exit={} rip={rip:#x} dr6={}",
            stop.exit_number(),
            c_hex(dr6_of(&stop))
        ),
    ))
}

/// A guest with a reporting IDT, its own DR0 exec breakpoint at `guest_at`, and a host exec
/// breakpoint in slot 1 at `host_at`, running four NOPs.
fn guest_and_host_breakpoints(kvm: &Kvm, guest_at: u64, host_at: u64) -> Result<(Stop, u64)> {
    let mut vm = TinyVm::new(kvm, 0, false, &[0x90, 0x90, 0x90, 0x90, 0xf4])?;
    vm.install_reporting_idt()?;
    let guest = kvm_debugregs {
        db: [guest_at, 0, 0, 0],
        dr6: DR6_INIT,
        dr7: DR7_L0_EXEC,
        ..Default::default()
    };
    vm.vcpu.set_debug_regs(&guest)?;
    vm.guest_debug(HW_BP, [0, host_at, 0, 0], DR7_L1_EXEC)?;
    vm.run()
}

fn guest_breakpoint_live(kvm: &Kvm) -> Result<ProbeRow> {
    let (stop, rip) = guest_and_host_breakpoints(kvm, CODE + 2, CODE + 3)?;
    let delivered = stop
        == Stop::IoOut {
            port: 0x10,
            value: 1,
        };
    Ok(row(
        Mechanism::GuestBreakpointLiveUnderHostDebug,
        0,
        delivered,
        format!(
            "exit={} rip={rip:#x}{}",
            stop.exit_number(),
            if delivered {
                " (guest #DB handler ran)"
            } else {
                ""
            }
        ),
    ))
}

fn host_first_at_shared_address(kvm: &Kvm) -> Result<ProbeRow> {
    let (stop, rip) = guest_and_host_breakpoints(kvm, CODE + 2, CODE + 2)?;
    let host_first = matches!(stop, Stop::Debug { .. }) && rip == CODE + 2;
    Ok(row(
        Mechanism::HostExitFirstAtSharedAddress,
        0,
        host_first,
        format!(
            "exit={} rip={rip:#x} dr6={}",
            stop.exit_number(),
            c_hex(dr6_of(&stop))
        ),
    ))
}

fn int3(kvm: &Kvm) -> Result<ProbeRow> {
    let mut vm = TinyVm::new(kvm, 0, false, &[0xcc, 0xf4])?;
    let (stop, rip) = vm.run()?;
    let failed = stop == Stop::InternalError;
    Ok(row(
        Mechanism::Int3Executes,
        0,
        !failed,
        format!(
            "exit={} rip={rip:#x}{}",
            stop.exit_number(),
            if failed { " (emulation failure)" } else { "" }
        ),
    ))
}

/// Iterations of `dec rcx; jnz` (2 instructions each). Small enough to take milliseconds here,
/// large enough that a native run is clearly faster than the threshold.
const SPEED_LOOPS: u32 = 200_000;
const NATIVE_MIPS: f64 = 500.0;

pub(super) fn native_speed(kvm: &Kvm) -> Result<ProbeRow> {
    let n = SPEED_LOOPS.to_le_bytes();
    // mov rcx, SPEED_LOOPS; 1: dec rcx; jnz 1b; hlt
    let code = [
        0x48, 0xc7, 0xc1, n[0], n[1], n[2], n[3], 0x48, 0xff, 0xc9, 0x75, 0xfb, 0xf4,
    ];
    let mut vm = TinyVm::new(kvm, 0, false, &code)?;
    let start = Instant::now();
    vm.run()?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let millions = 2.0 * f64::from(SPEED_LOOPS) / 1e6;
    let mips = millions / secs;
    Ok(row(
        Mechanism::NativeCpl0,
        0,
        mips > NATIVE_MIPS,
        format!("{millions:.1}M instructions in {secs:.3} s = {mips:.1} M instr/s"),
    ))
}
