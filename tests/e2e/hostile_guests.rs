//! Guests that push the VMM: a DR7 storm under host breakpoints, and vCPUs racing to the exit
//! port. Each run is bounded by the clock, so a hang fails instead of stalling the tests.

use std::time::Duration;

use crate::bounded::bounded;
use crate::common::{ensure, guest_number, read_events, temp_path, Failed, Trial};

const BOUND: Duration = Duration::from_secs(240);
const STORM: u64 = 2000;

/// The guest rewrites its DR7 2000 times while the host breaks on the two functions it calls,
/// one of them also the guest's own breakpoint on every other iteration: every owner gets
/// exactly its hits, each host hit numbered 1..=N once.
fn dr7_storm_keeps_exact_counts() -> Result<(), Failed> {
    let events = temp_path("storm.jsonl");
    let count = format!("count={STORM}");
    let args: Vec<String> = [
        "run",
        "--scenario",
        "dr7-storm",
        "--cmdline",
        &count,
        "--break",
        "drv_target_0",
        "--break",
        "drv_target_1",
        "--events",
        &events.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = bounded(&args, BOUND)?;
    let all = read_events(&events);
    let _ = std::fs::remove_file(&events);
    run.expect_code(0)?;
    let all = all?;
    let parts = ["scenario=dr7-storm", "other_db=0"];
    ensure(
        guest_number(&run, &parts, "guest_hits")? == STORM / 2
            && guest_number(&run, &parts, "expected")? == STORM / 2,
        || format!("the guest's own hits are off\n{run}"),
    )?;
    for label in ["drv_target_0", "drv_target_1"] {
        let counts: Vec<u64> = all
            .iter()
            .filter(|e| e["label"] == label)
            .filter_map(|e| e["count"].as_u64())
            .collect();
        ensure(
            counts.len() as u64 == STORM && counts.iter().zip(1..).all(|(c, i)| *c == i),
            || {
                format!(
                    "{label}: {} host hits, wanted {STORM} numbered 1..={STORM}",
                    counts.len()
                )
            },
        )?;
    }
    Ok(())
}

/// Every vCPU writes the exit port at once: the first exit wins, the others are ignored, and
/// nothing else is reported.
fn exit_race(vcpus: u32) -> Result<(), Failed> {
    let args: Vec<String> = [
        "run",
        "--scenario",
        "exit-race",
        "--vcpus",
        &vcpus.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for _ in 0..5 {
        let run = bounded(&args, BOUND)?;
        ensure((10..10 + vcpus as i32).contains(&run.code), || {
            format!(
                "exit code {}, wanted one vCPU's status 10..{}\n{run}",
                run.code,
                9 + vcpus
            )
        })?;
        ensure(run.stderr.trim().is_empty(), || {
            format!("drvisor reported something\n{run}")
        })?;
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "hostile_guests::dr7_storm_keeps_exact_counts",
            dr7_storm_keeps_exact_counts,
        ),
        Trial::test("hostile_guests::exit_race_2_vcpus", || exit_race(2)),
        Trial::test("hostile_guests::exit_race_4_vcpus", || exit_race(4)),
    ]
}
