//! The ACPI PM1 event and control registers (ACPI specification, "PM1 Event Grouping" and
//! "PM1 Control Grouping"), at the FADT's `PM1a_EVT_BLK` and `PM1a_CNT_BLK`, which a FADT that
//! is not hardware-reduced must have. An OS in ACPI mode clears their status bits and sets
//! their enables while it brings up ACPI; drvisor gives it registers that behave:
//! - `PM1_STS` (0x600, 16 bits): write-1-to-clear; no event ever sets a bit, so it reads 0;
//! - `PM1_EN` (0x602, 16 bits): read/write storage (no event is ever signalled);
//! - `PM1_CNT` (0x604, 16 bits): `SCI_EN` reads 1 (the machine is always in ACPI mode, so the
//!   FADT has no `SMI_CMD`); the other bits are stored, and a sleep request (`SLP_EN`) is
//!   ignored: drvisor has no sleep states.

use super::PioDevice;

/// The first port: `PM1_STS`, then `PM1_EN`, then `PM1_CNT` (QEMU's q35 PM base).
pub const PM1_EVT_PORT: u16 = 0x600;
/// `PM1_STS` and `PM1_EN`, two bytes each.
pub const PM1_EVT_LEN: u8 = 4;
/// `PM1_CNT`.
pub const PM1_CNT_PORT: u16 = 0x604;
/// `PM1_CNT`'s width in bytes.
pub const PM1_CNT_LEN: u8 = 2;
/// Ports of this device: 0x600-0x605.
pub const PM1_PORTS: u16 = PM1_EVT_LEN as u16 + PM1_CNT_LEN as u16;

/// `PM1_CNT.SCI_EN`: the machine is in ACPI mode.
pub const SCI_EN: u16 = 1;
/// `PM1_CNT.SLP_EN`: write-only, starts the sleep that `SLP_TYP` names; reads 0.
const SLP_EN: u16 = 1 << 13;

/// The PM1a registers.
#[derive(Default)]
pub struct Pm1Registers {
    enable: u16,
    control: u16,
}

impl Pm1Registers {
    /// The three 16-bit registers as the six bytes of the block, little-endian.
    fn bytes(&self) -> [u8; PM1_PORTS as usize] {
        let [e0, e1] = self.enable.to_le_bytes();
        let [c0, c1] = (self.control | SCI_EN).to_le_bytes();
        // PM1_STS: no event ever sets a status bit.
        [0, 0, e0, e1, c0, c1]
    }
}

impl PioDevice for Pm1Registers {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let bytes = self.bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(usize::from(offset) + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = usize::from(offset) + i;
            let shift = 8 * (at % 2);
            let set = |reg: &mut u16| *reg = (*reg & !(0xff << shift)) | (u16::from(b) << shift);
            match at {
                // Write-1-to-clear status: nothing is ever set, nothing to clear.
                0 | 1 => {}
                2 | 3 => set(&mut self.enable),
                4 | 5 => {
                    set(&mut self.control);
                    self.control &= !SLP_EN;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read16(dev: &mut Pm1Registers, offset: u16) -> u16 {
        let mut d = [0u8; 2];
        dev.read(offset, &mut d);
        u16::from_le_bytes(d)
    }

    #[test]
    fn the_machine_is_in_acpi_mode_from_the_start() {
        let mut dev = Pm1Registers::default();
        assert_eq!(read16(&mut dev, 4) & SCI_EN, SCI_EN);
        // Even a write that clears it.
        dev.write(4, &[0, 0]);
        assert_eq!(read16(&mut dev, 4), SCI_EN);
    }

    #[test]
    fn status_reads_zero_and_clearing_it_changes_nothing() {
        let mut dev = Pm1Registers::default();
        assert_eq!(read16(&mut dev, 0), 0);
        dev.write(0, &[0xff, 0xff]);
        assert_eq!(read16(&mut dev, 0), 0);
    }

    #[test]
    fn enable_and_control_keep_what_was_written_at_any_width() {
        let mut dev = Pm1Registers::default();
        // A 32-bit write of the whole event block: status, then enable = 0x0120.
        dev.write(0, &[0xff, 0xff, 0x20, 0x01]);
        assert_eq!(read16(&mut dev, 2), 0x0120);
        dev.write(3, &[0x05]);
        assert_eq!(read16(&mut dev, 2), 0x0520);
        // SLP_TYP = 5 with SLP_EN: stored without SLP_EN, which reads 0; no sleep happens.
        dev.write(4, &(5u16 << 10 | SLP_EN | SCI_EN).to_le_bytes());
        assert_eq!(read16(&mut dev, 4), 5 << 10 | SCI_EN);
        let mut all = [0u8; 6];
        dev.read(0, &mut all);
        assert_eq!(all, [0, 0, 0x20, 0x05, 0x01, 0x14]);
        let mut past = [0u8; 2];
        dev.read(5, &mut past);
        assert_eq!(past, [0x14, 0xff]);
    }
}
