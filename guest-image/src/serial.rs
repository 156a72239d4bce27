//! COM1 output, whole-line locking, number printing and the exit port.
//!
//! No `core::fmt` anywhere: the prebuilt `core` formats integers with SSE, which the emulating
//! KVM on the CI machines cannot execute at CPL0. Numbers are printed by `Line::dec`/`Line::hex`.
//!
//! Bytes are written straight to the COM1 data port 0x3f8 (no LSR polling: every VMM the guest
//! runs under accepts the write at once). Input (the `echo` scenario only) is read by polling
//! LSR bit 0 and reading RBR: `rx_init` and `try_read`. A line is built under a spinlock, so lines from
//! different CPUs never interleave; the lock is re-entrant for the CPU holding it, so a panic or
//! an unexpected exception in the middle of a line still gets printed instead of deadlocking.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::boot::cpu_index;

const COM1: u16 = 0x3f8;
/// COM1 registers at offsets from `COM1` (DLAB clear): interrupt enable, line control, modem
/// control, line status.
const COM1_IER: u16 = COM1 + 1;
const COM1_LCR: u16 = COM1 + 3;
const COM1_MCR: u16 = COM1 + 4;
const COM1_LSR: u16 = COM1 + 5;
/// LSR bit 0: the receive buffer (FIFO) holds at least one byte.
const LSR_DATA_READY: u8 = 0x01;
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

/// Read one byte from an I/O port.
///
/// # Safety
/// Port reads can have device side effects (reading RBR pops the UART's receive FIFO).
#[inline(always)]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Puts COM1 in the state receiving needs, without touching data already received: no
/// interrupts (IER = 0; the guest polls), LCR = 8N1 with DLAB clear (so offset 0 is RBR, not the
/// divisor latch), MCR = DTR | RTS | OUT2 with loopback off (in loopback the UART would take no
/// outside input). The FIFO control register is not written: a FIFO reset would drop bytes the
/// VMM queued before the guest got here.
pub fn rx_init() {
    // SAFETY: COM1 control registers; these writes only configure the UART.
    unsafe {
        outb(COM1_IER, 0x00);
        outb(COM1_LCR, 0x03);
        outb(COM1_MCR, 0x0b);
    }
}

/// One poll of COM1: reads LSR once; if bit 0 (data ready) is set, reads RBR (popping one byte
/// off the receive FIFO) and returns it.
pub fn try_read() -> Option<u8> {
    // SAFETY: reading LSR has no side effect the guest cares about; reading RBR pops the byte
    // that LSR just said is there, which is the point.
    unsafe {
        if inb(COM1_LSR) & LSR_DATA_READY != 0 {
            Some(inb(COM1))
        } else {
            None
        }
    }
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
    let mut l = bare_line();
    l.s("drv: ");
    l
}

/// Start a line without the `drv: ` prefix (for formats with their own, such as KTAP).
pub fn bare_line() -> Line {
    let me = cpu_index() as u32 + 1;
    let nested = loop {
        match LOCK.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break false,
            Err(owner) if owner == me => break true,
            Err(_) => core::hint::spin_loop(),
        }
    };
    let l = Line { nested };
    if nested {
        // We interrupted our own half-written line: finish it first.
        put(b'\n');
    }
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
