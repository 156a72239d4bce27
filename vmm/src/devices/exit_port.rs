//! The exit device: the guest ends the run by writing its status to port 0xf4.
//!
//! The port is the one QEMU's `isa-debug-exit` conventionally uses. How the value the guest
//! writes becomes drvisor's process exit code is the [`ExitStatus`] encoding.

use std::sync::Arc;

use super::PioDevice;
use crate::exit_status::value_of;
pub use crate::exit_status::{ExitStatus, UnknownExitStatus};
use crate::outcome::Outcome;
use crate::run_control::RunControl;

/// The exit port.
pub const EXIT_PORT: u16 = 0xf4;
/// Ports the device owns: kvm-unit-tests writes 4 bytes (`outl`), as `iosize=4` in QEMU.
pub const EXIT_PORTS: u16 = 4;

/// Ends the run with the status the guest writes.
pub struct ExitPort {
    control: Arc<RunControl>,
    encoding: ExitStatus,
}

impl ExitPort {
    /// An exit port that reports to `control`, with `encoding`.
    pub fn new(control: Arc<RunControl>, encoding: ExitStatus) -> Self {
        ExitPort { control, encoding }
    }
}

impl PioDevice for ExitPort {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        // Only a write that starts at the port itself carries a status; QEMU ignores others too.
        if offset == 0 {
            let outcome = match self.encoding {
                ExitStatus::Raw => Outcome::GuestExit {
                    status: self.encoding.status(data),
                },
                ExitStatus::Qemu => Outcome::QemuExit {
                    value: value_of(data),
                },
            };
            self.control.finish(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(ExitStatus::Raw.status(&[3]), 3);
        assert_eq!(ExitStatus::Raw.status(&[1, 0, 0, 0]), 1);
        assert_eq!(ExitStatus::Qemu.status(&[0, 0, 0, 0]), 1);
        assert_eq!(ExitStatus::Qemu.status(&[1, 0, 0, 0]), 3);
        assert_eq!(ExitStatus::Qemu.status(&[38, 0, 0, 0]), 77);
        assert_eq!(ExitStatus::Qemu.status(&[63]), 127);
        assert_eq!(
            "other".parse::<ExitStatus>(),
            Err(UnknownExitStatus("other".into()))
        );
    }
}
