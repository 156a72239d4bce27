//! The host's signal to the guest, on port 0x520: a read returns how many times the host has
//! signalled (saturating at 255); writes are ignored.
//!
//! A guest that must wait for the host (the test guest's `ranges` scenario with `until=signal`)
//! polls it, so a test can tie each of its steps to the guest's progress instead of to this
//! host's speed. Clients of the engine (the REST plane, the CI harness) can raise it too.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::PioDevice;

/// The port.
pub const HOST_SIGNAL_PORT: u16 = 0x520;

/// The count the guest reads, shared between the device and whoever signals.
#[derive(Debug, Default)]
pub struct HostSignal(AtomicU8);

impl HostSignal {
    /// Signals the guest once more.
    pub fn raise(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1));
    }

    /// How many times the host has signalled.
    pub fn count(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
}

/// The port device over a shared [`HostSignal`].
pub struct HostSignalPort(pub Arc<HostSignal>);

impl PioDevice for HostSignalPort {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.0.count();
        }
    }

    fn write(&mut self, _offset: u16, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_count_the_signals_and_saturate() {
        let signal = Arc::new(HostSignal::default());
        let mut port = HostSignalPort(signal.clone());
        let mut data = [0xaa; 2];
        port.read(0, &mut data);
        assert_eq!(data, [0, 0]);
        signal.raise();
        port.read(0, &mut data[..1]);
        assert_eq!(data[0], 1);
        for _ in 0..300 {
            signal.raise();
        }
        port.read(0, &mut data[..1]);
        assert_eq!(data[0], 255);
    }
}
