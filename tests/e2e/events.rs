//! The event bus from the outside: every hit of a full-rate run reaches the `--events` file,
//! numbered, in order; a writer that falls behind makes the vCPUs wait and loses nothing; a
//! sink that cannot be written stops the run with its own exit code and keeps what was written.

use std::process::{Command, Stdio};

use crate::common::*;

/// `drvisor::exit_code::EVENTS_UNWRITABLE`.
const EVENTS_UNWRITABLE: i32 = 76;

fn hits(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["event"] == "hit").collect()
}

fn lost(events: &[serde_json::Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == "lost")
        .filter_map(|e| e["count"].as_u64())
        .sum()
}

/// Every event's `seq`, sorted; fails on a missing or repeated one.
fn sorted_seqs(events: &[&serde_json::Value]) -> Result<Vec<u64>, Failed> {
    let mut seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure(seqs.len() == events.len(), || "an event without seq".into())?;
    seqs.sort_unstable();
    let before = seqs.len();
    seqs.dedup();
    ensure(seqs.len() == before, || "a repeated seq".into())?;
    Ok(seqs)
}

const ALL_TARGETS: [&str; 8] = [
    "--break",
    "drv_target_0",
    "--break",
    "drv_target_1",
    "--break",
    "drv_target_2",
    "--break",
    "drv_target_3",
];

fn nothing_lost_at_full_hit_rate() -> Result<(), Failed> {
    // Four vCPUs hitting four breakpoints back to back: the highest rate this host produces.
    // 20000 hits, more than the writer's view holds (16384): the writer must keep up.
    let mut args = vec![
        "run",
        "--scenario",
        "smp",
        "--vcpus",
        "4",
        "--cmdline",
        "count=1250",
    ];
    args.extend(ALL_TARGETS);
    let (run, events) = drvisor_with_events(&args)?;
    run.expect_code(0)?;
    let hits = hits(&events);
    ensure(lost(&events) == 0, || format!("lost {}", lost(&events)))?;
    ensure(hits.len() == 20000, || {
        format!("{} hits, wanted 20000", hits.len())
    })?;
    // The bus numbers every event: the four breakpoints' `plan` events come first, then the
    // hits, and nothing in between is missing.
    let numbered: Vec<&serde_json::Value> = events.iter().collect();
    let seqs = sorted_seqs(&numbered)?;
    ensure(seqs == (1..=20004).collect::<Vec<_>>(), || {
        format!(
            "the events are not numbered 1..=20004 ({} events)",
            seqs.len()
        )
    })?;
    // In `seq` order: vCPUs that publish at once may queue their hits a place or two apart
    // from their numbers (the bus's documented contract), but nothing comes before the plan.
    let mut in_order = events.clone();
    in_order.sort_by_key(|e| e["seq"].as_u64());
    ensure(
        in_order[..4].iter().all(|e| e["event"] == "plan") && in_order[4]["event"] == "hit",
        || {
            let head: Vec<String> = in_order
                .iter()
                .take(8)
                .map(|e| format!("{} {} {}", e["seq"], e["event"], e["change"]))
                .collect();
            format!("the plan events do not come first: {head:?}")
        },
    )
}

/// A writer that cannot keep up (a view of 4 events, 20 ms asleep per batch) makes the vCPUs
/// wait for it: the file is the record, so it has every event, numbered 1..=N with no gap, in
/// `seq` order, and no `lost` line.
fn a_slow_writer_loses_nothing() -> Result<(), Failed> {
    let path = temp_path("slow-writer.jsonl");
    let mut cmd = Command::new(DRVISOR);
    cmd.args([
        "run",
        "--vcpus",
        "2",
        "--scenario",
        "smp",
        "--cmdline",
        "count=100",
    ])
    .args(ALL_TARGETS)
    .arg("--events")
    .arg(&path)
    .env("DRVISOR_EVENT_QUEUE", "4")
    .env("DRVISOR_EVENT_STALL_MS", "20");
    let run = run_command(&mut cmd);
    let events = read_events(&path);
    let _ = std::fs::remove_file(&path);
    let events = events?;
    run.expect_code(0)?;
    ensure(lost(&events) == 0, || {
        "the events file reports a loss".into()
    })?;
    // Four `plan` events (one per breakpoint), and a hit per call: 2 vCPUs x 100 x 4 targets.
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure(seqs == (1..=804).collect::<Vec<u64>>(), || {
        let out_of_place = seqs.iter().zip(1..).find(|(s, n)| **s != *n);
        format!(
            "{} events, not 1..=804 in order; first out of place: {out_of_place:?}",
            seqs.len()
        )
    })?;
    ensure(hits(&events).len() == 800, || {
        format!("{} hits, not 800", hits(&events).len())
    })?;
    // The run itself is unaffected: the guest's own counts are exact.
    run.summary().map(|_| ())
}

fn dev_full_stops_the_run() -> Result<(), Failed> {
    let mut args = vec![
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=100",
        "--events",
        "/dev/full",
    ];
    args.extend(ALL_TARGETS);
    let run = drvisor(&args);
    run.expect_code(EVENTS_UNWRITABLE)?;
    let said = run
        .stderr
        .matches("cannot write events to /dev/full")
        .count();
    ensure(said == 1, || format!("said {said} times\n{run}"))
}

fn closed_stderr_stops_the_run() -> Result<(), Failed> {
    // No --events: hits go to stderr, whose reader is gone (EPIPE).
    let mut child = Command::new(DRVISOR)
        .args(["run", "--scenario", "exec", "--cmdline", "count=100"])
        .args(ALL_TARGETS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    drop(child.stderr.take());
    let status = child.wait()?;
    ensure(status.code() == Some(EVENTS_UNWRITABLE), || {
        format!("{status:?}")
    })
}

fn written_events_stay_intact_when_the_disk_fills() -> Result<(), Failed> {
    // A file-size limit stands in for a full disk: writes past it fail with EFBIG. Every line
    // before the failure must be whole, and numbered from 1.
    let path = temp_path("limited.jsonl");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -f 8 && trap '' XFSZ && exec \"$@\"")
        .arg("sh")
        .arg(DRVISOR)
        .args(["run", "--scenario", "exec", "--cmdline", "count=500"])
        .args(ALL_TARGETS)
        .arg("--events")
        .arg(&path);
    let run = run_command(&mut cmd);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    run.expect_code(EVENTS_UNWRITABLE)?;
    let whole: Vec<serde_json::Value> = text
        .lines()
        .map_while(|l| serde_json::from_str(l).ok())
        .collect();
    ensure(!whole.is_empty(), || "nothing written".into())?;
    for (i, e) in whole.iter().enumerate() {
        ensure(e["seq"] == i as u64 + 1, || format!("line {i}: {e}"))?;
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut trials = vec![
        Trial::test(
            "events::nothing_lost_at_full_hit_rate",
            nothing_lost_at_full_hit_rate,
        ),
        Trial::test(
            "events::a_slow_writer_loses_nothing",
            a_slow_writer_loses_nothing,
        ),
        Trial::test(
            "events::closed_stderr_stops_the_run",
            closed_stderr_stops_the_run,
        ),
        Trial::test(
            "events::written_events_stay_intact_when_the_disk_fills",
            written_events_stay_intact_when_the_disk_fills,
        ),
    ];
    if std::path::Path::new("/dev/full").exists() {
        trials.push(Trial::test(
            "events::dev_full_stops_the_run",
            dev_full_stops_the_run,
        ));
    } else {
        trials.push(skipped(
            "events::dev_full_stops_the_run",
            "this machine has no /dev/full",
        ));
    }
    trials
}
