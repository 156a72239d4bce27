//! COM1: a 16550A UART from vm-superio, with guest output to a writer and host stdin as input.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
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

/// The serial console.
///
/// It faces two ways, as vmm-reference's `SerialWrapper` does: guest port I/O from the vCPU
/// threads ([`PioDevice`]) and host stdin from the event loop ([`MutEventSubscriber`]). Both hold
/// it as `Arc<Mutex<SerialConsole>>`.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    input: Option<std::io::Stdin>,
}

impl SerialConsole {
    /// A console writing guest output to `out`, raising `irq`, and reading `input` if given.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>, input: Option<std::io::Stdin>) -> Self {
        SerialConsole {
            uart: Serial::new(IrqTrigger(irq), out),
            input,
        }
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
        if let Some(stdin) = &self.input {
            // epoll refuses regular files and /dev/null (EPERM): such a stdin has no
            // interactive input to forward, so the console simply runs without it.
            if let Err(e) = ops.add(Events::new(stdin, EventSet::IN)) {
                tracing::debug!("serial: not reading stdin: {e:?}");
            }
        }
    }

    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        let Some(stdin) = &self.input else { return };
        let mut buf = [0u8; 64];
        // Read only as much as the UART FIFO can take, so no input is dropped.
        let room = self.uart.fifo_capacity().min(buf.len());
        let n = if room == 0 {
            return;
        } else {
            stdin.lock().read(&mut buf[..room])
        };
        match n {
            Ok(0) | Err(_) => {
                // EOF or a broken stdin: stop watching it.
                let _ = ops.remove(Events::empty_raw(stdin.as_raw_fd()));
            }
            Ok(n) => {
                if let Err(e) = self.uart.enqueue_raw_bytes(&buf[..n]) {
                    tracing::warn!("serial: input dropped: {e}");
                }
            }
        }
    }
}
