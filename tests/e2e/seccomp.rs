//! seccomp: every thread of a running drvisor has its filter, and a vCPU thread that makes a
//! call its filter forbids ends the run, reported with the thread and the call.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drvisor::fault_injection;
use drvisor::seccomp::EXIT_CODE;

use crate::common::{ensure, run_command, temp_path, Failed, Trial, DRVISOR};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "seccomp::a_vcpu_thread_making_a_forbidden_call_ends_the_run_reported",
            forbidden_call_is_reported,
        ),
        Trial::test(
            "seccomp::without_filters_the_same_call_goes_through",
            no_filters_let_it_through,
        ),
        Trial::test("seccomp::every_thread_of_a_run_has_a_filter", || {
            every_thread_filtered(&[], 2)
        }),
        Trial::test("seccomp::seccomp_none_installs_none", || {
            every_thread_filtered(&["--seccomp", "none"], 0)
        }),
    ]
}

fn forbidden_call_is_reported() -> Result<(), Failed> {
    let run = run_command(
        Command::new(DRVISOR)
            .env(fault_injection::ENV, "forbidden-call")
            .args(["run", "--scenario", "hello"]),
    );
    run.expect_code(EXIT_CODE.into())?;
    ensure(
        run.stderr.contains(
            "drvisor: seccomp: the thread `vcpu0` made system call 41 (socket), which its \
             filter forbids; the run ends (exit code 84)",
        ),
        || run.to_string(),
    )?;
    ensure(!run.stdout.contains("drv: summary"), || {
        format!("the guest ran to its end after the forbidden call\n{run}")
    })
}

fn no_filters_let_it_through() -> Result<(), Failed> {
    let run = run_command(
        Command::new(DRVISOR)
            .env(fault_injection::ENV, "forbidden-call")
            .args(["run", "--scenario", "hello", "--seccomp", "none"]),
    );
    run.expect_code(0)?;
    ensure(
        run.stderr.contains(
            "forbidden-call: a vCPU thread opened a socket: no seccomp filter stopped it",
        ),
        || run.to_string(),
    )
}

/// The `Seccomp:` mode of each thread of process `pid`, by thread name.
fn modes(pid: u32) -> Result<Vec<(String, u32)>, Failed> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Seccomp:").parse().unwrap_or(99)));
    }
    Ok(out)
}

/// A run with every kind of thread (2 vCPUs, the REST plane, the gdb stub, an events file,
/// the page engine's timer): once the guest runs, each has seccomp mode `want` (2: a filter).
fn every_thread_filtered(extra: &[&str], want: u32) -> Result<(), Failed> {
    let (api, gdb, events) = (
        temp_path("seccomp-api.sock"),
        temp_path("seccomp-gdb.sock"),
        temp_path("seccomp-events.jsonl"),
    );
    let mut child = Command::new(DRVISOR)
        .args(["run", "--scenario", "spin", "--vcpus", "2", "--api-sock"])
        .arg(&api)
        .arg("--gdb")
        .arg(format!("unix:{}", gdb.display()))
        .arg("--events")
        .arg(&events)
        .args(["--watch", "drv_watch_u32", "--engine", "page"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let result = (|| {
        wait_for(&api)?;
        // The main thread installs its filter last, once the vCPUs run.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let threads = modes(child.id())?;
            let vcpus = threads
                .iter()
                .filter(|(n, _)| n.starts_with("vcpu"))
                .count();
            let settled = vcpus == 2 && threads.iter().all(|(_, m)| *m == want);
            if settled {
                let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
                for kind in [
                    "drvisor",
                    "vcpu0",
                    "vcpu1",
                    "drvisor-api",
                    "drvisor-gdb",
                    "drvisor-events",
                    "signals",
                ] {
                    ensure(names.iter().any(|n| n.starts_with(kind)), || {
                        format!("no `{kind}` thread among {names:?}")
                    })?;
                }
                return Ok(());
            }
            ensure(Instant::now() < deadline, || {
                format!("not every thread has seccomp mode {want}: {threads:?}")
            })?;
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&events);
    result
}

fn wait_for(path: &Path) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        ensure(Instant::now() < deadline, || {
            format!("{} never appeared", path.display())
        })?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
