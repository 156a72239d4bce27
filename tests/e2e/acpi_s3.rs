//! ACPI S3 in a real VM, with the test guest's `s3` scenario: it arms a breakpoint of its own,
//! puts its real-mode resume code in the FACS's waking vector, sets the CMOS alarm to fire at
//! every update, and sleeps. The resume code checks what the wake left: the guest's DR7 and DR0
//! at their reset values (the debug engine's reset), CR0 at its reset value, the local APIC
//! back in xAPIC mode (the guest turns x2APIC on before it sleeps, where it can), `PM1_STS` =
//! `WAK_STS | RTC_STS`, and no instruction run after the sleep request; with `vector=x` the
//! same in 32-bit code at `X_Firmware_Waking_Vector`. Without `RTC_EN` nothing wakes it, and
//! drvisor says so.

use std::time::Duration;

use drvisor::debug::DebugCaps;
use drvisor::probe::Mechanism;

use crate::common::{
    drvisor, ensure, hits_only, read_events, skipped, temp_path, Context, Failed, Trial, DRVISOR,
};
use crate::kvm_unit_tests::run_watched;

/// The scenario's status when every check holds (0x20; each failed check adds a bit).
const ALL_RESET: i32 = 0x20;

/// The guest wakes at its waking vector (0300:0000, real mode), reset, with nothing run after
/// its sleep request.
fn wakes_reset_at_the_waking_vector() -> Result<(), Failed> {
    let run = drvisor(&["run", "--scenario", "s3"]);
    run.expect_code(ALL_RESET)?;
    ensure(
        run.guest_lines(&["s3", "resumed", "mode=16"]).len() == 1,
        || run.to_string(),
    )?;
    ensure(run.guest_lines(&["s3", "sleeping"]).len() == 1, || {
        run.to_string()
    })
}

/// A host breakpoint placed at the waking vector before the run fires once, after the wake, on
/// the boot vCPU in its reset state at 0300:0000: it stayed armed through the vCPU's reset, and
/// the wake went on to the same checks.
fn a_host_breakpoint_at_the_waking_vector_fires_after_the_reset() -> Result<(), Failed> {
    let events = temp_path("s3-events.jsonl");
    let ev = events.to_str().unwrap_or_default();
    let run = drvisor(&[
        "run",
        "--scenario",
        "s3",
        "--break",
        "0x3000",
        "--events",
        ev,
    ]);
    let hits = hits_only(read_events(&events)?);
    let _ = std::fs::remove_file(&events);
    run.expect_code(ALL_RESET)?;
    ensure(
        run.guest_lines(&["s3", "resumed", "mode=16"]).len() == 1,
        || run.to_string(),
    )?;
    ensure(hits.len() == 1, || {
        format!("wanted one hit at 0x3000: {hits:?}\n{run}")
    })?;
    let hit = &hits[0];
    // Linear 0x3000 at IP 0: CS 0x300, real mode; RFLAGS as at reset.
    ensure(
        hit["addr"] == 0x3000 && hit["regs"]["rip"] == 0 && hit["regs"]["rflags"] == 2,
        || format!("not the boot vCPU at reset at 0300:0000: {hit}"),
    )
}

/// A guest that sets `X_Firmware_Waking_Vector` resumes there, in flat 32-bit protected mode
/// with paging off, and finds the same reset otherwise; on two vCPUs, so the AP's reset (to
/// wait for SIPI) runs too.
fn the_x_vector_wins_in_protected_mode() -> Result<(), Failed> {
    let run = drvisor(&[
        "run",
        "--scenario",
        "s3",
        "--vcpus",
        "2",
        "--cmdline",
        "vector=x",
    ]);
    run.expect_code(ALL_RESET)?;
    ensure(
        run.guest_lines(&["s3", "resumed", "mode=32"]).len() == 1,
        || run.to_string(),
    )
}

/// With `PM1_EN.RTC_EN` clear the alarm (every second) does not wake the guest: it sleeps until
/// the run is stopped, and drvisor's warning says why.
fn without_a_wake_event_it_sleeps_and_says_so() -> Result<(), Failed> {
    let args: Vec<String> = ["run", "--scenario", "s3", "--cmdline", "wake=none"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Four alarms' worth: each would have woken it, were RTC_EN ignored.
    let run = run_watched(
        DRVISOR,
        &args,
        Duration::from_secs(4),
        |_| false,
        Duration::ZERO,
    );
    let context = || format!("status {:?}\n{}{}", run.status, run.stdout, run.stderr);
    ensure(run.status.is_none(), || {
        format!("the run ended by itself: {}", context())
    })?;
    ensure(run.stdout.contains("drv: s3 sleeping"), context)?;
    ensure(!run.stdout.contains("summary"), context)?;
    ensure(
        run.stderr.contains("no wake event enabled in PM1_EN"),
        context,
    )
}

/// Why a host breakpoint in the real-mode code at the waking vector (CS 0x300 or 0x100: a
/// segment base that is not 0) is not run on this host, if it is not. On SVM under an emulator,
/// which can only be QEMU's TCG (the nested SVM host; the nested VMX host's Bochs is Intel), it
/// would end the outer QEMU: TCG stops at the breakpoint's linear address, but its #DB check
/// then compares DR0-3 with EIP alone, finds no breakpoint there, and hands the stop to its gdb
/// stub, which with no gdb attached segfaults (QEMU 7.2 and 10.0;
/// `tests/nested-svm/tcg-segment-breakpoint.sh` shows it with a boot sector and no KVM at all).
/// With flat segments (a base of 0) EIP is the linear address and every other host breakpoint
/// test runs there.
pub fn real_mode_breakpoint_not_run_here(ctx: &Context) -> Option<&'static str> {
    let pvm = DebugCaps::from_probe(&ctx.probe) == DebugCaps::pvm_like();
    let native = ctx.probe.delivers(Mechanism::NativeCpl0, 0);
    (!pvm && !native && !cpu_is_intel()).then_some(
        "a host breakpoint in real-mode code with a CS base other than 0 would crash the outer \
         QEMU of a KVM nested under TCG (the nested SVM host): TCG matches DR0-3 against EIP, \
         not the linear address, and hands the unmatched stop to its gdb stub, which segfaults \
         (tests/nested-svm/tcg-segment-breakpoint.sh shows it without KVM); the wake itself \
         runs here",
    )
}

/// Whether the CPU these tests run on is Intel's (VMX) rather than AMD's (SVM): the nested
/// hosts' emulated CPUs say which they are (Bochs' Haswell, QEMU's `-cpu max` AMD).
fn cpu_is_intel() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let mut trials = Vec::new();
    type Check = fn() -> Result<(), Failed>;
    let wakes: [(&str, Check); 2] = [
        (
            "acpi_s3::wakes_reset_at_the_waking_vector",
            wakes_reset_at_the_waking_vector,
        ),
        (
            "acpi_s3::the_x_vector_wins_in_protected_mode",
            the_x_vector_wins_in_protected_mode,
        ),
    ];
    for (name, test) in wakes {
        trials.push(Trial::test(name, test));
    }
    let name = "acpi_s3::a_host_breakpoint_at_the_waking_vector_fires_after_the_reset";
    trials.push(match real_mode_breakpoint_not_run_here(ctx) {
        Some(why) => skipped(name, why),
        None => Trial::test(
            name,
            a_host_breakpoint_at_the_waking_vector_fires_after_the_reset,
        ),
    });
    trials.push(Trial::test(
        "acpi_s3::without_a_wake_event_it_sleeps_and_says_so",
        without_a_wake_event_it_sleeps_and_says_so,
    ));
    trials
}
