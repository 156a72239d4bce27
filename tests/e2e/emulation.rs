//! Exec breakpoints resumed by emulation, on real KVM, with exact counts on every path: each
//! instruction of the `kfunc` scenario's kernel-like prologue (`endbr64`, the 5-byte NOP,
//! `push %rbp`, `mov %rsp,%rbp`, `sub $imm,%rsp`) and the `lock inc` that falls back to the
//! step-over; on 1 and 4 vCPUs; with no guest breakpoints, with the guest's own on every
//! function's entry, and with them on every function's `lock inc`.
//!
//! `--show-plan` ends with `exec breakpoints resumed: emulated=E stepped=S rf=R`, so each case
//! also pins which path resumed the hits. On a host that honours RF every hit is resumed with
//! RF instead, and the cases check only the counts.

use crate::common::*;

const COUNT: u64 = 30;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Endbr,
    Nop5,
    Push,
    Mov,
    Sub,
    LockInc,
}

impl Path {
    const ALL: [Path; 6] = [
        Path::Endbr,
        Path::Nop5,
        Path::Push,
        Path::Mov,
        Path::Sub,
        Path::LockInc,
    ];

    /// The breakpoint: each path on a different function, so the guest's slots (one per
    /// function) meet every combination.
    fn symbol(self) -> &'static str {
        match self {
            Path::Endbr => "drv_kfunc_0",
            Path::Nop5 => "drv_kfunc_1_nop5",
            Path::Push => "drv_kfunc_2_push",
            Path::Mov => "drv_kfunc_3_mov",
            Path::Sub => "drv_kfunc_0_sub",
            Path::LockInc => "drv_kfunc_1_inc",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Guest {
    /// `slots=`: the guest arms nothing.
    None,
    /// The guest breaks on every function's entry (its `endbr64`).
    Entry,
    /// The guest breaks on every function's `lock inc`.
    Inc,
}

/// The resumes expected for `hits` host hits, as (emulated, stepped); `None` where this host
/// may take either path (checked: they add up to the hits).
fn expected(path: Path, guest: Guest, hits: u64) -> Option<(u64, u64)> {
    let emulable = path != Path::LockInc;
    let shares_address = matches!(
        (path, guest),
        (Path::Endbr, Guest::Entry) | (Path::LockInc, Guest::Inc)
    );
    if shares_address {
        // The guest's breakpoint must fire first: step over, and the guest's return with RF=1
        // exits once more and is stepped over again without a report.
        return Some((0, 2 * hits));
    }
    if path == Path::Nop5 && guest == Guest::Entry {
        // The instruction right after a guest breakpoint: this project's hosts leave RF set
        // for it after the guest's iretq, so it is stepped; hardware clears RF and emulates.
        return None;
    }
    Some(if emulable { (hits, 0) } else { (0, hits) })
}

fn resumes(run: &Run) -> Result<(u64, u64, u64), Failed> {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("drvisor: exec breakpoints resumed:"))
        .ok_or_else(|| format!("no resumes line\n{run}"))?;
    let num = |k: &str| -> Result<u64, Failed> {
        Ok(field(line, k).ok_or(format!("no {k} in {line}"))?.parse()?)
    };
    Ok((num("emulated")?, num("stepped")?, num("rf")?))
}

/// `native`: the host checks the guest's breakpoints apart from the host's. Elsewhere (VMX/SVM)
/// the guest's slots take physical slots, so the guest uses three and leaves one to the host's
/// breakpoint; with four, host-first would rightly leave one pending.
fn case(path: Path, vcpus: u64, guest: Guest, native: bool) -> Result<(), Failed> {
    let slots = if native { "0,1,2,3" } else { "0,1,2" };
    let guest_slots = if native { 0..4 } else { 0..3 };
    let cmdline = match guest {
        Guest::None => format!("count={COUNT} slots="),
        Guest::Entry => format!("count={COUNT} gbp=entry slots={slots}"),
        Guest::Inc => format!("count={COUNT} gbp=inc slots={slots}"),
    };
    let vcpus_arg = vcpus.to_string();
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "kfunc",
        "--vcpus",
        &vcpus_arg,
        "--cmdline",
        &cmdline,
        "--break",
        path.symbol(),
        "--show-plan",
    ])?;
    // Status 0: every function ran ncpus*count times and every guest slot saw exactly as many
    // #DBs, none stray.
    run.expect_code(0)?;
    let hits: Vec<_> = events.iter().filter(|e| e["event"] == "hit").collect();
    let total = vcpus * COUNT;
    ensure(hits.len() as u64 == total, || {
        format!("{} host hits, wanted {total}\n{run}", hits.len())
    })?;
    for cpu in 0..vcpus {
        let n = hits.iter().filter(|e| e["vcpu"] == cpu).count() as u64;
        ensure(n == COUNT, || format!("vCPU {cpu}: {n} host hits"))?;
    }
    if guest != Guest::None {
        for slot in guest_slots {
            let h = guest_number(&run, &["scenario=kfunc", &format!("slot={slot}")], "hits")?;
            ensure(h == total, || format!("guest slot {slot}: {h} hits"))?;
        }
    }
    let (emulated, stepped, rf) = resumes(&run)?;
    if rf > 0 {
        return ensure(rf >= total && emulated == 0, || {
            format!("rf={rf} emulated={emulated} stepped={stepped}")
        });
    }
    match expected(path, guest, total) {
        Some(want) => ensure((emulated, stepped) == want, || {
            format!("emulated={emulated} stepped={stepped}, wanted {want:?}")
        }),
        None => ensure(emulated + stepped == total, || {
            format!("emulated={emulated} + stepped={stepped} != {total}")
        }),
    }
}

pub fn trials(ctx: &crate::common::Context) -> Vec<Trial> {
    let native = ctx.probe.delivers(
        drvisor::probe::Mechanism::GuestBreakpointLiveUnderHostDebug,
        0,
    );
    let mut trials = Vec::new();
    for path in Path::ALL {
        for vcpus in [1, 4] {
            for guest in [Guest::None, Guest::Entry, Guest::Inc] {
                let name =
                    format!("emulation::{path:?}_{vcpus}_vcpus_guest_{guest:?}").to_lowercase();
                if native && vcpus > 1 && guest == Guest::Inc {
                    trials.push(crate::common::skipped(
                        &name,
                        "this host's KVM delivers the guest's own breakpoint on a `lock inc` twice \
                         now and then on SMP, with no host debugging at all (drvisor run --scenario \
                         kfunc --vcpus 4 --cmdline gbp=inc, no --break: slot counts of 481-483 for \
                         480 calls), so the guest's count cannot be exact here; it runs on VMX/SVM \
                         (tests/nested-svm/run-e2e.sh), and the 1-vCPU case runs here",
                    ));
                    continue;
                }
                trials.push(Trial::test(name, move || case(path, vcpus, guest, native)));
            }
        }
    }
    trials
}
