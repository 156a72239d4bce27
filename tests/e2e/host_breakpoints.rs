//! Host breakpoints on real KVM with the test guest: every physical slot, symbols and
//! addresses, the actions, SMP, and refusals of what this host cannot deliver.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drvisor::exit_code;
use drvisor::probe::Mechanism;
use drvisor::symbols::SymbolTable;
use serde_json::json;

use crate::common::{
    count_events, drvisor, drvisor_with_hits, ensure, hits_only, hits_so_far, read_events, refused,
    skipped, temp_path, Context, Failed, Trial, DRVISOR,
};

const TARGETS: [&str; 4] = [
    "drv_target_0",
    "drv_target_1",
    "drv_target_2",
    "drv_target_3",
];

fn exec_in_each_physical_slot() -> Result<(), Failed> {
    let (run, events) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=37",
        "--break",
        TARGETS[0],
        "--break",
        TARGETS[1],
        "--break",
        TARGETS[2],
        "--break",
        TARGETS[3],
    ])?;
    run.expect_code(0)?;
    let mut slots = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let hits: Vec<&serde_json::Value> = events.iter().filter(|e| e["label"] == *t).collect();
        ensure(hits.len() == 37, || {
            format!("{t}: {} hits, wanted 37", hits.len())
        })?;
        let slot = hits[0]["slot"].as_u64().unwrap_or(99);
        ensure(hits.iter().all(|e| e["slot"] == slot), || {
            format!("{t} moved slots")
        })?;
        ensure(
            hits.iter()
                .all(|e| e["kind"] == "exec" && e["rip"] == e["addr"]),
            || format!("{t}: exec hits report RIP at the instruction"),
        )?;
        ensure(slot == 3 - i as u64, || {
            format!(
                "{t} in DR{slot}, wanted DR{} (host slots fill from the top)",
                3 - i
            )
        })?;
        slots.push(slot);
    }
    slots.sort();
    ensure(slots == [0, 1, 2, 3], || format!("slots {slots:?}"))
}

fn by_address() -> Result<(), Failed> {
    let symbols = SymbolTable::from_elf(drvisor::guest_image::ELF);
    let addr = symbols.resolve("drv_target_1")?;
    let hex = format!("{addr:#x}");
    let (run, events) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=11",
        "--break",
        &hex,
    ])?;
    run.expect_code(0)?;
    ensure(
        events.len() == 11 && events.iter().all(|e| e["addr"] == addr),
        || format!("{} events at {hex}", events.len()),
    )
}

fn by_system_map() -> Result<(), Failed> {
    let symbols = SymbolTable::from_elf(drvisor::guest_image::ELF);
    let addr = symbols.resolve("drv_target_2")?;
    let map = temp_path("System.map");
    std::fs::write(&map, format!("{addr:016x} T my_renamed_target\n"))?;
    let (run, events) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=5",
        "--symbols",
        map.to_str().unwrap_or_default(),
        "--break",
        "my_renamed_target",
    ])?;
    let _ = std::fs::remove_file(&map);
    run.expect_code(0)?;
    ensure(events.len() == 5, || format!("{} events", events.len()))
}

/// `--capture 32` puts 32 bytes of the stack from RSP into each hit event, read through the
/// guest's page tables: at the first instruction of `drv_target_1` the first quadword is the
/// return address, inside the function that called it.
fn capture_records_the_stack() -> Result<(), Failed> {
    let (run, hits) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--cmdline",
        "count=3",
        "--break",
        "drv_target_1",
        "--capture",
        "32",
    ])?;
    run.expect_code(0)?;
    let symbols = drvisor::symbols::SymbolTable::from_elf(drvisor::guest_image::ELF);
    ensure(hits.len() == 3, || format!("{} hits", hits.len()))?;
    for hit in &hits {
        let stack = &hit["stack"];
        let bytes = stack["bytes"].as_str().unwrap_or_default();
        ensure(
            stack["addr"] == hit["regs"]["rsp"] && bytes.len() == 64,
            || format!("not 32 bytes at rsp: {hit}"),
        )?;
        let ret = (0..8)
            .map(|i| u64::from_str_radix(&bytes[2 * i..2 * i + 2], 16).unwrap_or(0) << (8 * i))
            .sum::<u64>();
        let caller = symbols
            .describe(ret)
            .map(|(name, _)| name)
            .unwrap_or_default();
        // The mangled name: `_ZN13drvisor_guest7targets9exec_loop17h...E`.
        ensure(caller.contains("9exec_loop17h"), || {
            format!("the return address {ret:#x} is in `{caller}`, not exec_loop")
        })?;
    }
    Ok(())
}

fn unknown_symbol_suggests_names() -> Result<(), Failed> {
    let run = drvisor(&["run", "--break", "drv_target_9"]);
    run.expect_code(2)?;
    ensure(
        run.stderr
            .contains("unknown symbol `drv_target_9`; did you mean drv_target_0"),
        || run.to_string(),
    )
}

fn bad_breakpoint_inputs() -> Result<(), Failed> {
    for (args, needle) in [
        (
            vec!["--watch", "drv_watch_u32:w:0"],
            "positive number of bytes",
        ),
        (vec!["--watch", "drv_watch_u32:x"], "neither an access"),
        (vec!["--watch", "nosuchvar:w:4"], "unknown symbol"),
        (
            vec!["--watch", "drv_watch_u32", "--engine", "warp"],
            "use one of: hw, page, auto",
        ),
        (
            vec!["--break", "drv_target_0", "--engine", "page"],
            "--watch only",
        ),
        (vec!["--break", "0x0000800000000000"], "canonical"),
        (vec!["--break", "12zz"], "not a valid address"),
        (
            vec!["--vcpu", "0", "--break", "drv_target_0"],
            "must follow",
        ),
        (vec!["--break", "drv_target_0", "--vcpu", "5"], "vcpu"),
        (
            vec!["--break", "drv_target_0", "--action", "explode"],
            "use one of: continue, pause, stop",
        ),
        (vec!["--policy", "fair"], "policy"),
    ] {
        refused("hello", &args, needle)?;
    }
    Ok(())
}

fn stop_action() -> Result<(), Failed> {
    let (run, events) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "exec",
        "--break",
        "drv_target_2",
        "--action",
        "stop",
    ])?;
    run.expect_code(exit_code::HOST_STOP.into())?;
    ensure(events.len() == 1 && events[0]["action"] == "stop", || {
        format!("{events:?}")
    })?;
    ensure(
        run.stderr
            .contains("host breakpoint 1 (drv_target_2) stopped the run on vCPU 0 at rip=0x"),
        || run.to_string(),
    )?;
    ensure(run.guest_lines(&["drv:", "summary"]).is_empty(), || {
        "the guest went on after stop".into()
    })
}

/// Each hit pauses the whole VM, says so on stderr, and SIGUSR1 resumes it. While paused the
/// guest makes no progress: at no point are there more hits than resumes plus the one that
/// paused (a pause that did not hold would let the guest run ahead to its next hit, however
/// fast or slow this host is).
fn pause_action() -> Result<(), Failed> {
    let events_path = temp_path("pause-events.jsonl");
    let mut child = Command::new(DRVISOR)
        .args([
            "run",
            "--scenario",
            "exec",
            "--cmdline",
            "count=3",
            "--break",
            "drv_target_1",
            "--action",
            "pause",
            "--events",
        ])
        .arg(&events_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resumed = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("timed out".into());
        }
        let seen = hits_so_far(&events_path)?;
        ensure(seen <= resumed + 1, || {
            format!("{seen} hits after {resumed} resumes: the guest ran on while paused")
        })?;
        // Resumed once the pause is taken (its `state` event, which the gate writes only
        // then): a resume that came before would cancel the pause instead, by design.
        let paused = std::fs::read_to_string(&events_path)
            .unwrap_or_default()
            .matches(r#""state":"paused""#)
            .count();
        if paused == resumed + 1 {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
            resumed = paused;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    let events = read_events(&events_path);
    let _ = std::fs::remove_file(&events_path);
    let events = events?;
    ensure(status.code() == Some(0), || format!("exit {status:?}"))?;
    let hits = hits_only(events.clone());
    ensure(hits.len() == 3 && resumed == 3, || {
        format!("{} hits, {resumed} resumes", hits.len())
    })?;
    // The bus tells each pause and resume in the order the vCPU gate took them: after the
    // plan, every hit is followed by its pause, and every pause by the resume that ended it.
    let story: Vec<String> = events
        .iter()
        .map(|e| match e["event"].as_str() {
            Some("state") => format!("{} ({})", e["state"], e["reason"]),
            other => other.unwrap_or_default().to_owned(),
        })
        .collect();
    let mut wanted = vec!["plan".to_owned()];
    for _ in 1..=3 {
        wanted.push("hit".into());
        wanted.push(r#""paused" ("hit #1 on vCPU 0")"#.into());
        wanted.push(r#""running" ("signal")"#.into());
    }
    ensure(story == wanted, || format!("events: {story:?}"))?;
    let pauses = stderr
        .lines()
        .filter(|l| {
            l.starts_with("drvisor: paused: host breakpoint #1 drv_target_1 hit #")
                && l.ends_with(&format!("`kill -USR1 {}` resumes", child.id()))
        })
        .count();
    ensure(pauses == 3, || {
        format!("wanted 3 pause messages naming the breakpoint and the resume\n{stderr}")
    })
}

fn smp_exact_counts(vcpus: &'static str) -> Trial {
    Trial::test(
        format!("host_bp::smp_exact_counts_{vcpus}_vcpus"),
        move || {
            let (run, events) = drvisor_with_hits(&[
                "run",
                "--scenario",
                "smp",
                "--vcpus",
                vcpus,
                "--cmdline",
                "count=30",
                "--break",
                "drv_target_0",
                "--break",
                "drv_target_3",
            ])?;
            run.expect_code(0)?;
            let n: u64 = vcpus.parse()?;
            for cpu in 0..n {
                for t in ["drv_target_0", "drv_target_3"] {
                    let hits = events
                        .iter()
                        .filter(|e| e["vcpu"] == cpu && e["label"] == t)
                        .count();
                    ensure(hits == 30, || {
                        format!("vcpu {cpu} {t}: {hits} hits, wanted 30")
                    })?;
                }
            }
            ensure(events.len() as u64 == 60 * n, || {
                format!("{} events in all", events.len())
            })
        },
    )
}

fn per_vcpu_scope() -> Result<(), Failed> {
    let (run, events) = drvisor_with_hits(&[
        "run",
        "--scenario",
        "smp",
        "--vcpus",
        "2",
        "--cmdline",
        "count=9",
        "--break",
        "drv_target_1",
        "--vcpu",
        "1",
    ])?;
    run.expect_code(0)?;
    ensure(
        count_events(&events, "vcpu", &json!(1)) == 9 && events.len() == 9,
        || format!("{events:?}"),
    )
}

fn hardware_write_watch(ctx: &Context) -> Trial {
    let name = "host_bp::hardware_write_watch";
    if ctx.probe.delivers(Mechanism::HostWriteWatchpoint, 0) {
        Trial::test(name, || {
            let (run, events) = drvisor_with_hits(&[
                "run",
                "--scenario",
                "write",
                "--cmdline",
                "count=13",
                "--watch",
                "drv_watch_u32",
            ])?;
            run.expect_code(0)?;
            ensure(
                events.len() == 13 && events.iter().all(|e| e["kind"] == "write"),
                || format!("{events:?}"),
            )
        })
    } else {
        skipped(name, &format!(
            "{} (the same dispatch runs on synthetic exits in debug::dispatch_tests::write_watch_in_every_slot)",
            ctx.probe.why_not(Mechanism::HostWriteWatchpoint, 0).unwrap_or_default()
        ))
    }
}

fn engine_hw_refused_where_it_cannot_fire(ctx: &Context) -> Trial {
    let deliverable = ctx.probe.delivers(Mechanism::HostWriteWatchpoint, 0);
    Trial::test(
        "host_bp::engine_hw_refused_where_it_cannot_fire",
        move || {
            let run = drvisor(&[
                "run",
                "--scenario",
                "write",
                "--watch",
                "drv_watch_u32",
                "--engine",
                "hw",
            ]);
            if deliverable {
                return run.expect_code(0).map(|_| ());
            }
            run.expect_code(2)?;
            ensure(
                run.stderr
                    .contains("--engine hw: this host does not deliver hardware data watchpoints"),
                || run.to_string(),
            )
        },
    )
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    vec![
        Trial::test(
            "host_bp::exec_in_each_physical_slot",
            exec_in_each_physical_slot,
        ),
        Trial::test("host_bp::by_address", by_address),
        Trial::test(
            "host_bp::capture_records_the_stack",
            capture_records_the_stack,
        ),
        Trial::test("host_bp::by_system_map", by_system_map),
        Trial::test(
            "host_bp::unknown_symbol_suggests_names",
            unknown_symbol_suggests_names,
        ),
        Trial::test("host_bp::bad_breakpoint_inputs", bad_breakpoint_inputs),
        Trial::test("host_bp::stop_action", stop_action),
        Trial::test("host_bp::pause_action", pause_action),
        smp_exact_counts("2"),
        smp_exact_counts("4"),
        Trial::test("host_bp::per_vcpu_scope", per_vcpu_scope),
        hardware_write_watch(ctx),
        engine_hw_refused_where_it_cannot_fire(ctx),
        cpl0_only_is_stated(ctx),
    ]
}

/// Where the probe says host exec breakpoints fire only in CPL0 code (our hosts), an armed
/// exec breakpoint's state says so; where they fire at CPL3 too, it does not.
fn cpl0_only_is_stated(ctx: &Context) -> Trial {
    let cpl0_only = !ctx.probe.delivers(Mechanism::HostExecBreakpoint, 3);
    Trial::test("host_bp::cpl0_only_is_stated", move || {
        let run = drvisor(&[
            "run",
            "--scenario",
            "exec",
            "--break",
            "drv_target_0",
            "--show-plan",
        ]);
        run.expect_code(0)?;
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("host #1 drv_target_0: armed"))
            .unwrap_or_default()
            .to_owned();
        let noted = line.contains("(fires in CPL0 code only on this host)");
        ensure(noted == cpl0_only, || {
            format!("cpl0 only: {cpl0_only}, state line: {line:?}\n{run}")
        })
    })
}
