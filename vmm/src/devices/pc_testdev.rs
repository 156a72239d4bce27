//! QEMU's `pc-testdev` (hw/misc/pc-testdev.c), as kvm-unit-tests' runner adds it
//! (`-device pc-testdev`):
//! - ports 0xe0-0xe3: a 32-bit scratch register that reads back what was written, at any width
//!   and offset (the `ins`/`outs` tests of `emulator`);
//! - port 0xe4: "flush page", a 32-bit write of a guest-physical address: the host mapping of
//!   that page of guest RAM is made inaccessible and accessible again (QEMU's two `mprotect`s),
//!   so KVM drops its own mapping of the page and the guest's next access to it faults in the
//!   host (`eventinj` delivers an exception onto such a stack page);
//! - ports 0xe8-0xeb: the scratch register again, byte by byte;
//! - ports 0x2000-0x2017: one per interrupt line 0-23 of the in-kernel PIC and I/O APIC: a byte
//!   written to 0x2000+n sets line n to high (non-zero) or low (zero) (kvm-unit-tests' `ioapic`
//!   and `eventinj`; the test guest's `irq-line` scenario);
//! - MMIO RAM at 0xff000000, 64 KiB (`IORAM_BASE_PHYS`): memory that is not RAM to KVM, so every
//!   access to it exits and is emulated (the `emulator` test runs its instructions on it).

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{MmioDevice, PioDevice};

/// The scratch, flush-page and byte-scratch ports.
pub const TESTDEV_PORT: u16 = 0xe0;
/// Their width: 0xe0-0xeb.
pub const TESTDEV_PORTS: u16 = 12;
/// The first interrupt-line port.
pub const IRQ_LINE_PORT: u16 = 0x2000;
/// One port per line, 0-23 (the I/O APIC's pins).
pub const IRQ_LINE_PORTS: u16 = 24;
/// Where the MMIO RAM is.
pub const IOMEM_BASE: u64 = 0xff00_0000;
/// Its size.
pub const IOMEM_LEN: u64 = 0x1_0000;

const PAGE: u64 = 0x1000;

/// What the flush-page port does to a page of guest RAM.
pub trait PageFlush: Send + Sync {
    /// Makes KVM forget its mapping of the guest page at `gpa` (page-aligned).
    fn flush(&self, gpa: u64);
}

/// The page flush of QEMU: `mprotect` of the page's host mapping to nothing, then back to
/// read-write. The mapping changes, so the kernel's MMU notifier makes KVM drop its translation.
pub struct MprotectFlush(pub GuestMemoryMmap);

impl PageFlush for MprotectFlush {
    fn flush(&self, gpa: u64) {
        let Ok(host) = self.0.get_host_address(GuestAddress(gpa)) else {
            return; // not RAM: nothing to flush, as in QEMU
        };
        // The page must lie in one region (regions are page-granular, so it does).
        if !self.0.address_in_range(GuestAddress(gpa + PAGE - 1)) {
            return;
        }
        let addr = host.cast::<libc::c_void>();
        // SAFETY: `addr` is the page-aligned start of a page of guest RAM that `self.0` maps (and
        // keeps mapped); the protection is restored to read-write, which the mapping had, before
        // returning. A vCPU touching the page in between faults in the host and KVM retries.
        unsafe {
            libc::mprotect(addr, PAGE as usize, libc::PROT_NONE);
            libc::mprotect(addr, PAGE as usize, libc::PROT_READ | libc::PROT_WRITE);
        }
    }
}

/// Ports 0xe0-0xeb: the scratch register (0xe0 and 0xe8) and the flush-page port (0xe4; by
/// default it flushes nothing).
#[derive(Default)]
pub struct TestDevPort {
    value: [u8; 4],
    flush: Option<Arc<dyn PageFlush>>,
}

impl TestDevPort {
    /// With the flush-page port acting through `flush`.
    pub fn with_flush(flush: Arc<dyn PageFlush>) -> Self {
        TestDevPort {
            value: [0; 4],
            flush: Some(flush),
        }
    }

    /// Byte `at & 3` of the register, little-endian (0xe0 and 0xe8 show the same bytes).
    fn scratch_byte(&mut self, at: u16) -> &mut u8 {
        &mut self.value[usize::from(at & 3)]
    }
}

impl PioDevice for TestDevPort {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u16;
            *b = match at {
                0..=3 | 8..=11 => *self.scratch_byte(at),
                // The flush port is write-only.
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if offset == 4 {
            // 32-bit writes only, as QEMU's `valid` sizes; other widths are dropped.
            if let (Ok(bytes), Some(flush)) = (<[u8; 4]>::try_from(data), &self.flush) {
                flush.flush(u64::from(u32::from_le_bytes(bytes)) & !(PAGE - 1));
            }
            return;
        }
        for (i, b) in data.iter().enumerate() {
            let at = offset + i as u16;
            if matches!(at, 0..=3 | 8..=11) {
                *self.scratch_byte(at) = *b;
            }
        }
    }
}

/// Where the interrupt-line ports drive their lines.
pub trait IrqLines: Send + Sync {
    /// Sets interrupt line (GSI) `line` high or low.
    fn set_line(&self, line: u32, high: bool);
}

impl IrqLines for kvm_ioctls::VmFd {
    fn set_line(&self, line: u32, high: bool) {
        if let Err(e) = self.set_irq_line(line, high) {
            tracing::warn!("pc-testdev: KVM_IRQ_LINE {line} = {high} failed: {e}");
        }
    }
}

/// Ports 0x2000-0x2017: a byte written to 0x2000+n sets line n (QEMU: `!!data`).
pub struct TestDevIrqLines {
    lines: Arc<dyn IrqLines>,
}

impl TestDevIrqLines {
    /// The ports, driving `lines`.
    pub fn new(lines: Arc<dyn IrqLines>) -> Self {
        TestDevIrqLines { lines }
    }
}

impl PioDevice for TestDevIrqLines {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        // One-byte accesses only, as QEMU's `valid` sizes; wider ones are dropped.
        if let [value] = data {
            self.lines.set_line(u32::from(offset), *value != 0);
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

    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u32, bool)>>);

    impl IrqLines for Recorder {
        fn set_line(&self, line: u32, high: bool) {
            self.0.lock().unwrap().push((line, high));
        }
    }

    impl PageFlush for Recorder {
        fn flush(&self, gpa: u64) {
            self.0.lock().unwrap().push((gpa as u32, true));
        }
    }

    #[test]
    fn a_byte_to_0x2000_plus_n_sets_line_n_high_or_low() {
        let rec = Arc::new(Recorder::default());
        let mut dev = TestDevIrqLines::new(rec.clone());
        dev.write(0x0e, &[1]);
        dev.write(0x0e, &[0]);
        dev.write(0x17, &[0x80]);
        dev.write(0x01, &[1, 0]); // a word: not a valid access, dropped
        assert_eq!(
            *rec.0.lock().unwrap(),
            [(0x0e, true), (0x0e, false), (0x17, true)]
        );
    }

    #[test]
    fn the_flush_port_takes_32_bit_page_addresses() {
        let rec = Arc::new(Recorder::default());
        let mut dev = TestDevPort::with_flush(rec.clone());
        dev.write(4, &0x0012_3456u32.to_le_bytes());
        dev.write(4, &[1, 2]); // not 32 bits: dropped
        assert_eq!(*rec.0.lock().unwrap(), [(0x0012_3000, true)]);
        let mut d = [0u8; 4];
        dev.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn the_flush_really_reaches_the_mapping_and_leaves_it_usable() {
        use vm_memory::Bytes;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        mem.write_obj(0xabcd_u32, GuestAddress(0x1010)).unwrap();
        let flush = MprotectFlush(mem.clone());
        flush.flush(0x1000);
        flush.flush(0x8000); // outside RAM: nothing
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1010)).unwrap(), 0xabcd);
        mem.write_obj(1u32, GuestAddress(0x1010)).unwrap();
    }

    #[test]
    fn scratch_at_0xe8_is_the_register_at_0xe0_byte_by_byte() {
        let mut port = TestDevPort::default();
        port.write(0, &0x1122_3344u32.to_le_bytes());
        let mut d = [0u8; 4];
        port.read(8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1122_3344);
        port.write(9, &[0xaa]);
        let mut w = [0u8; 2];
        port.read(0, &mut w);
        assert_eq!(w, [0x44, 0xaa]);
    }

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
