//! COM1: a 16550A UART from vm-superio, with guest output to a writer and host stdin as input.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::PioDevice;

/// COM1's first port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's ISA interrupt, routed through the in-kernel irqchip.
pub const COM1_GSI: u32 = 4;

/// Raises the UART's interrupt through an irqfd.
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Tells the event loop that the UART's receive FIFO has drained, so stdin may be read again.
pub struct RoomEvents(EventFd);

impl SerialEvents for RoomEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.0.write(1);
    }
}

/// Host stdin as console input, read straight from the descriptor: a buffered reader would
/// keep bytes epoll no longer reports.
struct ConsoleInput {
    fd: RawFd,
    /// Written when the FIFO drains (see [`RoomEvents`]).
    room: EventFd,
    /// Stdin is out of the epoll set until the FIFO has room.
    paused: bool,
}

/// The serial console.
///
/// It faces two ways, as vmm-reference's `SerialWrapper` does: guest port I/O from the vCPU
/// threads ([`PioDevice`]) and host stdin from the event loop ([`MutEventSubscriber`]). Both hold
/// it as `Arc<Mutex<SerialConsole>>`.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, RoomEvents, Box<dyn Write + Send>>,
    input: Option<ConsoleInput>,
}

impl SerialConsole {
    /// A console writing guest output to `out`, raising `irq`, and reading the process's stdin
    /// if `stdin` is set.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>, stdin: bool) -> std::io::Result<Self> {
        let room = EventFd::new(libc::EFD_NONBLOCK)?;
        let events = RoomEvents(room.try_clone()?);
        Ok(SerialConsole {
            uart: Serial::with_events(IrqTrigger(irq), events, out),
            input: stdin.then(|| ConsoleInput {
                fd: libc::STDIN_FILENO,
                room,
                paused: false,
            }),
        })
    }

    /// Flushes guest output that is still buffered.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl PioDevice for SerialConsole {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let Some(&b) = data.first() {
            if let Err(e) = self.uart.write(offset as u8, b) {
                tracing::warn!("serial: {e}");
            }
        }
    }
}

impl MutEventSubscriber for SerialConsole {
    fn init(&mut self, ops: &mut EventOps) {
        let Some(input) = &self.input else { return };
        // epoll refuses regular files and /dev/null (EPERM): such a stdin has no interactive
        // input to forward, so the console simply runs without it.
        if let Err(e) = ops.add(Events::new_raw(input.fd, EventSet::IN)) {
            tracing::debug!("serial: not reading stdin: {e:?}");
            self.input = None;
            return;
        }
        if let Err(e) = ops.add(Events::new(&input.room, EventSet::IN)) {
            tracing::warn!("serial: input flow control unavailable: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let Some(input) = &mut self.input else { return };
        if events.fd() == input.room.as_raw_fd() {
            let _ = input.room.read();
            if input.paused && ops.add(Events::new_raw(input.fd, EventSet::IN)).is_ok() {
                input.paused = false;
            }
            return;
        }
        // Read only as much as the UART FIFO can take, so no input is dropped; with no room,
        // stop watching stdin until the guest drains the FIFO.
        let mut buf = [0u8; 64];
        let room = self.uart.fifo_capacity().min(buf.len());
        if room == 0 {
            if ops.remove(Events::empty_raw(input.fd)).is_ok() {
                input.paused = true;
            }
            return;
        }
        // SAFETY: `buf` is valid for `room` bytes, and `input.fd` is the process's stdin.
        let n = unsafe { libc::read(input.fd, buf.as_mut_ptr().cast(), room) };
        match n {
            n if n > 0 => {
                if let Err(e) = self.uart.enqueue_raw_bytes(&buf[..n as usize]) {
                    tracing::warn!("serial: input dropped: {e}");
                }
            }
            n if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {}
            _ => {
                // EOF or a broken stdin: stop watching it.
                let _ = ops.remove(Events::empty_raw(input.fd));
                let _ = ops.remove(Events::empty(&input.room));
                self.input = None;
            }
        }
    }
}
