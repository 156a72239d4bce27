//! The ACPI PM1 event and control registers (ACPI specification, "PM1 Event Grouping" and
//! "PM1 Control Grouping"), at the FADT's `PM1a_EVT_BLK` and `PM1a_CNT_BLK`, which a FADT that
//! is not hardware-reduced must have. An OS in ACPI mode clears their status bits and sets
//! their enables while it brings up ACPI; drvisor gives it registers that behave:
//! - `PM1_STS` (0x600, 16 bits): write-1-to-clear; a wake from S3 sets `WAK_STS`, and
//!   `RTC_STS` when the RTC alarm woke the machine; nothing else sets a bit;
//! - `PM1_EN` (0x602, 16 bits): read/write; `RTC_EN` decides whether the RTC alarm wakes the
//!   machine from S3 (no SCI is ever raised);
//! - `PM1_CNT` (0x604, 16 bits): `SCI_EN` reads 1 (the machine is always in ACPI mode, so the
//!   FADT has no `SMI_CMD`); the other bits are stored. A write with `SLP_EN` and the DSDT's
//!   `\_S3` type ([`SLP_TYP_S3`]) puts the machine to sleep ([`Sleeper`]); other sleep types
//!   are ignored (drvisor has no other sleep state).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

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
/// `PM1_CNT.SLP_TYP`: bits 12:10.
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111;
/// The `SLP_TYP` value of S3 (the DSDT's `\_S3` package says so; QEMU's value too).
pub const SLP_TYP_S3: u8 = 1;
/// `PM1_STS.WAK_STS`: set when the machine wakes from a sleep state.
pub const WAK_STS: u16 = 1 << 15;
/// `PM1_STS.RTC_STS` and `PM1_EN.RTC_EN`: the RTC alarm.
pub const RTC_STS: u16 = 1 << 10;
/// See [`RTC_STS`].
pub const RTC_EN: u16 = 1 << 10;

/// A sleep state drvisor puts the machine in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepState {
    /// S3, suspend to RAM: the vCPUs stop, memory is kept, a wake event resets them to the
    /// FACS waking vector.
    S3,
}

/// The sleep a value written to `PM1_CNT` asks for: `SLP_EN` with a `SLP_TYP` drvisor honours.
pub fn sleep_request(control: u16) -> Option<SleepState> {
    if control & SLP_EN == 0 {
        return None;
    }
    match ((control >> SLP_TYP_SHIFT) & SLP_TYP_MASK) as u8 {
        SLP_TYP_S3 => Some(SleepState::S3),
        _ => None,
    }
}

/// What puts the machine to sleep when the guest asks.
pub trait Sleeper: Send + Sync {
    /// The guest wrote a sleep request for `state` (on the writing vCPU's thread, during its
    /// exit): no vCPU may run another guest instruction until it wakes.
    fn sleep(&self, state: SleepState);
}

/// Why the machine wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeEvent {
    /// The CMOS RTC's alarm interrupt.
    RtcAlarm,
}

/// `PM1_STS` and `PM1_EN`, shared between the registers and the wake side (which must not take
/// the device's lock: the device calls the sleeper under it).
#[derive(Debug, Default)]
pub struct Pm1Events {
    status: AtomicU16,
    enable: AtomicU16,
}

impl Pm1Events {
    /// Whether `event` wakes the machine (its enable bit is set). If it does, its status bit
    /// and `WAK_STS` are set.
    pub fn wake_by(&self, event: WakeEvent) -> bool {
        let (enable, status) = match event {
            WakeEvent::RtcAlarm => (RTC_EN, RTC_STS),
        };
        if self.enable.load(Ordering::SeqCst) & enable == 0 {
            return false;
        }
        self.status.fetch_or(WAK_STS | status, Ordering::SeqCst);
        true
    }

    /// Whether any wake event is enabled.
    pub fn any_wake_enabled(&self) -> bool {
        self.enable.load(Ordering::SeqCst) & RTC_EN != 0
    }

    /// `PM1_STS`.
    pub fn status(&self) -> u16 {
        self.status.load(Ordering::SeqCst)
    }

    /// `PM1_EN`.
    pub fn enable(&self) -> u16 {
        self.enable.load(Ordering::SeqCst)
    }
}

/// The PM1a registers.
pub struct Pm1Registers {
    events: Arc<Pm1Events>,
    control: u16,
    sleeper: Option<Arc<dyn Sleeper>>,
}

impl Default for Pm1Registers {
    /// Registers that cannot sleep.
    fn default() -> Self {
        Pm1Registers::new(Arc::default(), None)
    }
}

impl Pm1Registers {
    /// The registers over `events`; sleep requests go to `sleeper`, if there is one.
    pub fn new(events: Arc<Pm1Events>, sleeper: Option<Arc<dyn Sleeper>>) -> Self {
        Pm1Registers {
            events,
            control: 0,
            sleeper,
        }
    }

    /// The three 16-bit registers as the six bytes of the block, little-endian.
    fn bytes(&self) -> [u8; PM1_PORTS as usize] {
        let [s0, s1] = self.events.status().to_le_bytes();
        let [e0, e1] = self.events.enable().to_le_bytes();
        let [c0, c1] = (self.control | SCI_EN).to_le_bytes();
        [s0, s1, e0, e1, c0, c1]
    }
}

/// `reg` with the byte at `shift` replaced by `b`.
fn with_byte(reg: u16, shift: usize, b: u8) -> u16 {
    (reg & !(0xff << shift)) | (u16::from(b) << shift)
}

impl PioDevice for Pm1Registers {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let bytes = self.bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(usize::from(offset) + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let mut control_written = false;
        for (i, &b) in data.iter().enumerate() {
            let at = usize::from(offset) + i;
            let shift = 8 * (at % 2);
            match at {
                // Write-1-to-clear.
                0 | 1 => {
                    let clear = u16::from(b) << shift;
                    self.events.status.fetch_and(!clear, Ordering::SeqCst);
                }
                2 | 3 => {
                    let e = &self.events.enable;
                    e.store(
                        with_byte(e.load(Ordering::SeqCst), shift, b),
                        Ordering::SeqCst,
                    );
                }
                4 | 5 => {
                    self.control = with_byte(self.control, shift, b);
                    control_written = true;
                }
                _ => {}
            }
        }
        if !control_written {
            return;
        }
        // The request is the register as written (a byte write to the high half counts with
        // the low half as stored); SLP_EN itself is never stored.
        let request = sleep_request(self.control);
        self.control &= !SLP_EN;
        match (request, &self.sleeper) {
            (Some(state), Some(sleeper)) => sleeper.sleep(state),
            (Some(state), None) => {
                tracing::debug!("the guest asked for {state:?}, which this VM cannot do")
            }
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn read16(dev: &mut Pm1Registers, offset: u16) -> u16 {
        let mut d = [0u8; 2];
        dev.read(offset, &mut d);
        u16::from_le_bytes(d)
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<SleepState>>);
    impl Sleeper for Recorder {
        fn sleep(&self, state: SleepState) {
            self.0.lock().unwrap().push(state);
        }
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
    fn status_reads_zero_until_a_wake_and_clears_by_writing_ones() {
        let events = Arc::new(Pm1Events::default());
        let mut dev = Pm1Registers::new(events.clone(), None);
        assert_eq!(read16(&mut dev, 0), 0);
        dev.write(0, &[0xff, 0xff]);
        assert_eq!(read16(&mut dev, 0), 0);
        // Not enabled: the RTC alarm does not wake, and sets nothing.
        assert!(!events.wake_by(WakeEvent::RtcAlarm));
        assert_eq!(read16(&mut dev, 0), 0);
        dev.write(2, &RTC_EN.to_le_bytes());
        assert!(events.any_wake_enabled());
        assert!(events.wake_by(WakeEvent::RtcAlarm));
        assert_eq!(read16(&mut dev, 0), WAK_STS | RTC_STS);
        // Clearing one bit leaves the other.
        dev.write(1, &[(WAK_STS >> 8) as u8]);
        assert_eq!(read16(&mut dev, 0), RTC_STS);
        dev.write(0, &RTC_STS.to_le_bytes());
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

    #[test]
    fn only_slp_en_with_the_s3_type_is_a_sleep_request() {
        assert_eq!(sleep_request(0x2400), Some(SleepState::S3));
        assert_eq!(sleep_request(0x2401), Some(SleepState::S3));
        assert_eq!(sleep_request(0x0400), None, "no SLP_EN");
        assert_eq!(
            sleep_request(0x2000),
            None,
            "SLP_TYP 0 (S5 on QEMU): not honoured"
        );
        assert_eq!(sleep_request(0x2800), None, "SLP_TYP 2");
        assert_eq!(sleep_request(0x3c00), None, "SLP_TYP 7");
    }

    #[test]
    fn a_sleep_request_reaches_the_sleeper_once() {
        let sleeper = Arc::new(Recorder::default());
        let mut dev = Pm1Registers::new(Arc::default(), Some(sleeper.clone()));
        dev.write(4, &0x0400u16.to_le_bytes());
        assert!(
            sleeper.0.lock().unwrap().is_empty(),
            "SLP_TYP without SLP_EN"
        );
        // The high byte alone, with SLP_TYP = 1 stored: a request (as kvm-unit-tests' outw).
        dev.write(5, &[0x24]);
        assert_eq!(*sleeper.0.lock().unwrap(), [SleepState::S3]);
        assert_eq!(read16(&mut dev, 4), 0x0400 | SCI_EN, "SLP_EN reads 0");
        // Writing the status or enable block is no request.
        dev.write(0, &[0, 0, 0, 0]);
        assert_eq!(sleeper.0.lock().unwrap().len(), 1);
        dev.write(4, &0x2400u16.to_le_bytes());
        assert_eq!(sleeper.0.lock().unwrap().len(), 2);
    }
}
