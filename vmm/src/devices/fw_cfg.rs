//! QEMU's firmware configuration device, port-I/O interface only (docs/specs/fw_cfg.rst):
//! the guest writes a 16-bit key to the selector port 0x510 and reads the item's bytes, one
//! at a time, from the data port 0x511.
//!
//! drvisor offers what test kernels ask for: the signature, the feature bits (no DMA), the RAM
//! size, the CPU counts and an empty file directory. kvm-unit-tests reads the CPU count
//! (key 0x05) and waits for exactly that many APs. Unknown keys read as zeros, as in QEMU.

use super::PioDevice;

/// The selector port; the data port is the next one.
pub const FW_CFG_PORT: u16 = 0x510;
/// Ports the device owns: selector (16-bit) and data (8-bit).
pub const FW_CFG_PORTS: u16 = 2;

/// `FW_CFG_SIGNATURE`: "QEMU".
pub const KEY_SIGNATURE: u16 = 0x00;
/// `FW_CFG_ID`: feature bitmap; bit 0 = the traditional interface.
pub const KEY_ID: u16 = 0x01;
/// `FW_CFG_RAM_SIZE`: bytes of RAM, u64 little-endian.
pub const KEY_RAM_SIZE: u16 = 0x03;
/// `FW_CFG_NB_CPUS`: u16, the CPUs present at boot.
pub const KEY_NB_CPUS: u16 = 0x05;
/// `FW_CFG_MAX_CPUS`: u16.
pub const KEY_MAX_CPUS: u16 = 0x0f;
/// `FW_CFG_FILE_DIR`: a big-endian count, then the files (none here).
pub const KEY_FILE_DIR: u16 = 0x19;

/// The device: its items and the current read position.
pub struct FwCfg {
    ram_size: u64,
    cpus: u16,
    selected: u16,
    offset: usize,
}

impl FwCfg {
    /// A device describing a VM with `ram_size` bytes of RAM and `cpus` vCPUs.
    pub fn new(ram_size: u64, cpus: u16) -> Self {
        FwCfg {
            ram_size,
            cpus,
            selected: KEY_SIGNATURE,
            offset: 0,
        }
    }

    /// The bytes of item `key`; empty when drvisor has no such item.
    pub fn item(&self, key: u16) -> Vec<u8> {
        match key {
            KEY_SIGNATURE => b"QEMU".to_vec(),
            KEY_ID => 1u32.to_le_bytes().to_vec(),
            KEY_RAM_SIZE => self.ram_size.to_le_bytes().to_vec(),
            KEY_NB_CPUS | KEY_MAX_CPUS => self.cpus.to_le_bytes().to_vec(),
            KEY_FILE_DIR => 0u32.to_be_bytes().to_vec(),
            _ => Vec::new(),
        }
    }
}

impl PioDevice for FwCfg {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if offset != 1 {
            data.fill(0);
            return;
        }
        let item = self.item(self.selected);
        for b in data.iter_mut() {
            *b = item.get(self.offset).copied().unwrap_or(0);
            self.offset += 1;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if offset != 0 {
            return; // The data port is read-only in the traditional interface.
        }
        let mut key = [0u8; 2];
        for (k, d) in key.iter_mut().zip(data) {
            *k = *d;
        }
        self.selected = u16::from_le_bytes(key);
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(dev: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        dev.write(0, &key.to_le_bytes());
        (0..len)
            .map(|_| {
                let mut b = [0u8];
                dev.read(1, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn items_match_what_the_vm_was_given() {
        let mut dev = FwCfg::new(256 << 20, 4);
        assert_eq!(read_item(&mut dev, KEY_SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut dev, KEY_NB_CPUS, 2), [4, 0]);
        assert_eq!(
            read_item(&mut dev, KEY_RAM_SIZE, 8),
            (256u64 << 20).to_le_bytes()
        );
        assert_eq!(read_item(&mut dev, KEY_FILE_DIR, 4), [0; 4]);
    }

    #[test]
    fn selecting_again_restarts_and_reads_past_the_end_are_zero() {
        let mut dev = FwCfg::new(1 << 20, 1);
        assert_eq!(read_item(&mut dev, KEY_SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut dev, KEY_SIGNATURE, 2), b"QE");
        assert_eq!(read_item(&mut dev, 0x1234, 3), [0; 3]);
    }
}
