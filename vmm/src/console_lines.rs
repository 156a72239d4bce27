//! drvisor's own messages and the guest's console, on one screen without splitting a line.
//!
//! The guest's serial output goes to stdout byte by byte, as the guest writes it; drvisor's
//! messages (warnings, `--show-plan`, the closing line) go to stderr. When both reach one
//! terminal or pipe, a message written while the guest is in the middle of a line cuts that
//! line in two (`ddrvisor: slot plan ...` then `rv: scenario=...`).
//!
//! So every message goes through [`ConsoleLines`]:
//! - while the guest's current line is complete, a message is written at once;
//! - while it is incomplete, the message is held until the guest ends its line, and then
//!   written right after that newline;
//! - a guest that does not end its line within [`HOLD_BOUND`] (a prompt, a hung guest) does not
//!   hold messages back longer: they are written then, starting on a fresh line.
//!
//! Where stdout and stderr are different files, nothing is held. The decisions are the pure
//! [`LineGate`]; [`ConsoleLines`] applies them to the process's stdout and stderr.

use std::io::Write;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The longest a message waits for the guest to end its line.
pub const HOLD_BOUND: Duration = Duration::from_millis(500);

/// Where the guest's console line stands, and the messages held for its end. Pure: time is
/// passed in.
#[derive(Debug, Default)]
pub struct LineGate {
    /// The guest has written part of a line.
    mid_line: bool,
    /// Messages waiting for the guest's newline, in order.
    held: Vec<u8>,
    /// When the first held message must go out at the latest.
    deadline: Option<Instant>,
}

impl LineGate {
    /// The guest wrote `bytes`. Returns what to write to stderr right after them: the held
    /// messages, if the guest's line is now complete.
    pub fn guest_wrote(&mut self, bytes: &[u8]) -> Vec<u8> {
        if let Some(&last) = bytes.last() {
            self.mid_line = last != b'\n';
        }
        if self.mid_line {
            Vec::new()
        } else {
            self.release()
        }
    }

    /// drvisor has `message` (whole lines) to show. Returns what to write to stderr now:
    /// nothing while the guest is mid-line (the message is held until `now + bound`).
    pub fn message(&mut self, message: &[u8], now: Instant, bound: Duration) -> Vec<u8> {
        if !self.mid_line && self.held.is_empty() {
            return message.to_vec();
        }
        self.held.extend_from_slice(message);
        self.deadline.get_or_insert(now + bound);
        if self.mid_line {
            Vec::new()
        } else {
            self.release()
        }
    }

    /// Time has passed. Returns what to write to stderr now: held messages whose bound has
    /// run out, after a newline that ends the guest's unfinished line on screen.
    pub fn tick(&mut self, now: Instant) -> Vec<u8> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                let mut out = Vec::with_capacity(self.held.len() + 1);
                if self.mid_line {
                    out.push(b'\n');
                    // The screen is at the start of a line now; the guest's next bytes begin one.
                    self.mid_line = false;
                }
                out.extend(self.release());
                out
            }
            _ => Vec::new(),
        }
    }

    /// When [`LineGate::tick`] has something to do, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn release(&mut self) -> Vec<u8> {
        self.deadline = None;
        std::mem::take(&mut self.held)
    }
}

/// The process's console: the guest's output on stdout, drvisor's messages on stderr, kept
/// from splitting each other's lines.
pub struct ConsoleLines {
    gate: Mutex<LineGate>,
    /// Wakes the thread that writes messages whose bound ran out.
    wake: Condvar,
    /// Whether stdout and stderr are one file (terminal, pipe or file), so lines can meet.
    shared: bool,
    bound: Duration,
}

impl ConsoleLines {
    /// The process's one console. Messages held for a guest line are written by a thread of
    /// its own once their bound runs out.
    pub fn stdio() -> &'static Arc<ConsoleLines> {
        static CONSOLE: OnceLock<Arc<ConsoleLines>> = OnceLock::new();
        CONSOLE.get_or_init(|| {
            let console = Arc::new(ConsoleLines {
                gate: Mutex::new(LineGate::default()),
                wake: Condvar::new(),
                shared: same_file(libc::STDOUT_FILENO, libc::STDERR_FILENO),
                bound: HOLD_BOUND,
            });
            if console.shared {
                let flusher = console.clone();
                // If the thread cannot start, held messages still go out at the guest's next
                // newline or the final flush.
                let _ = std::thread::Builder::new()
                    .name("console-lines".into())
                    .spawn(move || {
                        crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Helper);
                        flusher.flush_late_messages()
                    });
            }
            console
        })
    }

    /// Shows drvisor's `message` on stderr (whole lines), without splitting a guest line.
    pub fn message(&self, message: &str) {
        if !self.shared {
            let _ = std::io::stderr().lock().write_all(message.as_bytes());
            return;
        }
        let mut gate = self.lock();
        let now = gate.message(message.as_bytes(), Instant::now(), self.bound);
        write_stderr(&now);
        if gate.deadline().is_some() {
            self.wake.notify_one();
        }
    }

    /// Writes the guest's console `bytes` to `out`, then any messages its newline releases.
    pub fn guest_output(&self, out: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
        if !self.shared {
            return out.write_all(bytes);
        }
        let mut gate = self.lock();
        out.write_all(bytes)?;
        out.flush()?;
        write_stderr(&gate.guest_wrote(bytes));
        Ok(())
    }

    /// Writes every held message now (the run is over).
    pub fn flush(&self) {
        let mut gate = self.lock();
        if let Some(deadline) = gate.deadline() {
            write_stderr(&gate.tick(deadline));
        }
    }

    fn flush_late_messages(&self) {
        let mut gate = self.lock();
        loop {
            gate = match gate.deadline() {
                None => self.wake.wait(gate).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        write_stderr(&gate.tick(now));
                        gate
                    } else {
                        self.wake
                            .wait_timeout(gate, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                }
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LineGate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A writer of the guest's console output through [`ConsoleLines`]. Once the reader of `out`
/// went away (`drvisor run ... | head -1`: a broken pipe), the rest of the output is dropped
/// without a word, and the run goes on to its usual end.
pub struct GuestConsole<W: Write> {
    out: W,
    console: Arc<ConsoleLines>,
    reader_gone: bool,
}

impl<W: Write> GuestConsole<W> {
    /// The guest's output to `out`, kept apart from the messages of `console`.
    pub fn new(out: W, console: Arc<ConsoleLines>) -> Self {
        GuestConsole {
            out,
            console,
            reader_gone: false,
        }
    }

    /// `result`, with a broken pipe noted and turned into success.
    fn unless_gone(&mut self, result: std::io::Result<()>) -> std::io::Result<()> {
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(())
            }
            other => other,
        }
    }
}

impl<W: Write> Write for GuestConsole<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.reader_gone {
            let written = self.console.guest_output(&mut self.out, buf);
            self.unless_gone(written)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.reader_gone {
            return Ok(());
        }
        let flushed = self.out.flush();
        self.unless_gone(flushed)
    }
}

/// A writer of drvisor's messages (e.g. for `tracing`): each complete line goes to
/// [`ConsoleLines::message`]; a partial one waits for its newline or the writer's end.
pub struct MessageWriter {
    console: &'static Arc<ConsoleLines>,
    line: Vec<u8>,
}

impl MessageWriter {
    /// A writer of messages to the process's console.
    pub fn stdio() -> Self {
        MessageWriter {
            console: ConsoleLines::stdio(),
            line: Vec::new(),
        }
    }
}

impl Write for MessageWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        if let Some(end) = self.line.iter().rposition(|&b| b == b'\n') {
            let rest = self.line.split_off(end + 1);
            let whole = std::mem::replace(&mut self.line, rest);
            self.console.message(&String::from_utf8_lossy(&whole));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.line.push(b'\n');
            self.console.message(&String::from_utf8_lossy(&self.line));
        }
    }
}

fn write_stderr(bytes: &[u8]) {
    if !bytes.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    }
}

/// Whether descriptors `a` and `b` are the same open file (same device and inode).
fn same_file(a: RawFd, b: RawFd) -> bool {
    let stat = |fd: RawFd| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one `struct stat` into `st`, which has room for it; it is read
        // only when fstat reports success.
        (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0)
            .then(|| unsafe { st.assume_init() })
            .map(|st| (st.st_dev, st.st_ino))
    };
    matches!((stat(a), stat(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_millis(200);

    #[test]
    fn a_message_between_guest_lines_goes_out_at_once() {
        let mut g = LineGate::default();
        let t = Instant::now();
        assert!(g.guest_wrote(b"drv: one\n").is_empty());
        assert_eq!(g.message(b"drvisor: plan\n", t, BOUND), b"drvisor: plan\n");
        assert_eq!(g.deadline(), None);
    }

    #[test]
    fn a_message_mid_line_waits_for_the_guest_newline() {
        let mut g = LineGate::default();
        let t = Instant::now();
        assert!(g.guest_wrote(b"d").is_empty());
        assert!(g.message(b"drvisor: plan\n", t, BOUND).is_empty());
        assert!(g.message(b"drvisor: more\n", t, BOUND).is_empty());
        assert!(g.guest_wrote(b"rv: scenario=x").is_empty());
        assert!(g.tick(t + BOUND / 2).is_empty());
        assert_eq!(g.guest_wrote(b"\n"), b"drvisor: plan\ndrvisor: more\n");
        assert_eq!(g.deadline(), None);
        // The next message goes out at once again.
        assert_eq!(g.message(b"m\n", t, BOUND), b"m\n");
    }

    #[test]
    fn a_guest_that_never_ends_its_line_holds_a_message_only_for_the_bound() {
        let mut g = LineGate::default();
        let t = Instant::now();
        g.guest_wrote(b"login: ");
        assert!(g.message(b"drvisor: late\n", t, BOUND).is_empty());
        assert_eq!(g.deadline(), Some(t + BOUND));
        assert!(g.tick(t + BOUND - Duration::from_millis(1)).is_empty());
        // A fresh line, then the message.
        assert_eq!(g.tick(t + BOUND), b"\ndrvisor: late\n");
        // The screen is at a line start: the next message need not wait.
        assert_eq!(g.message(b"x\n", t + BOUND, BOUND), b"x\n");
        // Until the guest writes more of a line.
        g.guest_wrote(b"root");
        assert!(g.message(b"y\n", t + BOUND, BOUND).is_empty());
    }

    #[test]
    fn a_newline_inside_a_write_counts_only_if_last() {
        let mut g = LineGate::default();
        let t = Instant::now();
        g.guest_wrote(b"a\nb");
        assert!(g.message(b"m\n", t, BOUND).is_empty());
        assert!(g.guest_wrote(b"").is_empty());
        assert_eq!(g.guest_wrote(b"c\nd\n"), b"m\n");
    }

    #[test]
    fn the_deadline_is_the_first_held_message_s() {
        let mut g = LineGate::default();
        let t = Instant::now();
        g.guest_wrote(b"x");
        g.message(b"1\n", t, BOUND);
        g.message(b"2\n", t + BOUND / 2, BOUND);
        assert_eq!(g.tick(t + BOUND), b"\n1\n2\n");
    }
}
