//! Running one spec: the real `drvisor run` as a child in a process group of its own, its
//! console and messages captured, killed with its whole group at the spec's timeout. The only
//! file here with effects; what the exit code means is the pure [`end_of`].

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drvisor::exit_code;
use drvisor_api::HitEvent;

use drvisor_ci::judge::{Observation, RunEnd};

/// How long a killed run gets to write its events after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// Runs `exe` with `args`; kills it after `timeout` seconds, or as soon as `interrupted` is set
/// (the harness got SIGINT, SIGTERM or SIGHUP: its children are in groups of their own, so the
/// signal did not reach them). `events` is the `--events` file the arguments name; it is read,
/// then removed.
pub fn run(
    exe: &Path,
    args: &[String],
    events: &Path,
    timeout: f64,
    interrupted: &Arc<AtomicBool>,
) -> Observation {
    let spawned = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a timeout kills everything it started, and a ^C to the harness's
        // terminal does not reach it twice.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Observation {
                console: String::new(),
                hits: Vec::new(),
                end: RunEnd::Infrastructure(format!("cannot start {}: {e}", exe.display())),
                seconds: 0.0,
            }
        }
    };
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let limit = Duration::from_secs_f64(timeout);
    let start = Instant::now();
    let mut timed_out = false;
    let mut stopped = false;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if start.elapsed() >= limit => {
                timed_out = true;
                break kill_group(&mut child);
            }
            Ok(None) if interrupted.load(Ordering::Relaxed) => {
                stopped = true;
                break kill_group(&mut child);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break kill_group(&mut child),
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let console = stdout.join().unwrap_or_default();
    let messages = stderr.join().unwrap_or_default();
    let hits = std::fs::read_to_string(events)
        .map(|t| hit_events(&t))
        .unwrap_or_default();
    let _ = std::fs::remove_file(events);
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

/// The hit events of an `--events` file; other events (`lost`, `page-traps`) are skipped.
pub fn hit_events(text: &str) -> Vec<HitEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "hit")
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
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
        assert!(hit_events(text).is_empty());
    }
}
