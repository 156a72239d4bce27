//! The exit device: the guest ends the run by writing its status to port 0xf4.
//!
//! The port is the one QEMU's `isa-debug-exit` conventionally uses. How the value the guest
//! writes becomes drvisor's process exit code is the [`ExitStatus`] encoding.

use std::sync::Arc;

use super::PioDevice;
use crate::outcome::Outcome;
use crate::run_control::RunControl;

/// The exit port.
pub const EXIT_PORT: u16 = 0xf4;
/// Ports the device owns: kvm-unit-tests writes 4 bytes (`outl`), as `iosize=4` in QEMU.
pub const EXIT_PORTS: u16 = 4;

/// How the value written becomes the exit status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitStatus {
    /// The first byte written, unchanged (drvisor's test guest).
    #[default]
    Raw,
    /// `(value << 1) | 1`, truncated to 8 bits as a process status is, as QEMU's
    /// `isa-debug-exit` does and kvm-unit-tests' scripts expect.
    Qemu,
}

impl ExitStatus {
    /// The process status for the bytes `data` written at the port's first byte.
    pub fn status(self, data: &[u8]) -> u8 {
        let value = value_of(data);
        match self {
            ExitStatus::Raw => value as u8,
            ExitStatus::Qemu => ((value << 1) | 1) as u8,
        }
    }
}

/// A name that is no exit-status encoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an exit-status encoding; use raw or qemu")]
pub struct UnknownExitStatus(pub String);

impl std::str::FromStr for ExitStatus {
    type Err = UnknownExitStatus;
    fn from_str(s: &str) -> Result<Self, UnknownExitStatus> {
        match s {
            "raw" => Ok(ExitStatus::Raw),
            "qemu" => Ok(ExitStatus::Qemu),
            _ => Err(UnknownExitStatus(crate::quote::cut(s).into_owned())),
        }
    }
}

/// The little-endian value of the (up to 4) bytes written.
fn value_of(data: &[u8]) -> u32 {
    let mut value = [0u8; 4];
    for (v, d) in value.iter_mut().zip(data) {
        *v = *d;
    }
    u32::from_le_bytes(value)
}

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
