//! Running the binary and reading what it prints.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drvisor::probe::{self, ProbeReport};
pub use libtest_mimic::{Failed, Trial};

/// The drvisor binary under test.
pub const DRVISOR: &str = env!("CARGO_BIN_EXE_drvisor");

/// No scenario takes more than a few seconds here; this only stops a hung test.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The limit for a run that boots a stock Linux kernel: on hosts like ours (guest CPL0 code
/// emulated at a few million instructions a second) the Debian kernel takes 2-5 minutes to reach
/// `setup_arch`, more when the suite runs beside it. Longer than the runs' own timeouts, so that
/// drvisor, not the harness, ends them.
pub const LINUX_BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// What the host delivers, probed once per test run.
pub struct Context {
    pub probe: ProbeReport,
}

impl Context {
    pub fn new() -> Self {
        let kvm = kvm_ioctls::Kvm::new().expect("the end-to-end tests need /dev/kvm");
        Context {
            probe: probe::run_all(&kvm).expect("the host probe runs"),
        }
    }
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `drvisor` with `args`, stdin closed.
pub fn drvisor(args: &[&str]) -> Run {
    run_command(Command::new(DRVISOR).args(args))
}

/// Runs `drvisor` with `args`, stdin closed, killed only after `limit`.
pub fn drvisor_within(args: &[&str], limit: Duration) -> Run {
    run_command_within(Command::new(DRVISOR).args(args), None, limit)
}

/// Runs `drvisor` with `args`, `input` on its stdin (then closed).
pub fn drvisor_with_stdin(args: &[&str], input: &[u8]) -> Run {
    run_command_within(Command::new(DRVISOR).args(args), Some(input), TIMEOUT)
}

/// Runs `cmd` to completion (or kills it after [`TIMEOUT`]), stdin closed.
pub fn run_command(cmd: &mut Command) -> Run {
    run_command_within(cmd, None, TIMEOUT)
}

/// Runs `cmd` with `input` on its stdin (then closed), killing it after `limit`; a killed
/// run says so at the end of its stderr.
fn run_command_within(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Run {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drvisor");
    if let (Some(bytes), Some(mut pipe)) = (input, child.stdin.take()) {
        use std::io::Write;
        let _ = pipe.write_all(bytes);
        // Dropping the pipe closes it: the console sees EOF after the input.
    }
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            killed = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = err_reader.join().unwrap_or_default();
    if killed {
        stderr += &format!("\n(killed by the test harness after {limit:?})\n");
    }
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr,
    }
}

impl Run {
    /// Fails unless the exit code is `code`, showing the output.
    pub fn expect_code(&self, code: i32) -> Result<&Self, Failed> {
        if self.code == code {
            Ok(self)
        } else {
            Err(format!("exit code {} (wanted {code})\n{self}", self.code).into())
        }
    }

    /// The guest's `drv: summary ...` line.
    pub fn summary(&self) -> Result<&str, Failed> {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with("drv: summary "))
            .collect();
        match lines.as_slice() {
            [one] => Ok(one),
            _ => Err(format!("wanted exactly one summary line\n{self}").into()),
        }
    }

    /// Guest lines (`drv: ...`) that contain every one of `parts`.
    pub fn guest_lines(&self, parts: &[&str]) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("drv: ") && parts.iter().all(|p| has_field(l, p)))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout\n{}--- stderr\n{}---",
            self.stdout, self.stderr
        )
    }
}

/// Whether `line` has the whitespace-separated token `token` (e.g. `status=0`).
pub fn has_field(line: &str, token: &str) -> bool {
    line.split_whitespace().any(|t| t == token)
}

/// The value of `key=` in `line`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Fails with `message` unless `cond`.
pub fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// A trial that is listed as ignored because this host cannot run it; prints why.
pub fn skipped(name: &str, reason: &str) -> Trial {
    println!("skipping {name}: {reason}");
    Trial::test(name, || Ok(())).with_ignored_flag(true)
}

/// A fresh path in the temp directory for this test process.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("drvisor-{}-{n}-{name}", std::process::id()))
}

/// The hit events of a finished run (`--events FILE`), parsed. Every line must be complete
/// and JSON: a line that is not fails the test, naming it.
pub fn read_events(path: &std::path::Path) -> Result<Vec<serde_json::Value>, Failed> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the events file {}: {e}", path.display()))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!(
            "the events file ends in an unfinished line: {:?}",
            last_line(&text)
        )
        .into());
    }
    parse_event_lines(&text)
}

/// How many hits a *running* drvisor has written so far: complete lines only (the writer may
/// be in the middle of the last one), each of which must be JSON.
pub fn hits_so_far(path: &std::path::Path) -> Result<usize, Failed> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    };
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    Ok(hits_only(parse_event_lines(complete)?).len())
}

fn parse_event_lines(text: &str) -> Result<Vec<serde_json::Value>, Failed> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                format!("events line {} is not JSON ({e}): {:?}", i + 1, shorten(l)).into()
            })
        })
        .collect()
}

fn last_line(text: &str) -> &str {
    shorten(text.rsplit('\n').next().unwrap_or_default())
}

fn shorten(line: &str) -> &str {
    match line.char_indices().nth(200) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// Runs drvisor with `args` plus `--events`, and returns the run and its events; fails if a
/// line of the events file is not JSON.
pub fn drvisor_with_events(args: &[&str]) -> Result<(Run, Vec<serde_json::Value>), Failed> {
    drvisor_with_events_within(args, TIMEOUT)
}

/// [`drvisor_with_events`], killed only after `limit`.
pub fn drvisor_with_events_within(
    args: &[&str],
    limit: Duration,
) -> Result<(Run, Vec<serde_json::Value>), Failed> {
    let path = temp_path("events.jsonl");
    let mut all: Vec<&str> = args.to_vec();
    let p = path.to_str().unwrap_or_default().to_owned();
    all.extend(["--events", &p]);
    let run = drvisor_within(&all, limit);
    let events = read_events(&path);
    let _ = std::fs::remove_file(&path);
    let events = events.map_err(|e| format!("{}\n{run}", e.message().unwrap_or_default()))?;
    Ok((run, events))
}

/// Runs drvisor with `args` plus `--events`, and returns the run and its hit events (the
/// file also has the `plan`, `state` and `page-traps` events of the same bus).
pub fn drvisor_with_hits(args: &[&str]) -> Result<(Run, Vec<serde_json::Value>), Failed> {
    let (run, events) = drvisor_with_events(args)?;
    Ok((run, hits_only(events)))
}

/// The `hit` events among `events`.
pub fn hits_only(events: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    events.into_iter().filter(|e| e["event"] == "hit").collect()
}

/// How many events have `key == value`.
pub fn count_events(events: &[serde_json::Value], key: &str, value: &serde_json::Value) -> usize {
    events.iter().filter(|e| &e[key] == value).count()
}

/// The number after `key=` on the one guest line that has all of `parts`.
pub fn guest_number(run: &Run, parts: &[&str], key: &str) -> Result<u64, Failed> {
    let lines = run.guest_lines(parts);
    match lines.as_slice() {
        [line] => field(line, key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key}= in {line}").into()),
        _ => Err(format!("wanted one line with {parts:?}\n{run}").into()),
    }
}

/// Runs `drvisor run --scenario SCENARIO ARGS...` and checks that it is refused as the user's
/// mistake: exit code 2, `needle` (lowercase) in the message, no panic.
pub fn refused(scenario: &str, args: &[&str], needle: &str) -> Result<(), Failed> {
    let mut all = vec!["run", "--scenario", scenario];
    all.extend_from_slice(args);
    let run = drvisor(&all);
    run.expect_code(2)?;
    ensure(run.stderr.to_lowercase().contains(needle), || {
        format!("{args:?}: wanted `{needle}`\n{run}")
    })?;
    ensure(!run.stderr.contains("panicked"), || run.to_string())
}

/// Waits up to `timeout` for a spawned `drvisor` (stdout and stderr piped) to exit, and reads
/// what it printed; kills it and fails if it does not end.
pub fn wait_child(child: &mut std::process::Child, timeout: Duration) -> Result<Run, Failed> {
    let status = wait_exit(child, timeout)?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Ok(Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

/// Waits for `child` to exit, killing it after `timeout`.
fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus, Failed> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let threads = thread_backtraces(child.id());
            let _ = child.kill();
            return Err(format!("the run did not end; its threads:\n{threads}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every thread's backtrace of the live process `pid`, by gdb, and each thread's state and
/// kernel stack from /proc (for a test that finds drvisor hung): what each thread waits for,
/// in user space and in the kernel.
pub fn thread_backtraces(pid: u32) -> String {
    format!("{}\n{}", user_backtraces(pid), kernel_states(pid))
}

/// Each thread's name, state, system call and kernel stack, from /proc/PID/task (the stack only
/// where the kernel lets this user read it).
fn kernel_states(pid: u32) -> String {
    let tasks = format!("/proc/{pid}/task");
    let Ok(dir) = std::fs::read_dir(&tasks) else {
        return format!("({tasks} is gone)");
    };
    let read = |tid: &std::ffi::OsStr, file: &str| {
        std::fs::read_to_string(format!("{tasks}/{}/{file}", tid.to_string_lossy()))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| format!("({file}: {e})"))
    };
    let mut out = String::new();
    for task in dir.flatten() {
        let tid = task.file_name();
        let state = read(&tid, "status")
            .lines()
            .filter(|l| l.starts_with("Name:") || l.starts_with("State:"))
            .collect::<Vec<_>>()
            .join(" ");
        out += &format!(
            "task {}: {state}; wchan {}; syscall {}\n{}\n",
            tid.to_string_lossy(),
            read(&tid, "wchan"),
            read(&tid, "syscall"),
            read(&tid, "stack")
        );
    }
    out
}

fn user_backtraces(pid: u32) -> String {
    let out = std::process::Command::new("timeout")
        .args(["60", "gdb", "-q", "-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt 30"])
        .output();
    match out {
        Ok(out) => {
            let frames: Vec<_> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
                .map(str::to_owned)
                .collect();
            match frames.is_empty() {
                true => format!("(gdb gave none: {})", String::from_utf8_lossy(&out.stderr)),
                false => frames.join("\n"),
            }
        }
        Err(e) => format!("(no backtraces: {e})"),
    }
}

/// A child's stdout and stderr, read while it writes them: a child that writes more than a pipe
/// holds while nobody waits for it yet must not block on the write.
pub struct Drained {
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Drained {
    /// Starts reading `child`'s piped stdout and stderr.
    pub fn start(child: &mut std::process::Child) -> Drained {
        fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        }
        Drained {
            out: reader(child.stdout.take()),
            err: reader(child.stderr.take()),
        }
    }

    /// Waits for `child` to exit (killing it after `timeout`) and returns what it wrote.
    pub fn wait(self, child: &mut std::process::Child, timeout: Duration) -> Result<Run, Failed> {
        let status = wait_exit(child, timeout)?;
        let (stdout, stderr) = self.collect();
        Ok(Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }

    /// Everything the child wrote to stdout and stderr, once it has ended (or been killed).
    pub fn collect(self) -> (String, String) {
        (
            self.out.join().unwrap_or_default(),
            self.err.join().unwrap_or_default(),
        )
    }
}
