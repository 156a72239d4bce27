//! Stopping a guest that never exits (the `spin` scenario) with a signal: the run ends in
//! order, with the shell's exit code, and the events file is whole.
//!
//! "Whole" is checked exactly: every line is JSON; the exec breakpoint's hits are numbered
//! 1..=N with no gap; the last line is the `page-traps` record, and its trap count equals the
//! write hits reported (the watch covers the only variable the loop writes on its page, so
//! there is no false trap).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bounded::wait_bounded;
use crate::common::{ensure, hits_so_far, read_events, temp_path, Failed, Trial, DRVISOR};

/// The signal must end the run well within this; the bound only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(60);

fn spin(events: &std::path::Path) -> Result<std::process::Child, Failed> {
    Ok(Command::new(DRVISOR)
        .args(["run", "--scenario", "spin", "--break", "drv_target_0"])
        // The page engine on every host, so the page-traps record is due at the end (a host
        // with hardware data watchpoints would take a slot for it otherwise).
        .args(["--watch", "drv_watch_u64", "--engine", "page", "--events"])
        .arg(events)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Waits until the guest has produced `n` events, so the signal lands mid-run.
fn wait_for_events(path: &std::path::Path, n: usize) -> Result<(), Failed> {
    let start = std::time::Instant::now();
    while hits_so_far(path)? < n {
        if start.elapsed() > BOUND {
            return Err(format!("fewer than {n} events after {BOUND:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The function (`name+0xoffset`) where drvisor's closing line puts vCPU 0:
/// `the vCPUs were stopped (vCPU 0 at rip=0x... (name+0x...)`.
fn vcpu0_stopped_in(stderr: &str) -> Option<&str> {
    let (_, rest) = stderr.split_once("the vCPUs were stopped (vCPU 0 at rip=0x")?;
    let (_, rest) = rest.split_once(" (")?;
    rest.split_once(')').map(|(function, _)| function)
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions; `pid` is our own child, not yet reaped.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

fn stops_in_order(signal: i32, name: &'static str, code: i32) -> Result<(), Failed> {
    let events = temp_path("spin-events.jsonl");
    let child = spin(&events)?;
    let pid = child.id();
    if let Err(e) = wait_for_events(&events, 20) {
        kill(pid, libc::SIGKILL);
        return Err(e);
    }
    kill(pid, signal);
    let run = wait_bounded(child, BOUND, name)?;
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let _ = std::fs::remove_file(&events);
    run.expect_code(code)?;
    ensure(
        run.stderr.contains(&format!("drvisor: stopped by {name}")),
        || format!("no closing message\n{run}"),
    )?;
    // Where the vCPU was, named by the embedded guest's symbols: a hung guest says where.
    ensure(
        vcpu0_stopped_in(&run.stderr).is_some_and(|f| f.contains("+0x")),
        || format!("the closing message does not say where vCPU 0 was\n{run}"),
    )?;
    ensure(run.stdout.contains("drv: scenario=spin started"), || {
        run.to_string()
    })?;

    let lines: Vec<&str> = text.lines().collect();
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a line of the events file is not JSON ({e})"))?;
    let exec: Vec<u64> = parsed
        .iter()
        .filter(|e| e["kind"] == "exec")
        .filter_map(|e| e["count"].as_u64())
        .collect();
    ensure(
        !exec.is_empty() && exec.iter().zip(1..).all(|(c, i)| *c == i),
        || format!("exec hits are not numbered 1..=N: {exec:?}"),
    )?;
    let writes = parsed
        .iter()
        .filter(|e| e["event"] == "hit" && e["kind"] != "exec")
        .count();
    let last = parsed.last().cloned().unwrap_or_default();
    ensure(last["event"] == "page-traps", || {
        format!("the last line is not the page-traps record: {last}")
    })?;
    ensure(
        last["traps"].as_u64() == Some(writes as u64) && last["false_traps"] == 0,
        || format!("{writes} write hits but {last}"),
    )
}

/// A VM paused by a breakpoint's `pause` action stops in order too.
fn stops_while_paused() -> Result<(), Failed> {
    let events = temp_path("paused.jsonl");
    let child = Command::new(DRVISOR)
        .args([
            "run",
            "--scenario",
            "spin",
            "--break",
            "drv_target_0",
            "--action",
            "pause",
        ])
        .arg("--events")
        .arg(&events)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    if let Err(e) = wait_for_events(&events, 1) {
        kill(pid, libc::SIGKILL);
        return Err(e);
    }
    kill(pid, libc::SIGTERM);
    let run = wait_bounded(child, BOUND, "paused");
    let all = read_events(&events);
    let _ = std::fs::remove_file(&events);
    let run = run?;
    run.expect_code(143)?;
    // Paused at the breakpoint, so it was stopped exactly there.
    ensure(
        vcpu0_stopped_in(&run.stderr) == Some("drv_target_0+0x0"),
        || format!("the closing message does not put vCPU 0 at drv_target_0\n{run}"),
    )?;
    let all = all?;
    let kinds: Vec<&str> = all.iter().filter_map(|e| e["event"].as_str()).collect();
    ensure(
        kinds == ["plan", "hit", "state"]
            && all[1]["action"] == "pause"
            && all[2]["state"] == "paused",
        || format!("wanted the plan, the one pausing hit and the pause: {all:?}"),
    )
}

/// A run that cannot stop in order (its events go to a pipe nobody reads, so the event writer
/// blocks on it, and the orderly stop waits for the writer) still ends at the second signal, at
/// once.
fn second_signal_exits_at_once() -> Result<(), Failed> {
    let fifo = temp_path("events.fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    ensure(unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0, || {
        "mkfifo failed".into()
    })?;
    // A reader that never reads: drvisor can open the FIFO, and its writes fill the pipe.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblocking()
        .open(&fifo)?;
    let child = spin(&fifo)?;
    let pid = child.id();
    // Wait until the pipe is full: some data is in it and a thread of drvisor's sleeps in the
    // kernel's pipe_write (how full a pipe is when a write blocks depends on the write sizes).
    let start = std::time::Instant::now();
    while queued(&reader) < 4096 || !blocked_writing_a_pipe(pid) {
        if start.elapsed() > BOUND {
            kill(pid, libc::SIGKILL);
            return Err("the events pipe never filled".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The second signal follows the first once drvisor has taken it (its message), not after
    // a guess at how long that takes.
    let mut child = child;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    kill(pid, libc::SIGTERM);
    let first_taken = std::iter::from_fn(|| rx.recv_timeout(BOUND).ok())
        .any(|l| l.starts_with("drvisor: SIGTERM: stopping the run"));
    if !first_taken {
        kill(pid, libc::SIGKILL);
        return Err("no message for the first signal".into());
    }
    // Still blocked on the full pipe: the first signal could not end the run.
    ensure(child.try_wait()?.is_none(), || {
        "the run ended at the first signal, with its events pipe full".into()
    })?;
    kill(pid, libc::SIGINT);
    let run = wait_bounded(child, BOUND, "second signal");
    drop(reader);
    let _ = std::fs::remove_file(&fifo);
    let run = run?;
    let stderr = err_reader.join().unwrap_or_default();
    run.expect_code(130)?;
    ensure(stderr.contains("SIGINT again: exiting at once"), || {
        format!("{run}\n{stderr}")
    })
}

/// Bytes waiting in the pipe behind `reader`.
fn queued(reader: &std::fs::File) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int, which `n` is; the descriptor is open for the call.
    let ret = unsafe { libc::ioctl(reader.as_raw_fd(), libc::FIONREAD, &mut n) };
    if ret < 0 {
        0
    } else {
        n as usize
    }
}

trait NonBlocking {
    fn custom_flags_nonblocking(&mut self) -> &mut Self;
}

impl NonBlocking for std::fs::OpenOptions {
    fn custom_flags_nonblocking(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("signals::sigint_stops_in_order_with_130", || {
            stops_in_order(libc::SIGINT, "SIGINT", 130)
        }),
        Trial::test("signals::sigterm_stops_in_order_with_143", || {
            stops_in_order(libc::SIGTERM, "SIGTERM", 143)
        }),
        Trial::test("signals::sighup_stops_in_order_with_129", || {
            stops_in_order(libc::SIGHUP, "SIGHUP", 129)
        }),
        Trial::test("signals::sigterm_stops_a_paused_vm", stops_while_paused),
        Trial::test(
            "signals::a_second_signal_exits_at_once",
            second_signal_exits_at_once,
        ),
    ]
}

/// Whether a thread of process `pid` sleeps in the kernel's `pipe_write` (`anon_pipe_write` on newer kernels).
fn blocked_writing_a_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("wchan"))
            .is_ok_and(|w| w.trim().ends_with("pipe_write"))
    })
}
