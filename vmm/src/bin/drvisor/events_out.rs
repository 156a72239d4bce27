//! The command line's client of the event bus: one writer thread for `--events FILE` (or
//! stderr), fed by the hit callbacks, which only publish.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use drvisor::events::{
    spawn_writer, Event, EventBus, PageTraps, WriterOptions, WriterReport, DEFAULT_CAPACITY,
};
use drvisor::run_control::RunControl;
use drvisor::Outcome;

use crate::Failure;

/// Test-only: the capacity of the writer's view (to force an overflow).
const CAPACITY_VAR: &str = "DRVISOR_EVENT_QUEUE";
/// Test-only: milliseconds the writer sleeps before each batch (to force an overflow).
const STALL_VAR: &str = "DRVISOR_EVENT_STALL_MS";

/// Where the events go, opened before the VM is built so a bad path is a usage error.
pub struct Sink {
    name: String,
    out: Box<dyn Write + Send>,
}

/// Opens `--events FILE`, or stderr.
pub fn open(path: Option<&std::path::Path>) -> Result<Sink, Failure> {
    Ok(match path {
        None => Sink {
            name: "stderr".into(),
            out: Box::new(std::io::stderr()),
        },
        Some(path) => {
            let shown = path.display().to_string();
            let name = drvisor::quote::cut(&shown);
            let file = match inherited_fd(path) {
                Some(fd) => inherited(fd).map_err(|e| {
                    Failure::usage(format!(
                        "--events {name}: descriptor {fd} is not open for writing: {e}"
                    ))
                })?,
                None => std::fs::File::create(path).map_err(|e| {
                    Failure::usage(format!("--events {name}: cannot create it: {e}"))
                })?,
            };
            Sink {
                name: path.display().to_string(),
                out: Box::new(file),
            }
        }
    })
}

/// The descriptor that `/dev/fd/N` or `/proc/self/fd/N` names. Such a file is used through the
/// inherited descriptor, as a shell's `>&N` would, not opened again by name: a file whose name is
/// gone (an unlinked temporary file on 9p) cannot be reopened there.
fn inherited_fd(path: &std::path::Path) -> Option<std::os::fd::RawFd> {
    let path = path.to_str()?;
    let n = path
        .strip_prefix("/dev/fd/")
        .or_else(|| path.strip_prefix("/proc/self/fd/"))?;
    n.parse().ok().filter(|&fd| fd >= 0)
}

/// A new descriptor for the inherited `fd`, which must be open for writing.
fn inherited(fd: std::os::fd::RawFd) -> std::io::Result<std::fs::File> {
    // SAFETY: fcntl(F_GETFL) only reads the descriptor's flags; an fd that is not open gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) makes a new descriptor for `fd`, checked open above; the
    // result, when not -1, is a descriptor this process now owns alone.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh, open descriptor owned by no one else.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(dup) })
}

/// The running writer and the bus it reads.
pub struct EventsOut {
    bus: Arc<EventBus<Event>>,
    writer: JoinHandle<WriterReport>,
    sink: String,
}

impl EventsOut {
    /// Starts the writer on `sink`, reading its own view of `bus`. A write error ends the run
    /// through `control`.
    pub fn start(
        sink: Sink,
        bus: Arc<EventBus<Event>>,
        control: Arc<RunControl>,
    ) -> Result<EventsOut, Failure> {
        let capacity = knob(CAPACITY_VAR).unwrap_or(DEFAULT_CAPACITY as u64) as usize;
        let options = WriterOptions {
            stall: Duration::from_millis(knob(STALL_VAR).unwrap_or(0)),
        };
        let name = sink.name.clone();
        let writer = spawn_writer(
            bus.subscribe_lossless(capacity),
            sink.out,
            options,
            move |e| {
                control.finish(Outcome::EventsUnwritable {
                    sink: name,
                    message: e.to_string(),
                })
            },
        )
        .map_err(|e| Failure::vmm(format!("cannot start the event writer: {e}")))?;
        Ok(EventsOut {
            bus,
            writer,
            sink: sink.name,
        })
    }

    /// Publishes the page engine's trap counts.
    pub fn page_traps(&self, traps: u64, false_traps: u64) {
        self.bus
            .publish(Event::PageTraps(PageTraps::new(traps, false_traps)));
    }

    /// Closes the bus and waits until everything queued is written. A write error (during the
    /// run or now) turns `outcome` into `EventsUnwritable`, unless the run already ended so.
    pub fn finish(self, outcome: Outcome) -> Outcome {
        self.bus.close();
        let report = self.writer.join().unwrap_or_else(|_| WriterReport {
            error: Some(std::io::Error::other("the event writer panicked")),
            ..Default::default()
        });
        tracing::debug!(
            "events: {} written, {} reported lost",
            report.written,
            report.lost
        );
        match report.error {
            Some(e) if !matches!(outcome, Outcome::EventsUnwritable { .. }) => {
                Outcome::EventsUnwritable {
                    sink: self.sink,
                    message: e.to_string(),
                }
            }
            _ => outcome,
        }
    }
}

fn knob(var: &str) -> Option<u64> {
    std::env::var(var).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn inherited_descriptor_names() {
        assert_eq!(inherited_fd(Path::new("/proc/self/fd/3")), Some(3));
        assert_eq!(inherited_fd(Path::new("/dev/fd/12")), Some(12));
        for other in [
            "/tmp/events",
            "/dev/fd/x",
            "/dev/fd/-1",
            "/proc/self/fd/",
            "/dev/fd/3/a",
        ] {
            assert_eq!(inherited_fd(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn a_closed_or_read_only_descriptor_is_refused() {
        assert!(inherited(-1).is_err());
        let read_only = std::fs::File::open("/proc/self/stat").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&read_only);
        assert!(inherited(fd).is_err());
    }
}
