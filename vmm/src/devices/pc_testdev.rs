//! QEMU's `pc-testdev` (hw/misc/pc-testdev.c), as far as the kvm-unit-tests images here use it:
//! - port 0xe0: a 32-bit scratch register that reads back what was written (the `ins`/`outs`
//!   tests of `emulator`);
//! - MMIO RAM at 0xff000000, 64 KiB (`IORAM_BASE_PHYS`): memory that is not RAM to KVM, so every
//!   access to it exits and is emulated (the `emulator` test runs its instructions on it).
//!
//! Its other ports (0xe4 IRQ lines, 0xe8 page flush) are used by no image we run, so they are
//! not offered.

use super::{MmioDevice, PioDevice};

/// The scratch port.
pub const TESTDEV_PORT: u16 = 0xe0;
/// Its width.
pub const TESTDEV_PORTS: u16 = 4;
/// Where the MMIO RAM is.
pub const IOMEM_BASE: u64 = 0xff00_0000;
/// Its size.
pub const IOMEM_LEN: u64 = 0x1_0000;

/// The scratch port: reads return the bytes last written.
#[derive(Default)]
pub struct TestDevPort {
    value: [u8; TESTDEV_PORTS as usize],
}

impl PioDevice for TestDevPort {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.value.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(v) = self.value.get_mut(offset as usize + i) {
                *v = *b;
            }
        }
    }
}

/// The MMIO RAM.
pub struct TestDevIomem {
    bytes: Vec<u8>,
}

impl Default for TestDevIomem {
    fn default() -> Self {
        TestDevIomem {
            bytes: vec![0; IOMEM_LEN as usize],
        }
    }
}

impl MmioDevice for TestDevIomem {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset as usize + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(v) = self.bytes.get_mut(offset as usize + i) {
                *v = *b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_port_and_iomem_read_back_what_was_written() {
        let mut port = TestDevPort::default();
        port.write(0, &[1, 2, 3, 4]);
        let mut d = [0u8; 2];
        port.read(2, &mut d);
        assert_eq!(d, [3, 4]);
        let mut mem = TestDevIomem::default();
        mem.write(IOMEM_LEN - 2, &[9, 8, 7]);
        let mut d = [0u8; 3];
        mem.read(IOMEM_LEN - 2, &mut d);
        assert_eq!(d, [9, 8, 0xff]);
    }
}
