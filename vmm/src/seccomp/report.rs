//! What happens when a thread makes a call its filter forbids: the kernel sends the thread
//! SIGSYS (the filters' `Trap` action), and the handler here says which thread made which
//! call, on stderr, and ends the process.
//!
//! The handler may only make async-signal-safe calls: it formats into a stack buffer and
//! calls `prctl`, `write` and `_exit` directly.

use super::rules::syscall_name;

/// The exit code of a run ended by a forbidden system call.
pub const EXIT_CODE: u8 = crate::outcome::exit_code::SECCOMP_VIOLATION;

/// Installs the SIGSYS handler for the whole process.
pub(super) fn install() -> Result<(), super::Error> {
    // SAFETY: an all-zero sigaction is a valid value of the C struct (no handler, empty mask,
    // no flags); every field the kernel reads is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigsys as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: sigaction(2) with a valid signal number, a fully initialised struct, and a null
    // old-action pointer; `on_sigsys` has the SA_SIGINFO handler's signature and makes only
    // async-signal-safe calls.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(super::Error::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The offset of `si_syscall` in a SIGSYS `siginfo_t` on x86-64: after `si_signo`, `si_errno`,
/// `si_code` (3 x 4 bytes, padded to 16) comes `_sigsys { void *_call_addr; int _syscall; ... }`.
const SI_SYSCALL_OFFSET: usize = 16 + 8;

extern "C" fn on_sigsys(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler; for SIGSYS from a
    // seccomp filter its `_sigsys` member is the one filled, and `si_syscall` is an int at
    // SI_SYSCALL_OFFSET within the struct (see the constant), inside its 128 bytes.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let mut thread = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (the name and its NUL) into the buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, thread.as_mut_ptr(), 0, 0, 0) };
    let name_len = thread.iter().position(|&b| b == 0).unwrap_or(thread.len());

    let mut line = Line::default();
    line.push(b"drvisor: seccomp: the thread `");
    line.push(&thread[..name_len]);
    line.push(b"` made system call ");
    line.number(i64::from(nr));
    if let Some(name) = syscall_name(i64::from(nr)) {
        line.push(b" (");
        line.push(name.as_bytes());
        line.push(b")");
    }
    line.push(b", which its filter forbids; the run ends (exit code ");
    line.number(i64::from(EXIT_CODE));
    line.push(b"). It is a drvisor bug if drvisor made it (please report it); `--seccomp none` runs without filters\n");
    // SAFETY: write(2) of an initialised buffer to stderr, then _exit(2): both are
    // async-signal-safe, and _exit runs no destructor or atexit handler.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(i32::from(EXIT_CODE));
    }
}

/// A fixed buffer a signal handler can format into.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn number(&mut self, mut n: i64) {
        if n < 0 {
            self.push(b"-");
            n = n.wrapping_neg();
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_formats_numbers_and_stops_at_its_end() {
        let mut line = Line::default();
        line.push(b"call ");
        line.number(59);
        line.push(b" ");
        line.number(0);
        line.push(b" ");
        line.number(-3);
        assert_eq!(&line.buf[..line.len], b"call 59 0 -3");
        line.push(&[b'x'; 600]);
        assert_eq!(line.len, 512);
    }
}
