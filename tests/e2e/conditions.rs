//! Breakpoint conditions on real KVM with the test guest: evaluated in the VMM at each hit,
//! only hits at which the condition holds are reported and act; the same for every client.
//!
//! `exec` calls `drv_target_0..3` `count` times each; `args` calls `drv_target_arg(i, &cell)`
//! for i = 1..=count with RDI = i and RSI pointing at a u64 holding 3 * i.

use std::process::Command;

use drvisor::exit_code;
use drvisor_api::rest::NewBreakpoint;
use drvisor_api::HitAction;

use crate::common::{
    drvisor, drvisor_with_events, drvisor_with_hits, ensure, hits_only, Failed, Trial, DRVISOR,
};
use crate::rest_api::Served;

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("conditions::every_tenth_hit", every_tenth_hit),
        Trial::test("conditions::on_a_register", on_a_register),
        Trial::test("conditions::on_memory", on_memory),
        Trial::test(
            "conditions::a_fault_is_false_and_told",
            a_fault_is_false_and_told,
        ),
        Trial::test(
            "conditions::false_never_pauses_true_stops",
            false_never_pauses_true_stops,
        ),
        Trial::test("conditions::bad_condition_is_usage", bad_condition_is_usage),
        Trial::test("conditions::rest_and_ctl", rest_and_ctl),
        Trial::test("conditions::ci_spec_if", ci_spec_if),
    ]
}

fn rdi(hit: &serde_json::Value) -> u64 {
    hit["regs"]["rdi"].as_u64().unwrap_or(u64::MAX)
}

/// `hits % 10 == 0` on one of two breakpoints: 10 of 100 hits reported, the 10th, 20th, ...;
/// the `--if` binds to the `--break` before it only; the summary says how often it held.
fn every_tenth_hit() -> Result<(), Failed> {
    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=100",
        "--break",
        "drv_target_0",
        "--if",
        "hits % 10 == 0",
        "--break",
        "drv_target_1",
    ])?;
    run.expect_code(0)?;
    let tenth: Vec<u64> = hits
        .iter()
        .filter(|h| h["label"] == "drv_target_0")
        .map(|h| h["count"].as_u64().unwrap_or(0))
        .collect();
    ensure(
        tenth == (1..=10).map(|k| 10 * k).collect::<Vec<u64>>(),
        || format!("drv_target_0's reported hit counts: {tenth:?}\n{run}"),
    )?;
    let every = hits.iter().filter(|h| h["label"] == "drv_target_1").count();
    ensure(every == 100, || {
        format!("drv_target_1: {every} hits, wanted 100")
    })?;
    ensure(
        run.stderr
            .contains("100 hits, 10 where `hits % 10 == 0` held"),
        || format!("the summary does not count matches\n{run}"),
    )
}

/// `rdi % 7 == 0` on the argument: exactly the 14 calls with i = 7, 14, ..., 98.
fn on_a_register() -> Result<(), Failed> {
    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "args",
        "--cmdline",
        "count=100",
        "--break",
        "drv_target_arg",
        "--if",
        "rdi % 7 == 0",
    ])?;
    run.expect_code(0)?;
    let got: Vec<u64> = hits.iter().map(rdi).collect();
    ensure(got == (1..=14).map(|k| 7 * k).collect::<Vec<u64>>(), || {
        format!("rdi at the reported hits: {got:?}\n{run}")
    })
}

/// Memory read through the guest's page tables at the hit: `*(u64 *)rsi` is 3 * i. One
/// condition holds at exactly one call, another (with && and a 32-bit register) at 25.
fn on_memory() -> Result<(), Failed> {
    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "args",
        "--cmdline",
        "count=100",
        "--break",
        "drv_target_arg",
        "--if",
        "*(u64 *)rsi == 30",
    ])?;
    run.expect_code(0)?;
    let got: Vec<u64> = hits.iter().map(rdi).collect();
    ensure(got == [10], || {
        format!("wanted only i = 10: {got:?}\n{run}")
    })?;

    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "args",
        "--cmdline",
        "count=100",
        "--break",
        "drv_target_arg",
        "--if",
        "*(u32 *)(rsi) % 2 == 0 && edi > 50",
    ])?;
    run.expect_code(0)?;
    let got: Vec<u64> = hits.iter().map(rdi).collect();
    ensure(
        got == (26..=50).map(|k| 2 * k).collect::<Vec<u64>>(),
        || format!("wanted the even i above 50: {got:?}\n{run}"),
    )
}

/// A read of an address no page table maps: the condition is false at every hit, nothing is
/// reported, the run goes on, and the fault is told once and counted.
fn a_fault_is_false_and_told() -> Result<(), Failed> {
    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "args",
        "--cmdline",
        "count=5",
        "--break",
        "drv_target_arg",
        "--if",
        "*(u8 *)0x7ff0000000000000 == 0 || 1",
    ])?;
    run.expect_code(0)?;
    ensure(hits.is_empty(), || format!("{} hits reported", hits.len()))?;
    let told = run.stderr.matches("could not be evaluated").count();
    // Once as the warning at the first fault, once in the summary.
    ensure(told == 2, || format!("told {told} times\n{run}"))?;
    ensure(
        run.stderr.contains("5 hits, 0 where")
            && run.stderr.contains("5 where it could not be evaluated"),
        || format!("the summary does not count the faults\n{run}"),
    )
}

/// A `pause` breakpoint whose condition is never true never pauses: the run ends by itself,
/// with no `paused` state. A `stop` one ends the run at the first hit where it holds.
fn false_never_pauses_true_stops() -> Result<(), Failed> {
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "args",
        "--cmdline",
        "count=20",
        "--break",
        "drv_target_arg",
        "--action",
        "pause",
        "--if",
        "rdi == 0",
    ])?;
    run.expect_code(0)?;
    let paused = events.iter().filter(|e| e["state"] == "paused").count();
    let hits = hits_only(events).len();
    ensure(paused == 0 && hits == 0, || {
        format!("{paused} pauses, {hits} hits\n{run}")
    })?;
    ensure(run.stderr.contains("20 hits, 0 where"), || run.to_string())?;

    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "args",
        "--cmdline",
        "count=20",
        "--break",
        "drv_target_arg",
        "--action",
        "stop",
        "--if",
        "rdi == 5",
    ])?;
    run.expect_code(exit_code::HOST_STOP.into())?;
    ensure(hits.len() == 1 && rdi(&hits[0]) == 5, || {
        format!("{hits:?}\n{run}")
    })
}

/// A mistake in `--if` is the user's: exit code 2, the column and what was expected; one on
/// the current task is refused on a guest without a task layout.
fn bad_condition_is_usage() -> Result<(), Failed> {
    let run = drvisor(&["run", "--break", "drv_target_0", "--if", "rdi =="]);
    run.expect_code(exit_code::USAGE.into())?;
    ensure(
        run.stderr
            .contains("--if 'rdi ==': expected an expression after '==', found the end of the condition at column 7"),
        || run.to_string(),
    )?;
    let run = drvisor(&["run", "--if", "rdi == 1", "--break", "drv_target_0"]);
    run.expect_code(exit_code::USAGE.into())?;
    ensure(run.stderr.contains("--if must follow"), || run.to_string())?;
    let run = drvisor(&[
        "run",
        "--scenario",
        "exec",
        "--break",
        "drv_target_0",
        "--if",
        "comm == \"init\"",
    ]);
    ensure(
        run.code != 0
            && run
                .stderr
                .contains("need a Linux guest whose image has BTF"),
        || run.to_string(),
    )
}

/// REST: a bad condition is a 422 `bad-condition` with the column; a good one is shown in
/// the breakpoint's view and only its hits are streamed. `drvisor ctl break add --if` too.
fn rest_and_ctl() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "args", "--cmdline", "count=40"])?;
    let result = (|| -> Result<(), Failed> {
        let c = &served.client;
        let bad = c
            .add_breakpoint(&NewBreakpoint {
                location: "drv_target_arg".into(),
                vcpu: None,
                action: HitAction::Continue,
                capture: None,
                condition: Some("rdi == (1".into()),
            })
            .err()
            .ok_or("a bad condition was accepted")?;
        ensure(
            bad.status() == Some(422)
                && bad.code() == Some("bad-condition")
                && bad.to_string().contains("column 10"),
            || format!("bad condition: {bad}"),
        )?;
        let task = c
            .add_breakpoint(&NewBreakpoint {
                location: "drv_target_arg".into(),
                vcpu: None,
                action: HitAction::Continue,
                capture: None,
                condition: Some("pid == 1".into()),
            })
            .err()
            .ok_or("a task condition was accepted without a task layout")?;
        ensure(
            task.status() == Some(422) && task.code() == Some("condition-needs-task-layout"),
            || format!("task condition: {task}"),
        )?;
        let bp = c.add_breakpoint(&NewBreakpoint {
            location: "drv_target_arg".into(),
            vcpu: None,
            action: HitAction::Continue,
            capture: None,
            condition: Some("rdi > 30".into()),
        })?;
        ensure(
            bp.condition.as_deref() == Some("rdi > 30") && bp.matched == Some(0),
            || format!("the view: {bp:?}"),
        )?;
        let sock = served.sock.to_str().unwrap_or_default().to_owned();
        let out = Command::new(DRVISOR)
            .args(["ctl", "--sock", &sock, "break", "add", "drv_target_arg"])
            .args(["--if", "rdi == 7 || rdi == 8"])
            .output()?;
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure(
            out.status.success() && shown.contains("\"condition\": \"rdi == 7 || rdi == 8\""),
            || {
                format!(
                    "ctl break add --if: {shown}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            },
        )?;
        let out = Command::new(DRVISOR)
            .args(["ctl", "--sock", &sock, "break", "add", "drv_target_arg"])
            .args(["--if", "rdi ="])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure(
            !out.status.success() && err.contains("bad-condition"),
            || format!("ctl with a bad condition: {err}"),
        )?;
        c.resume()?;
        Ok(())
    })();
    if let Err(e) = result {
        return Err(served.explain(e));
    }
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let events = crate::common::read_events(&served.events)?;
    let hits = hits_only(events);
    let of = |id: u64| -> Vec<u64> { hits.iter().filter(|h| h["id"] == id).map(rdi).collect() };
    ensure(of(1) == (31..=40).collect::<Vec<u64>>(), || {
        format!("rdi > 30: {:?}", of(1))
    })?;
    ensure(of(2) == [7, 8], || {
        format!("ctl's rdi == 7 || rdi == 8: {:?}", of(2))
    })
}

/// A CI spec's `if`: the check counts only the hits where it holds (14 of 100 calls pass
/// `hits = 14`; a wrong count fails), and a condition with a mistake is a spec error (exit 2)
/// with its column, before anything runs.
fn ci_spec_if() -> Result<(), Failed> {
    let dir = crate::common::temp_path("cond-specs");
    std::fs::create_dir_all(&dir)?;
    let spec = |name: &str, hits: u32, condition: &str| -> Result<String, Failed> {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[vm]\nscenario = \"args\"\ncmdline = \"count=100\"\n\
                 [[check]]\nname = \"sevens\"\nbreak = \"drv_target_arg\"\n\
                 if = \"{condition}\"\nhits = {hits}\n"
            ),
        )?;
        Ok(path.display().to_string())
    };
    let good = spec("good.toml", 14, "rdi % 7 == 0")?;
    let run = drvisor(&["ci", &good]);
    run.expect_code(0)?;
    let wrong = spec("wrong.toml", 15, "rdi % 7 == 0")?;
    let run = drvisor(&["ci", &wrong]);
    ensure(run.code == 1, || format!("a wrong count passed\n{run}"))?;
    let bad = spec("bad.toml", 14, "rdi % == 0")?;
    let run = drvisor(&["ci", &bad]);
    run.expect_code(2)?;
    ensure(
        run.stdout.contains(
            "check `sevens`: if = \"rdi % == 0\": expected an expression, found '==' at column 7",
        ),
        || format!("the bad condition is not told as a spec error\n{run}"),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
