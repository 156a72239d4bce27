//! Running one spec: the real `drvisor run` as a child in a process group of its own, its
//! console and messages captured, killed with its whole group at the spec's timeout. The only
//! file here with effects; what the exit code means is the pure [`end_of`].
//!
//! Nothing outlives the harness: the child is killed with its group on every way out of
//! [`run`] (a panic included, by [`Running`]'s drop), by the kernel if the harness dies
//! (`PR_SET_PDEATHSIG`), and the events file has no name to leave behind ([`EventsFile`]).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drvisor::exit_code;
use drvisor_api::HitEvent;

use drvisor_ci::judge::{Observation, RunEnd};

/// How long a killed run gets to write its events after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// The `--events` file of one spec's run: a temporary file without a name (`O_TMPFILE`, or
/// unlinked at once where the file system lacks it), which the child writes through its fd 3
/// ([`CHILD_PATH`], which `drvisor run` uses as the inherited descriptor, not by reopening it).
/// Having no name, it cannot be left behind, whatever ends the harness.
pub struct EventsFile(std::fs::File);

/// Where the child finds its events file: `/proc/self/fd`, not `/dev/fd`, which is only a
/// symlink to it that udev or the distribution makes (a minimal initramfs, as the nested VMX
/// guest's, has no `/dev/fd`).
pub const CHILD_PATH: &str = "/proc/self/fd/3";

/// The observation of a run that never started.
pub fn not_run(end: RunEnd) -> Observation {
    Observation {
        console: String::new(),
        hits: Vec::new(),
        hit_ns: Vec::new(),
        end,
        seconds: 0.0,
    }
}

/// The most of an events file read back (a run that floods it is judged on the first part).
const EVENTS_READ_MAX: u64 = 256 * 1024 * 1024;

/// The environment variable that marks a child as this harness's (its value is the harness's
/// pid), so that a test can find any survivor.
pub const CHILD_MARK: &str = "DRVISOR_CI_HARNESS";

impl EventsFile {
    /// A new, empty, nameless file in the temporary directory.
    pub fn new() -> std::io::Result<EventsFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir();
        let nameless = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        match nameless {
            Ok(f) => Ok(EventsFile(f)),
            // No O_TMPFILE (9p, some FUSE): a name made unique by this process's own counter,
            // not by the clock, since specs run in parallel start within one clock tick.
            Err(_) => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                loop {
                    let path = dir.join(format!(
                        "drvisor-ci-{}-{}-events.jsonl",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::Relaxed)
                    ));
                    let opened = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path);
                    match opened {
                        Ok(f) => {
                            std::fs::remove_file(&path)?;
                            return Ok(EventsFile(f));
                        }
                        // A file left by an earlier process with this pid.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => {
                            return Err(std::io::Error::new(
                                e.kind(),
                                format!("in {}: {e}", dir.display()),
                            ))
                        }
                    }
                }
            }
        }
    }

    /// What the child wrote (up to [`EVENTS_READ_MAX`] bytes).
    fn read(&mut self) -> String {
        use std::io::Seek;
        let mut bytes = Vec::new();
        if self.0.seek(std::io::SeekFrom::Start(0)).is_ok() {
            let _ = (&mut self.0).take(EVENTS_READ_MAX).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A started child; killed with its group and reaped when dropped unless it was reaped.
struct Running {
    child: Child,
    reaped: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: kill(2) with a negative pid signals the group the child leads (spawned
            // with process_group(0)); no memory is involved.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// In the child, between fork and exec (only async-signal-safe calls): asks the kernel to
/// SIGKILL it when the thread that started it dies, exits at once if the harness is already
/// gone, and puts the events file at fd 3 (without close-on-exec).
fn prepare_child(parent: libc::pid_t, events: libc::c_int) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) sets a flag of this process; getppid, _exit, dup2 and
    // fcntl(F_SETFD) act on this process and its descriptor table only.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        let placed = match events == 3 {
            true => libc::fcntl(3, libc::F_SETFD, 0),
            false => libc::dup2(events, 3),
        };
        if placed < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs `exe` with `args`; kills it after `timeout` seconds, or as soon as `interrupted` is set
/// (the harness got SIGINT, SIGTERM or SIGHUP: its children are in groups of their own, so the
/// signal did not reach them). `args` name [`CHILD_PATH`] as the `--events` file; `events`
/// is that file.
pub fn run(
    exe: &Path,
    args: &[String],
    events: &mut EventsFile,
    timeout: f64,
    interrupted: &Arc<AtomicBool>,
) -> Observation {
    use std::os::fd::AsRawFd;
    let parent = std::process::id() as libc::pid_t;
    let events_fd = events.0.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .args(args)
        .env(CHILD_MARK, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a timeout kills everything it started, and a ^C to the harness's
        // terminal does not reach it twice.
        .process_group(0);
    // SAFETY: the closure makes only async-signal-safe calls (prepare_child).
    unsafe { command.pre_exec(move || prepare_child(parent, events_fd)) };
    let spawned = command.spawn();
    let mut running = match spawned {
        Ok(child) => Running {
            child,
            reaped: false,
        },
        Err(e) => {
            return not_run(RunEnd::Infrastructure(format!(
                "cannot start {}: {e}",
                exe.display()
            )))
        }
    };
    let child = &mut running.child;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    // The spec checked the timeout; an out-of-range one here still does not panic.
    let limit = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::MAX);
    let start = Instant::now();
    let mut timed_out = false;
    let mut stopped = false;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if start.elapsed() >= limit => {
                timed_out = true;
                break kill_group(child);
            }
            Ok(None) if interrupted.load(Ordering::Relaxed) => {
                stopped = true;
                break kill_group(child);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break kill_group(child),
        }
    };
    running.reaped = true;
    let seconds = start.elapsed().as_secs_f64();
    let console = stdout.join().unwrap_or_default();
    let messages = stderr.join().unwrap_or_default();
    let (hits, hit_ns) = hit_events(&events.read());
    let end = if timed_out {
        RunEnd::TimedOut(timeout)
    } else if stopped {
        RunEnd::Aborted(
            code,
            "the harness was interrupted; the VM was killed".into(),
        )
    } else {
        end_of(code, &messages)
    };
    Observation {
        console,
        hits,
        hit_ns,
        end,
        seconds,
    }
}

/// SIGTERM to the child's group (drvisor then writes its events and a closing line), SIGKILL
/// after [`GRACE`]; reaps the child. Returns its exit code.
fn kill_group(child: &mut Child) -> i32 {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was
    // spawned with process_group(0)); no memory is involved.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < GRACE {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    child.wait().ok().and_then(|s| s.code()).unwrap_or(-1)
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The hit events of an `--events` file, each with its line's `ns` (its time since the run's
/// start); other events (`lost`, `page-traps`) are skipped.
pub fn hit_events(text: &str) -> (Vec<HitEvent>, Vec<Option<u64>>) {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "hit")
        .filter_map(|v| {
            let ns = v["ns"].as_u64();
            serde_json::from_value(v).ok().map(|e| (e, ns))
        })
        .unzip()
}

/// What `drvisor run`'s exit code and messages mean. drvisor's own codes always come with a
/// `drvisor:` line; without one, the code is the guest's status (docs/cli.md, "Exit codes").
pub fn end_of(code: i32, messages: &str) -> RunEnd {
    let last = messages
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("drvisor: "))
        .map(str::to_owned);
    let Ok(byte) = u8::try_from(code) else {
        return RunEnd::Infrastructure(format!(
            "drvisor died (status {code}): {}",
            last.unwrap_or_default()
        ));
    };
    match (byte, last) {
        (b, None) if b <= exit_code::GUEST_MAX => RunEnd::Guest(code),
        (exit_code::USAGE, Some(m)) => RunEnd::Refused(m),
        (exit_code::HOST_STOP, Some(m)) => RunEnd::Stopped(m),
        (
            exit_code::VMM_ERROR
            | exit_code::QEMU_VMM_ERROR
            | exit_code::FAIL_ENTRY
            | exit_code::EVENTS_UNWRITABLE,
            m,
        ) => RunEnd::Infrastructure(m.unwrap_or_else(|| format!("exit code {code}"))),
        (b, Some(m)) if b <= exit_code::GUEST_MAX => {
            // A guest status with a warning on stderr (a pending breakpoint, say).
            let _ = m;
            RunEnd::Guest(code)
        }
        (_, m) => RunEnd::Aborted(code, m.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_table() {
        let table = [
            (0, "", RunEnd::Guest(0)),
            (1, "", RunEnd::Guest(1)),
            (2, "", RunEnd::Guest(2)),
            (
                0,
                "drvisor: warning: host breakpoint #5 is pending\n",
                RunEnd::Guest(0),
            ),
            (
                2,
                "drvisor: unknown symbol 'x'\n",
                RunEnd::Refused("unknown symbol 'x'".into()),
            ),
            (
                74,
                "drvisor: host breakpoint 1 (f) stopped the run\n",
                RunEnd::Stopped("host breakpoint 1 (f) stopped the run".into()),
            ),
            (
                70,
                "drvisor: triple fault\n",
                RunEnd::Aborted(70, "triple fault".into()),
            ),
            (
                75,
                "drvisor: KVM_RUN failed\n",
                RunEnd::Infrastructure("KVM_RUN failed".into()),
            ),
        ];
        for (code, messages, want) in table {
            assert_eq!(end_of(code, messages), want, "{code} {messages:?}");
        }
    }

    #[test]
    fn only_hits_are_read() {
        let text =
            "{\"seq\":7,\"event\":\"page-traps\",\"traps\":12,\"false_traps\":6}\nnot json\n";
        assert!(hit_events(text).0.is_empty());
    }

    #[test]
    fn hits_keep_their_time() {
        let hit = |ns: Option<u64>| {
            let mut v = serde_json::json!({
                "seq": 2, "event": "hit", "id": 1, "label": "f", "vcpu": 1, "rip": 0x1000,
                "addr": 0x1000, "kind": "exec", "engine": "hw", "action": "continue", "count": 1,
                "regs": {"rax":0,"rbx":0,"rcx":0,"rdx":0,"rsi":0,"rdi":0,"rsp":0,"rbp":0,"r8":0,
                         "r9":0,"r10":0,"r11":0,"r12":0,"r13":0,"r14":0,"r15":0,"rip":0x1000,
                         "rflags":2}
            });
            if let Some(ns) = ns {
                v["ns"] = ns.into();
            }
            v.to_string() + "\n"
        };
        let text = hit(Some(2500)) + &hit(None);
        let (hits, ns) = hit_events(&text);
        assert_eq!(hits.len(), 2, "{text}");
        assert_eq!(ns, vec![Some(2500), None]);
    }
}
