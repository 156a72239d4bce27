//! How the value a guest writes to the exit port becomes drvisor's process exit status.

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
pub fn value_of(data: &[u8]) -> u32 {
    let mut value = [0u8; 4];
    for (v, d) in value.iter_mut().zip(data) {
        *v = *d;
    }
    u32::from_le_bytes(value)
}
