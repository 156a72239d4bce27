//! Memory-mapped devices outside guest RAM: guest accesses that KVM reports as
//! `KVM_EXIT_MMIO` at addresses no memslot covers.

use std::sync::{Arc, Mutex};

/// A device that answers guest MMIO.
pub trait MmioDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` within the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` within the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Addresses `base..base+len`, owned by `device`.
struct MmioRange {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn MmioDevice>>,
}

/// MMIO devices by address range; immutable once built, each device with its own lock.
#[derive(Default)]
pub struct MmioBus {
    devices: Vec<MmioRange>,
}

impl MmioBus {
    /// Gives `base..base+len` to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn MmioDevice>>) {
        self.devices.push(MmioRange { base, len, device });
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<dyn MmioDevice>>)> {
        self.devices
            .iter()
            .find(|r| addr >= r.base && addr - r.base < r.len)
            .map(|r| (addr - r.base, &r.device))
    }

    /// Performs a read if a device owns `addr`; false if none does.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Performs a write if a device owns `addr`; false if none does.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}
