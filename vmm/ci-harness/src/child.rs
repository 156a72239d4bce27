//! Running one spec's VM: the real `drvisor run` as a child in a process group of its own, its
//! console and messages captured, killed with its whole group at the spec's timeout or when
//! the harness is interrupted. The only file of the crate that starts processes; what the exit
//! code means is the pure [`crate::run_end`].
//!
//! Nothing outlives the harness: the child is killed with its group on every way out of
//! [`run`] (a panic included, by [`Running`]'s drop), by the kernel if the harness dies
//! (`PR_SET_PDEATHSIG`), and the events file has no name to leave behind
//! ([`EventsFile`]).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::events_file::{self, EventsFile};
use crate::judge::{Observation, RunEnd};
use crate::run::Launch;
use crate::run_end::{end_of, last_seen};

/// How long a killed run gets to write its events after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How often the harness looks at its interrupted flag while a child runs. The child's exit
/// itself wakes it at once ([`ExitWatch`]).
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The environment variable that marks a child as this harness's (its value is the harness's
/// pid), so that a test can find any survivor.
pub const CHILD_MARK: &str = "DRVISOR_CI_HARNESS";

/// The real child: `drvisor run` from the drvisor executable at a path (for `drvisor ci`, its
/// own).
#[derive(Clone, Debug)]
pub struct DrvisorRun {
    exe: PathBuf,
}

impl DrvisorRun {
    /// Runs `exe` (a `drvisor` executable) for each spec.
    pub fn new(exe: impl Into<PathBuf>) -> DrvisorRun {
        DrvisorRun { exe: exe.into() }
    }
}

impl Launch for DrvisorRun {
    /// The child writes its events to a new [`EventsFile`], which `args` name as
    /// [`events_file::CHILD_PATH`].
    fn launch(&self, args: &[String], timeout: f64, interrupted: &AtomicBool) -> Observation {
        match EventsFile::new() {
            Ok(mut events) => run(&self.exe, args, &mut events, timeout, interrupted),
            // Judged like any run that could not start: every case fails with this reason.
            Err(e) => not_run(RunEnd::Infrastructure(format!(
                "cannot create a temporary events file: {e}"
            ))),
        }
    }
}

/// The observation of a run that never started.
fn not_run(end: RunEnd) -> Observation {
    Observation {
        console: String::new(),
        hits: Vec::new(),
        hit_ns: Vec::new(),
        end,
        seconds: 0.0,
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
/// signal did not reach them). `args` name [`events_file::CHILD_PATH`] as the `--events` file;
/// `events` is that file.
fn run(
    exe: &Path,
    args: &[String],
    events: &mut EventsFile,
    timeout: f64,
    interrupted: &AtomicBool,
) -> Observation {
    let parent = std::process::id() as libc::pid_t;
    let events_fd = events.file().as_raw_fd();
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
    let exit = ExitWatch::new(child.id());
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
            Ok(None) => exit.wait(limit.saturating_sub(start.elapsed()).min(LOOK_EVERY)),
            Err(_) => break kill_group(child),
        }
    };
    running.reaped = true;
    let seconds = start.elapsed().as_secs_f64();
    let console = stdout.join().unwrap_or_default();
    let messages = stderr.join().unwrap_or_default();
    let (hits, hit_ns) = events_file::hit_events(&events.read());
    let end = if timed_out {
        RunEnd::TimedOut {
            seconds: timeout,
            last_seen: last_seen(&messages),
        }
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

/// Sleeps until a child exits, asleep in poll(2) on its pidfd: a run of minutes wakes its
/// parent once per [`LOOK_EVERY`], not 100 times a second (on a nested host, every wakeup of
/// the harness is work for the CPU that runs the guest too). Where pidfds are missing (Linux
/// before 5.3), it sleeps in steps of 10 ms.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(pid: u32) -> ExitWatch {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1; no
        // memory is involved.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0);
        // SAFETY: a descriptor pidfd_open just returned is open and owned by nobody else.
        ExitWatch(fd.map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    /// Returns when the child has exited, or after `at_most`.
    fn wait(&self, at_most: Duration) {
        let Some(fd) = &self.0 else {
            std::thread::sleep(at_most.min(Duration::from_millis(10)));
            return;
        };
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(at_most.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `poll` is one valid pollfd for the duration of the call; a signal or an
        // error only ends the wait early, and the caller looks at the child again.
        unsafe { libc::poll(&mut poll, 1, ms) };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh` stands in for `drvisor run`: the plumbing (console, exit code, fd 3, the group
    /// kill) is the child's, whatever it runs.
    fn sh(script: &str, timeout: f64, interrupted: bool) -> Observation {
        let args = ["-c".to_owned(), script.to_owned()];
        DrvisorRun::new("/bin/sh").launch(&args, timeout, &AtomicBool::new(interrupted))
    }

    #[test]
    fn the_console_and_the_guest_status_come_back() {
        let obs = sh("echo booted; exit 3", 30.0, false);
        assert_eq!(obs.console, "booted\n");
        assert_eq!(obs.end, RunEnd::Guest(3));
    }

    #[test]
    fn drvisor_lines_on_stderr_explain_its_own_codes() {
        let obs = sh("echo 'drvisor: unknown symbol x' >&2; exit 2", 30.0, false);
        assert_eq!(obs.end, RunEnd::Refused("unknown symbol x".into()));
    }

    /// The events file is the child's fd 3, and what it wrote there is read back.
    #[test]
    fn hits_written_to_fd_3_are_read_back() {
        let hit = r#"{"seq":1,"ns":40,"event":"hit","id":1,"label":"f","vcpu":0,"rip":4096,"addr":4096,"kind":"exec","engine":"hw","action":"continue","count":1,"regs":{"rax":0,"rbx":0,"rcx":0,"rdx":0,"rsi":0,"rdi":0,"rsp":0,"rbp":0,"r8":0,"r9":0,"r10":0,"r11":0,"r12":0,"r13":0,"r14":0,"r15":0,"rip":4096,"rflags":2}}"#;
        let obs = sh(
            &format!("echo '{hit}' > {}", events_file::CHILD_PATH),
            30.0,
            false,
        );
        assert_eq!(obs.end, RunEnd::Guest(0));
        assert_eq!(obs.hits.len(), 1, "{obs:?}");
        assert_eq!(obs.hit_ns, [Some(40)]);
    }

    #[test]
    fn a_run_past_its_timeout_is_killed() {
        let start = Instant::now();
        let obs = sh("sleep 30", 0.2, false);
        assert_eq!(
            obs.end,
            RunEnd::TimedOut {
                seconds: 0.2,
                last_seen: None
            }
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn an_interrupted_harness_kills_its_run() {
        let obs = sh("sleep 30", 30.0, true);
        assert!(
            matches!(&obs.end, RunEnd::Aborted(_, m) if m.contains("interrupted")),
            "{:?}",
            obs.end
        );
    }

    #[test]
    fn an_executable_that_cannot_start_is_an_infrastructure_failure() {
        let obs =
            DrvisorRun::new("/nonexistent/drvisor").launch(&[], 30.0, &AtomicBool::new(false));
        assert!(
            matches!(&obs.end, RunEnd::Infrastructure(m) if m.starts_with("cannot start /nonexistent/drvisor: ")),
            "{:?}",
            obs.end
        );
    }
}
