//! What a person at the terminal sees: warnings without being asked for them, no colour codes
//! in a file, and drvisor's messages never inside a guest line.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::common::{ensure, read_events, run_command, temp_path, Failed, Run, Trial, DRVISOR};

/// A fifth exec breakpoint with four slots stays pending (on `drv_park`, a code label: a
/// variable is refused as an exec breakpoint): drvisor says so without
/// `--show-plan`, and its info log never calls it armed.
fn a_pending_breakpoint_is_announced() -> Result<(), Failed> {
    let run = run_command(
        Command::new(DRVISOR)
            .env("DRVISOR_LOG", "info")
            .args(["run", "--scenario", "exec", "--cmdline", "count=2"])
            .args(["--break", "drv_target_0", "--break", "drv_target_1"])
            .args(["--break", "drv_target_2", "--break", "drv_target_3"])
            .args(["--break", "drv_park", "--events", "/dev/null"]),
    );
    run.expect_code(0)?;
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("drvisor: warning: host breakpoint #5 drv_park is pending"))
        .collect();
    ensure(
        warnings.len() == 1 && warnings[0].contains("vcpu0: no free hardware slot"),
        || format!("wanted one pending warning with its reason\n{run}"),
    )?;
    ensure(
        run.stderr.contains("drv_park is pending as #5")
            && !run
                .stderr
                .lines()
                .any(|l| l.contains("drv_park") && l.contains("armed")),
        || format!("the info log must call it pending, never armed\n{run}"),
    )?;
    ensure(
        run.stderr
            .lines()
            .any(|l| l.contains("drv_target_3 is armed") && l.ends_with("as #4 on the hw engine")),
        || run.to_string(),
    )
}

/// With stderr on a pipe (not a terminal), log lines carry no ANSI escape codes.
fn no_colour_codes_off_a_terminal() -> Result<(), Failed> {
    // An unknown port is logged as a warning through the log subscriber.
    let run = run_command(Command::new(DRVISOR).args(["run", "--scenario", "bad-port"]));
    run.expect_code(0)?;
    ensure(run.stderr.contains("WARN"), || {
        format!("wanted a logged warning\n{run}")
    })?;
    ensure(!run.stderr.contains('\u{1b}'), || {
        format!("ANSI escape codes in stderr: {:?}", run.stderr)
    })
}

/// stdout and stderr on one pipe, as on a terminal: the plan, printed at exits that come in
/// the middle of the guest's lines (every console byte is an exit), never splits one.
fn messages_never_split_a_guest_line() -> Result<(), Failed> {
    let (mut reader, writer) = std::io::pipe()?;
    let mut child = Command::new(DRVISOR)
        .args(["run", "--scenario", "guest-dr", "--cmdline", "count=3"])
        .args(["--break", "drv_target_0", "--show-plan"])
        .args(["--events", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn()?;
    // The child holds the only write ends now: reading ends when it exits.
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let status = child.wait()?;
    ensure(status.code() == Some(0), || {
        format!("exit {status:?}\n{text}")
    })?;
    // drvisor's lines start with `drvisor: ` (the plan's rows with spaces), the guest's with
    // `drv: `; a line cut in two shows up as one starting with neither.
    let broken: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with("drv: ") || l.starts_with("drvisor: ") || l.starts_with("  ")))
        .collect();
    ensure(broken.is_empty(), || {
        format!("lines split by a message: {broken:?}\n{text}")
    })?;
    let plans = text.matches("drvisor: slot plan").count();
    let guest = text.lines().filter(|l| l.starts_with("drv: ")).count();
    ensure(plans >= 3 && guest >= 10, || {
        format!("wanted plans interleaved with guest lines ({plans} plans, {guest} guest lines)\n{text}")
    })?;
    ensure(
        text.contains("drv: summary scenario=guest-dr status=0"),
        || text.clone(),
    )
}

/// A run with breakpoints ends with a summary on stderr whose counts are the events file's:
/// each breakpoint's engine, state and hits, the page traps and the guest's status. `--quiet`
/// leaves it out and writes the same events.
fn a_run_ends_with_its_summary() -> Result<(), Failed> {
    let run = |quiet: bool| -> Result<(Run, Vec<serde_json::Value>), Failed> {
        let events = temp_path("summary.jsonl");
        let mut cmd = Command::new(DRVISOR);
        cmd.args(["run", "--scenario", "write", "--break", "drv_target_0"])
            .args(["--watch", "drv_watch_u64", "--engine", "page", "--events"])
            .arg(&events);
        if quiet {
            cmd.arg("--quiet");
        }
        let run = run_command(&mut cmd);
        let read = read_events(&events);
        let _ = std::fs::remove_file(&events);
        run.expect_code(0)?;
        Ok((run, read?))
    };
    let (loud, events) = run(false)?;
    let hits = |id: u64| {
        events
            .iter()
            .filter(|e| e["event"] == "hit" && e["id"] == id)
            .count()
    };
    let traps = events
        .iter()
        .find(|e| e["event"] == "page-traps")
        .ok_or("no page-traps")?;
    let summary: Vec<&str> = loud
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("drvisor: summary: "))
        .collect();
    ensure(hits(2) == 100, || {
        format!("hits: {} and {}", hits(1), hits(2))
    })?;
    let wanted = [
        "#1 drv_target_0 (exec): hw slot 3, ".to_owned(),
        "#2 drv_watch_u64 (write watch, 8 bytes): page engine on 1 page, armed, 100 hits"
            .to_owned(),
        format!(
            "page traps: {}, of which {} touched no watched byte",
            traps["traps"], traps["false_traps"]
        ),
        "the guest's status: 0".to_owned(),
    ];
    ensure(
        summary.len() == 4
            && summary[0].starts_with(&wanted[0])
            && summary[0].ends_with(&format!(", {} hits", hits(1)))
            && summary[1..] == wanted[1..],
        || {
            format!(
                "wanted the summary {wanted:#?}
{loud}"
            )
        },
    )?;
    let (quiet, quiet_events) = run(true)?;
    ensure(!quiet.stderr.contains("summary"), || {
        format!("--quiet printed a summary\n{quiet}")
    })?;
    ensure(quiet_events.len() == events.len(), || {
        format!(
            "--quiet wrote {} events, not {}",
            quiet_events.len(),
            events.len()
        )
    })
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "person::a_pending_breakpoint_is_announced",
            a_pending_breakpoint_is_announced,
        ),
        Trial::test(
            "person::no_colour_codes_off_a_terminal",
            no_colour_codes_off_a_terminal,
        ),
        Trial::test(
            "person::messages_never_split_a_guest_line",
            messages_never_split_a_guest_line,
        ),
        Trial::test(
            "person::a_run_ends_with_its_summary",
            a_run_ends_with_its_summary,
        ),
    ]
}
