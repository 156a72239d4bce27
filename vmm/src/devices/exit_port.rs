//! The exit device: the guest ends the run by writing its status byte to port 0xf4.
//!
//! The port is the one QEMU's `isa-debug-exit` conventionally uses, but the status is passed
//! through unchanged: the byte the guest writes becomes drvisor's process exit code.

use std::sync::Arc;

use super::PioDevice;
use crate::outcome::Outcome;
use crate::run_control::RunControl;

/// The exit port.
pub const EXIT_PORT: u16 = 0xf4;

/// Ends the run with the status the guest writes.
pub struct ExitPort {
    control: Arc<RunControl>,
}

impl ExitPort {
    /// An exit port that reports to `control`.
    pub fn new(control: Arc<RunControl>) -> Self {
        ExitPort { control }
    }
}

impl PioDevice for ExitPort {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u16, data: &[u8]) {
        let status = data.first().copied().unwrap_or(0);
        self.control.finish(Outcome::GuestExit { status });
    }
}
