//! `echo`: reads one line of console input from COM1 by polling, proving the VMM feeds host
//! input into the UART's receive FIFO.
//!
//! Prints `drv: scenario=echo ready`, then polls LSR (one poll = one read of port 0x3fd) and
//! reads RBR whenever bit 0 is set, until it has read a `\n` or `MAX_BYTES` bytes, or has polled
//! `polls` times (command line, default 500000) in all. Then
//! `drv: scenario=echo got=TEXT len=N` (TEXT = the bytes before the `\n`, printable ASCII as
//! is and every other byte as `?`; N = their number) and status 0, or
//! `drv: scenario=echo timeout` and status 1.

use crate::cmdline::Config;
use crate::serial;

/// Most bytes read: a line with no `\n` among its first `MAX_BYTES` bytes ends after them.
const MAX_BYTES: usize = 200;

pub fn run(cfg: &Config) -> ! {
    serial::rx_init();
    serial::line().s("scenario=echo ready");

    let mut buf = [0u8; MAX_BYTES];
    let mut len = 0usize; // bytes kept in `buf` (the newline is not kept)
    let mut complete = false;
    let mut polls = 0u64;
    while polls < cfg.polls {
        polls += 1;
        let Some(byte) = serial::try_read() else {
            continue;
        };
        if byte == b'\n' {
            complete = true;
            break;
        }
        // `get_mut` instead of indexing: no bounds-check panic path (see serial.rs).
        if let Some(slot) = buf.get_mut(len) {
            *slot = if byte == b' ' || byte.is_ascii_graphic() {
                byte
            } else {
                b'?'
            };
        }
        len += 1;
        if len >= MAX_BYTES {
            complete = true;
            break;
        }
    }

    if complete {
        serial::line()
            .s("scenario=echo got=")
            .b(buf.get(..len).unwrap_or(&[]))
            .s(" len=")
            .dec(len as u64);
        crate::finish(0)
    } else {
        serial::line().s("scenario=echo timeout");
        crate::finish(1)
    }
}
