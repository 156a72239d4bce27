//! A port-I/O bus: ranges of ports, each owned by one device.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A device that answers guest port I/O.
pub trait PioDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` within the device's range.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// The guest writes `data` at `offset` within the device's range.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// What happened to a guest port access.
#[derive(Debug, PartialEq, Eq)]
pub enum PortAccess {
    /// A device took it.
    Handled,
    /// No device owns the port, and this is the first access to it.
    FirstUnknown,
    /// No device owns the port; it was reported before.
    RepeatedUnknown,
}

/// Ports `base..base+len`, owned by `device`.
struct PortRange {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// Devices by port range. Shared by every vCPU thread; each device has its own lock, so the
/// bus itself is immutable once built and needs none.
#[derive(Default)]
pub struct PioBus {
    devices: Vec<PortRange>,
    unknown_seen: Mutex<BTreeSet<u16>>,
}

impl PioBus {
    /// Gives ports `base..base+len` to `device`. Ranges never overlap: a port belongs to one
    /// device, and a second claim is a bug in the machine's layout (two devices silently
    /// sharing a port would make one of them unreachable).
    pub fn insert(&mut self, base: u16, len: u16, device: Arc<Mutex<dyn PioDevice>>) {
        let end = u32::from(base) + u32::from(len);
        assert!(
            self.devices.iter().all(|r| {
                end <= u32::from(r.base) || u32::from(r.base) + u32::from(r.len) <= u32::from(base)
            }),
            "port range {base:#x}+{len} overlaps a device already on the bus"
        );
        self.devices.push(PortRange { base, len, device });
    }

    fn find(&self, port: u16) -> Option<(u16, &Arc<Mutex<dyn PioDevice>>)> {
        self.devices
            .iter()
            .find(|r| port >= r.base && port - r.base < r.len)
            .map(|r| (port - r.base, &r.device))
    }

    fn unknown(&self, port: u16) -> PortAccess {
        let mut seen = self.unknown_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(port) {
            PortAccess::FirstUnknown
        } else {
            PortAccess::RepeatedUnknown
        }
    }

    /// Routes a guest `in`. Unowned ports read as all ones, like an empty ISA bus.
    pub fn read(&self, port: u16, data: &mut [u8]) -> PortAccess {
        match self.find(port) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                PortAccess::Handled
            }
            None => {
                data.fill(0xff);
                self.unknown(port)
            }
        }
    }

    /// Routes a guest `out`.
    pub fn write(&self, port: u16, data: &[u8]) -> PortAccess {
        match self.find(port) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                PortAccess::Handled
            }
            None => self.unknown(port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "overlaps a device already on the bus")]
    fn a_port_claimed_twice_is_a_layout_bug() {
        let mut bus = PioBus::default();
        let latch = Arc::new(Mutex::new(Latch(Vec::new())));
        bus.insert(0xf4, 4, latch.clone());
        bus.insert(0xf5, 1, latch);
    }

    struct Latch(Vec<(u16, u8)>);
    impl PioDevice for Latch {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn routes_by_range_and_reports_unknown_ports_once() {
        let latch = Arc::new(Mutex::new(Latch(vec![])));
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, latch.clone());
        assert_eq!(bus.write(0x3fb, &[7]), PortAccess::Handled);
        let mut b = [0u8];
        assert_eq!(bus.read(0x3f9, &mut b), PortAccess::Handled);
        assert_eq!(b[0], 1);
        assert_eq!(latch.lock().unwrap().0, vec![(3, 7)]);
        assert_eq!(bus.write(0x400, &[1]), PortAccess::FirstUnknown);
        assert_eq!(bus.read(0x400, &mut b), PortAccess::RepeatedUnknown);
        assert_eq!(b[0], 0xff);
    }
}
