//! COM1 output, whole-line locking, number printing and the exit port.
//!
//! No `core::fmt` anywhere: the prebuilt `core` formats integers with SSE, which the emulating
//! KVM on the CI machines cannot execute at CPL0. Numbers are printed by `Line::dec`/`Line::hex`.
//!
//! Bytes are written straight to the COM1 data port 0x3f8 (no LSR polling: every VMM the guest
//! runs under accepts the write at once). A line is built under a spinlock, so lines from
//! different CPUs never interleave; the lock is re-entrant for the CPU holding it, so a panic or
//! an unexpected exception in the middle of a line still gets printed instead of deadlocking.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::boot::cpu_index;

const COM1: u16 = 0x3f8;
/// Writing a byte here ends the run; the byte is the exit status.
const EXIT_PORT: u16 = 0xf4;

/// 0 = free, otherwise (owner cpu index + 1).
static LOCK: AtomicU32 = AtomicU32::new(0);

/// Write one byte to an I/O port.
///
/// # Safety
/// Port I/O has device side effects; callers must only write ports whose effect they intend.
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

fn put(byte: u8) {
    // SAFETY: COM1 THR; writing it only emits a character.
    unsafe { outb(COM1, byte) };
}

/// Ends the run: writes `status` to the exit port, then parks the CPU.
pub fn exit(status: u8) -> ! {
    // SAFETY: the exit port is the documented way for the guest to stop the VM.
    unsafe { outb(EXIT_PORT, status) };
    crate::boot::park()
}

/// One output line, `drv: ` prefix already written; the newline and unlock happen on drop.
pub struct Line {
    nested: bool,
}

/// Start a line (takes the print lock; re-entrant for the CPU that already holds it).
pub fn line() -> Line {
    let me = cpu_index() as u32 + 1;
    let nested = loop {
        match LOCK.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break false,
            Err(owner) if owner == me => break true,
            Err(_) => core::hint::spin_loop(),
        }
    };
    let mut l = Line { nested };
    if nested {
        // We interrupted our own half-written line: finish it first.
        put(b'\n');
    }
    l.s("drv: ");
    l
}

impl Line {
    /// Append a string.
    pub fn s(&mut self, s: &str) -> &mut Self {
        self.b(s.as_bytes())
    }

    /// Append raw bytes.
    pub fn b(&mut self, bytes: &[u8]) -> &mut Self {
        for &c in bytes {
            put(c);
        }
        self
    }

    /// Append an unsigned decimal number.
    pub fn dec(&mut self, mut v: u64) -> &mut Self {
        // Written without indexing so no bounds-check panic path (which would drag the SSE
        // integer formatting of core::fmt into the binary) is generated.
        let mut buf = [0u8; 20]; // u64::MAX has 20 digits
        let mut len = 0;
        for slot in buf.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
            len += 1;
            if v == 0 {
                break;
            }
        }
        self.b(buf.get(buf.len() - len..).unwrap_or(&[]))
    }

    /// Append `0x` and a lowercase hex number without leading zeros (`0x0` for zero).
    pub fn hex(&mut self, v: u64) -> &mut Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        self.s("0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let d = ((v >> (shift * 4)) & 0xf) as usize;
            if d != 0 || started || shift == 0 {
                started = true;
                put(DIGITS[d]);
            }
        }
        self
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        put(b'\n');
        if !self.nested {
            LOCK.store(0, Ordering::Release);
        }
    }
}
