//! `drvisor ci`, `drvisor run` and `drvisor ctl` against hostile input: out-of-range numbers
//! in a spec, a device or a FIFO as a spec, `--jobs 0`, a reader that closes stdout, and a
//! harness killed outright. Each ends within a time bound with its own message and exit code;
//! none panics or leaves a process or a file behind.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ci_harness::harness_children;
use crate::common::*;

/// A spec file with `text`, in a folder of its own.
fn spec_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = temp_path("hostile-specs");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a spec");
    path
}

/// Files in the temporary directory named like the harness's old events files.
fn events_files_of(pid: u32) -> Vec<String> {
    let prefix = format!("drvisor-ci-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn no_panic(run: &Run) -> Result<(), Failed> {
    ensure(!run.stderr.contains("panicked") && run.code != 101, || {
        format!("a panic: {run}")
    })
}

/// `timeout` out of range is a spec error at its line and column, before anything runs.
fn out_of_range_timeouts() -> Result<(), Failed> {
    for value in ["1e300", "18446744073709551616.0", "-1", "nan", "inf", "0"] {
        let text = format!(
            "[vm]\nscenario = \"spin\"\ntimeout = {value}\n[[check]]\nname = \"s\"\nexit_status = 0\n"
        );
        let spec = spec_file("timeout.toml", &text);
        let start = Instant::now();
        let run = drvisor(&["ci", &spec.display().to_string()]);
        no_panic(&run)?;
        run.expect_code(2)?;
        let want = format!("ERROR {}:3:11: `timeout`", spec.display());
        ensure(run.stdout.contains(&want), || {
            format!("timeout = {value}: wanted {want:?}\n{run}")
        })?;
        ensure(start.elapsed() < Duration::from_secs(10), || {
            format!("timeout = {value}: took {:?}", start.elapsed())
        })?;
    }
    Ok(())
}

/// A device or a FIFO given as a spec is refused at once, not read or waited on.
fn devices_and_fifos_are_not_specs() -> Result<(), Failed> {
    let fifo = temp_path("spec.fifo");
    let c = std::ffi::CString::new(fifo.display().to_string()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo(3) reads the NUL-terminated path only.
    ensure(unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0, || {
        "mkfifo failed".into()
    })?;
    for path in ["/dev/zero".to_owned(), fifo.display().to_string()] {
        let start = Instant::now();
        let run = drvisor(&["ci", &path]);
        no_panic(&run)?;
        run.expect_code(2)?;
        ensure(run.stdout.contains("not a regular file"), || {
            run.to_string()
        })?;
        ensure(start.elapsed() < Duration::from_secs(10), || {
            format!("{path}: took {:?}", start.elapsed())
        })?;
    }
    let _ = std::fs::remove_file(&fifo);
    Ok(())
}

fn jobs_zero_is_refused() -> Result<(), Failed> {
    let spec = spec_file("ok.toml", "[[check]]\nname = \"a\"\nexit_status = 0\n");
    let run = drvisor(&["ci", "--jobs", "0", &spec.display().to_string()]);
    run.expect_code(2)?;
    ensure(run.stderr.contains("--jobs"), || run.to_string())
}

/// Spawns `drvisor ARGS` with its stdout's reader already gone (as `| head -0`), waits for it.
fn with_closed_stdout(args: &[&str]) -> Result<(i32, String, u32), Failed> {
    let mut child = Command::new(DRVISOR)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    drop(child.stdout.take());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    Ok((status.code().unwrap_or(-1), stderr, pid))
}

/// `drvisor ci ... | head -0`: no panic, the usual exit code, nothing left behind.
fn ci_with_a_closed_stdout() -> Result<(), Failed> {
    let spec = spec_file(
        "hello.toml",
        "[vm]\nscenario = \"hello\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
    );
    let (code, stderr, pid) = with_closed_stdout(&["ci", &spec.display().to_string()])?;
    ensure(
        code == 0 && !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        || format!("exit {code}\n{stderr}"),
    )?;
    let left = events_files_of(pid);
    ensure(left.is_empty(), || format!("left behind: {left:?}"))
}

/// `drvisor run ... | head -0`: no panic, not a word about the pipe, the guest's exit status.
fn run_with_a_closed_stdout() -> Result<(), Failed> {
    let (code, stderr, _) = with_closed_stdout(&["run", "--scenario", "hello"])?;
    ensure(code == 0 && !stderr.contains("panicked"), || {
        format!("exit {code}\n{stderr}")
    })?;
    ensure(!stderr.contains("Broken pipe"), || {
        format!("the closed pipe is no news: {stderr}")
    })
}

/// The harness killed with SIGKILL (nothing of it runs any more): its `drvisor run` child dies
/// with it (`PR_SET_PDEATHSIG`), and no events file is left.
fn a_killed_harness_leaves_nothing_behind() -> Result<(), Failed> {
    let spec = spec_file(
        "spin.toml",
        "[vm]\nscenario = \"spin\"\ntimeout = 120\n[[check]]\nname = \"s\"\nexit_status = 0\n",
    );
    let mut child = Command::new(DRVISOR)
        .args(["ci", &spec.display().to_string()])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let start = Instant::now();
    while harness_children(pid).is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure(!harness_children(pid).is_empty(), || {
        "the VM did not start".into()
    })?;
    let _ = child.kill();
    let _ = child.wait();
    let start = Instant::now();
    while !harness_children(pid).is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = harness_children(pid);
    ensure(left.is_empty(), || format!("left behind: {left:?}"))?;
    let files = events_files_of(pid);
    ensure(files.is_empty(), || format!("files left behind: {files:?}"))
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "ci_hostile_inputs::out_of_range_timeouts",
            out_of_range_timeouts,
        ),
        Trial::test(
            "ci_hostile_inputs::devices_and_fifos_are_not_specs",
            devices_and_fifos_are_not_specs,
        ),
        Trial::test(
            "ci_hostile_inputs::jobs_zero_is_refused",
            jobs_zero_is_refused,
        ),
        Trial::test(
            "ci_hostile_inputs::ci_with_a_closed_stdout",
            ci_with_a_closed_stdout,
        ),
        Trial::test(
            "ci_hostile_inputs::run_with_a_closed_stdout",
            run_with_a_closed_stdout,
        ),
        Trial::test(
            "ci_hostile_inputs::a_killed_harness_leaves_nothing_behind",
            a_killed_harness_leaves_nothing_behind,
        ),
    ]
}
