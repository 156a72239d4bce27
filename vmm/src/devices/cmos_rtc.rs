//! The PC's CMOS clock (an MC146818 as every PC chipset has it), at ports 0x70 (index, bit 7
//! masks NMI) and 0x71 (data): the host's time and date (UTC), in BCD or binary and 24- or
//! 12-hour form as register B asks, the update-in-progress flag of register A as Linux's
//! `mc146818_get_time` and `rtc_cmos` expect it (set only in the last 244 us before each second),
//! a valid battery (register D), and the NVRAM bytes 0x0e-0x7f as plain storage.
//!
//! A guest that writes the time moves its clock, not the host's: drvisor keeps the difference.
//!
//! The alarm ([`super::rtc_alarm`]) and the update-ended event set register C's `AF` and `UF`
//! at each second's update (as a guest reading register C finds them: they are worked out when
//! it reads); with `AIE` or `UIE` in register B, `IRQF` rises with them and IRQ 8 is raised
//! (an edge through the in-kernel irqchip, when [`CmosRtc::with_irq`] gave it a line; the
//! [`super::rtc_timer`] thread raises it on time). An alarm interrupt also wakes the machine
//! from S3 when `PM1_EN.RTC_EN` allows. The periodic interrupt (`PIE`, `PF`) is not modelled.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vmm_sys_util::eventfd::EventFd;

use super::rtc_alarm::{dont_care, Alarm, Field};
use super::rtc_timer::AlarmSignal;
use super::PioDevice;

/// The index port; the data port follows it.
pub const CMOS_PORT: u16 = 0x70;
/// Index and data.
pub const CMOS_PORTS: u16 = 2;
/// The RTC's interrupt: ISA IRQ 8, GSI 8 (no MADT override).
pub const RTC_GSI: u32 = 8;

const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
/// Register A at reset: 32.768 kHz time base, 1024 Hz periodic rate (what a BIOS leaves).
const A_DEFAULT: u8 = 0x26;
const B_SET: u8 = 0x80;
/// Alarm interrupt enable.
const B_AIE: u8 = 0x20;
/// Update-ended interrupt enable.
const B_UIE: u8 = 0x10;
/// Register C: an enabled event happened (the IRQ is asserted).
const C_IRQF: u8 = 0x80;
/// Register C: the alarm fired.
const C_AF: u8 = 0x20;
/// Register C: an update ended.
const C_UF: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
/// Register B at reset: 24-hour, BCD (as QEMU's and a PC BIOS's).
const B_DEFAULT: u8 = B_24H;
const D_VRT: u8 = 0x80;
/// The update cycle takes 1984 us; UIP rises 244 us before it (MC146818 data sheet).
const UIP_BEFORE_NS: u32 = 244_000;

/// The wall clock the RTC reads: seconds and nanoseconds since the Unix epoch.
pub trait WallClock: Send {
    /// Now.
    fn now(&self) -> (i64, u32);
}

/// The host's clock.
pub struct HostClock;

impl WallClock for HostClock {
    fn now(&self) -> (i64, u32) {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(_) => (0, 0),
        }
    }
}

/// A calendar time (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year.
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-59.
    pub second: u32,
    /// 0 Sunday .. 6 Saturday.
    pub weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl DateTime {
    /// The calendar time of `secs` since the epoch.
    pub fn from_unix(secs: i64) -> DateTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// Seconds since the epoch.
    pub fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }
}

fn to_bcd(v: u32) -> u8 {
    (((v / 10 % 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0x0f)
}

/// The CMOS RTC and NVRAM.
pub struct CmosRtc {
    clock: Box<dyn WallClock>,
    index: u8,
    nmi_masked: bool,
    /// Guest time minus host time, in seconds (what the guest's own writes set).
    offset: i64,
    /// While register B's SET bit is on, the time the guest is setting (updates stop).
    frozen: Option<i64>,
    ram: [u8; 128],
    /// Register C's event flags (`IRQF`, `AF`, `UF`) until the guest reads them.
    flags: u8,
    /// The guest second up to which updates have set the flags.
    checked: i64,
    /// IRQ 8: written once per rising `IRQF` (an irqfd on GSI 8).
    irq: Option<EventFd>,
    /// Told when the time of the next interrupt may have changed.
    signal: Option<Arc<AlarmSignal>>,
}

/// What the updates since the last look brought.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcEvents {
    /// The alarm fired with its interrupt enabled (a wake event).
    pub alarm_interrupt: bool,
}

impl CmosRtc {
    /// The RTC on `clock`, at the state a PC BIOS leaves.
    pub fn new(clock: Box<dyn WallClock>) -> CmosRtc {
        let mut ram = [0u8; 128];
        ram[usize::from(REG_A)] = A_DEFAULT;
        ram[usize::from(REG_B)] = B_DEFAULT;
        ram[usize::from(REG_D)] = D_VRT;
        let checked = clock.now().0;
        CmosRtc {
            clock,
            index: 0,
            nmi_masked: false,
            offset: 0,
            frozen: None,
            ram,
            flags: 0,
            checked,
            irq: None,
            signal: None,
        }
    }

    /// The RTC raising IRQ 8 on `irq` and telling `signal` when its next interrupt moves.
    pub fn with_irq(mut self, irq: EventFd, signal: Arc<AlarmSignal>) -> CmosRtc {
        self.irq = Some(irq);
        self.signal = Some(signal);
        self
    }

    fn reg(&self, index: u8) -> u8 {
        self.ram[usize::from(index)]
    }

    /// The alarm bytes, decoded as register B says.
    fn alarm(&self) -> Alarm {
        let field = |byte: u8, decode: &dyn Fn(u8) -> u32| {
            if dont_care(byte) {
                Field::Any
            } else {
                Field::Is(decode(byte))
            }
        };
        Alarm {
            hour: field(self.reg(HOURS_ALARM), &|b| self.decode_hour(b)),
            minute: field(self.reg(MINUTES_ALARM), &|b| self.decode(b)),
            second: field(self.reg(SECONDS_ALARM), &|b| self.decode(b)),
        }
    }

    /// `IRQF` as the flags and register B's enables make it.
    fn irqf(&self) -> u8 {
        let enabled = self.reg(REG_B) & (B_AIE | B_UIE);
        // AIE and UIE are AF and UF's bits in register B.
        if self.flags & enabled & (C_AF | C_UF) != 0 {
            C_IRQF
        } else {
            0
        }
    }

    /// Sets `IRQF` from the flags; raises IRQ 8 if it rose.
    fn update_irq(&mut self) {
        let was = self.flags & C_IRQF;
        self.flags = (self.flags & !C_IRQF) | self.irqf();
        if was == 0 && self.flags & C_IRQF != 0 {
            if let Some(irq) = &self.irq {
                if let Err(e) = irq.write(1) {
                    tracing::warn!("cannot raise the RTC's IRQ 8: {e}");
                }
            }
        }
    }

    /// Applies the updates (one a second) since the last look: `UF` and `AF`, then `IRQF`.
    pub fn catch_up(&mut self) -> RtcEvents {
        if self.frozen.is_some() {
            // SET stops the updates.
            return RtcEvents::default();
        }
        let now = self.guest_now().0;
        if now <= self.checked {
            // Not a second later, or the guest set the clock back.
            self.checked = now;
            return RtcEvents::default();
        }
        let alarm = self.alarm().fires_within(self.checked, now);
        self.checked = now;
        self.flags |= C_UF | if alarm { C_AF } else { 0 };
        self.update_irq();
        RtcEvents {
            alarm_interrupt: alarm && self.reg(REG_B) & B_AIE != 0,
        }
    }

    /// How long until the next update that can raise IRQ 8 (its alarm or update-ended
    /// interrupt is enabled), on the host's clock; `None` if none can.
    pub fn next_interrupt(&self) -> Option<Duration> {
        if self.frozen.is_some() {
            return None;
        }
        let b = self.reg(REG_B);
        let now = self.guest_now().0;
        let next = match (b & B_UIE != 0, b & B_AIE != 0) {
            (true, _) => now + 1,
            (false, true) => self.alarm().next_after(now)?,
            (false, false) => return None,
        };
        let (host_secs, host_nanos) = self.clock.now();
        let host_at = next - self.offset;
        let ahead = u64::try_from(host_at - host_secs).unwrap_or(0);
        Some(Duration::from_secs(ahead).saturating_sub(Duration::from_nanos(host_nanos.into())))
    }

    /// Tells the timer that the next interrupt may have moved.
    fn moved(&self) {
        if let Some(signal) = &self.signal {
            signal.changed();
        }
    }

    /// Whether the guest's last index write masked NMIs (bit 7 of port 0x70).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn guest_now(&self) -> (i64, u32) {
        match self.frozen {
            Some(t) => (t, 0),
            None => {
                let (secs, nanos) = self.clock.now();
                (secs + self.offset, nanos)
            }
        }
    }

    fn encode(&self, v: u32) -> u8 {
        if self.ram[usize::from(REG_B)] & B_BINARY != 0 {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.ram[usize::from(REG_B)] & B_BINARY != 0 {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.ram[usize::from(REG_B)] & B_24H != 0 {
            return self.encode(hour);
        }
        let twelve = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(twelve) | if hour >= 12 { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.ram[usize::from(REG_B)] & B_24H != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & 0x7f) % 12;
        if v & 0x80 != 0 {
            h + 12
        } else {
            h
        }
    }

    /// The value of register `index`.
    pub fn read_register(&mut self, index: u8) -> u8 {
        let (secs, nanos) = self.guest_now();
        let t = DateTime::from_unix(secs);
        match index {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hour(t.hour),
            DAY_OF_WEEK => self.encode(t.weekday + 1),
            DAY_OF_MONTH => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u32),
            CENTURY => self.encode(t.year.div_euclid(100) as u32),
            REG_A => {
                let updating = self.frozen.is_none() && nanos >= 1_000_000_000 - UIP_BEFORE_NS;
                self.ram[usize::from(REG_A)] & !A_UIP | if updating { A_UIP } else { 0 }
            }
            // Reading clears the flags (and lowers IRQ 8).
            REG_C => {
                self.catch_up();
                std::mem::take(&mut self.flags)
            }
            REG_D => D_VRT,
            i => self.ram[usize::from(i & 0x7f)],
        }
    }

    /// The guest writes `value` to register `index`.
    pub fn write_register(&mut self, index: u8, value: u8) {
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                self.set_time_field(index, value)
            }
            REG_A => self.ram[usize::from(REG_A)] = value & !A_UIP,
            REG_B => {
                let was_set = self.ram[usize::from(REG_B)] & B_SET != 0;
                let set = value & B_SET != 0;
                if set && !was_set {
                    self.frozen = Some(self.guest_now().0);
                }
                // The updates so far count with the enables as they were.
                self.catch_up();
                self.ram[usize::from(REG_B)] = value;
                if !set {
                    if let Some(t) = self.frozen.take() {
                        self.offset = t - self.clock.now().0;
                        self.checked = self.guest_now().0;
                    }
                }
                // An enable set with its flag already up asserts the IRQ now.
                self.update_irq();
                self.moved();
            }
            REG_C | REG_D => {}
            SECONDS_ALARM | MINUTES_ALARM | HOURS_ALARM => {
                self.catch_up();
                self.ram[usize::from(index)] = value;
                self.moved();
            }
            i => self.ram[usize::from(i & 0x7f)] = value,
        }
    }

    fn set_time_field(&mut self, index: u8, value: u8) {
        let (secs, _) = self.guest_now();
        let mut t = DateTime::from_unix(secs);
        let v = self.decode(value);
        match index {
            SECONDS => t.second = v.min(59),
            MINUTES => t.minute = v.min(59),
            HOURS => t.hour = self.decode_hour(value).min(23),
            DAY_OF_MONTH => t.day = v.clamp(1, 31),
            MONTH => t.month = v.clamp(1, 12),
            YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(v % 100),
            CENTURY => t.year = i64::from(v) * 100 + t.year.rem_euclid(100),
            // The day of the week follows from the date.
            _ => return,
        }
        let target = t.to_unix();
        match self.frozen {
            Some(_) => self.frozen = Some(target),
            None => {
                self.catch_up();
                self.offset = target - self.clock.now().0;
                // A new time is no update: the next one is a second after it.
                self.checked = target;
                self.moved();
            }
        }
    }
}

impl PioDevice for CmosRtc {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = match offset {
            // The index port is write-only; it reads as an empty bus.
            0 => 0xff,
            _ => self.read_register(self.index),
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            0 => {
                self.index = value & 0x7f;
                self.nmi_masked = value & 0x80 != 0;
            }
            _ => self.write_register(self.index, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A clock the test moves.
    #[derive(Clone, Default)]
    struct TestClock(Arc<(AtomicI64, AtomicU32)>);

    impl TestClock {
        fn set(&self, secs: i64, nanos: u32) {
            self.0 .0.store(secs, Ordering::SeqCst);
            self.0 .1.store(nanos, Ordering::SeqCst);
        }
    }

    impl WallClock for TestClock {
        fn now(&self) -> (i64, u32) {
            (
                self.0 .0.load(Ordering::SeqCst),
                self.0 .1.load(Ordering::SeqCst),
            )
        }
    }

    /// 2026-12-05 13:07:09 UTC, a Saturday.
    const T: i64 = 1_796_476_029;

    fn rtc_at(secs: i64, nanos: u32) -> (CmosRtc, TestClock) {
        let clock = TestClock::default();
        clock.set(secs, nanos);
        (CmosRtc::new(Box::new(clock.clone())), clock)
    }

    fn read(rtc: &mut CmosRtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut d = [0u8];
        rtc.read(1, &mut d);
        d[0]
    }

    fn write(rtc: &mut CmosRtc, index: u8, value: u8) {
        rtc.write(0, &[index]);
        rtc.write(1, &[value]);
    }

    #[test]
    fn the_calendar_conversion_round_trips_and_knows_leap_years() {
        let t = DateTime::from_unix(T);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2026, 12, 5, 13, 7, 9, 6)
        );
        assert_eq!(t.to_unix(), T);
        let leap = DateTime::from_unix(951_782_400); // 2000-02-29 00:00:00, a Tuesday
        assert_eq!(
            (leap.year, leap.month, leap.day, leap.weekday),
            (2000, 2, 29, 2)
        );
        for secs in [0, 86_399, 86_400, 4_107_542_399, -1] {
            assert_eq!(DateTime::from_unix(secs).to_unix(), secs);
        }
    }

    #[test]
    fn the_time_reads_in_bcd_24_hours_by_default() {
        let (mut rtc, _) = rtc_at(T, 0);
        assert_eq!(read(&mut rtc, REG_B), 0x02);
        assert_eq!(read(&mut rtc, SECONDS), 0x09);
        assert_eq!(read(&mut rtc, MINUTES), 0x07);
        assert_eq!(read(&mut rtc, HOURS), 0x13);
        assert_eq!(read(&mut rtc, DAY_OF_WEEK), 7); // Saturday
        assert_eq!(read(&mut rtc, DAY_OF_MONTH), 0x05);
        assert_eq!(read(&mut rtc, MONTH), 0x12);
        assert_eq!(read(&mut rtc, YEAR), 0x26);
        assert_eq!(read(&mut rtc, CENTURY), 0x20);
        assert_eq!(read(&mut rtc, REG_D), 0x80, "battery valid");
    }

    #[test]
    fn register_b_switches_to_binary_and_12_hours() {
        let (mut rtc, _) = rtc_at(T, 0);
        write(&mut rtc, REG_B, B_BINARY);
        assert_eq!(
            read(&mut rtc, HOURS),
            0x80 | 1,
            "1 PM in binary 12-hour form"
        );
        assert_eq!(read(&mut rtc, YEAR), 26);
        assert_eq!(read(&mut rtc, CENTURY), 20);
        write(&mut rtc, REG_B, 0);
        assert_eq!(read(&mut rtc, HOURS), 0x81, "1 PM in BCD 12-hour form");
        let (mut midnight, _) = rtc_at(T - 13 * 3600, 0);
        write(&mut midnight, REG_B, 0);
        assert_eq!(read(&mut midnight, HOURS), 0x12, "00:xx is 12 AM");
    }

    #[test]
    fn uip_is_set_only_just_before_the_second_changes() {
        let (mut rtc, clock) = rtc_at(T, 0);
        assert_eq!(read(&mut rtc, REG_A), 0x26);
        clock.set(T, 999_000_000);
        assert_eq!(read(&mut rtc, REG_A), 0x26, "1 ms before: clear");
        clock.set(T, 999_800_000);
        assert_eq!(read(&mut rtc, REG_A), 0xa6, "200 us before: updating");
        clock.set(T + 1, 0);
        assert_eq!(read(&mut rtc, REG_A), 0x26);
        assert_eq!(read(&mut rtc, SECONDS), 0x10, "and the second moved on");
    }

    #[test]
    fn nvram_is_plain_storage_and_the_index_masks_nmi() {
        let (mut rtc, _) = rtc_at(T, 0);
        for i in 0x0e..0x80u8 {
            if i != CENTURY {
                write(&mut rtc, i, i ^ 0x5a);
            }
        }
        for i in 0x0e..0x80u8 {
            if i != CENTURY {
                assert_eq!(read(&mut rtc, i), i ^ 0x5a, "{i:#x}");
            }
        }
        rtc.write(0, &[0x80 | 0x20]);
        assert!(rtc.nmi_masked());
        let mut d = [0u8];
        rtc.read(1, &mut d);
        assert_eq!(
            d[0],
            0x20 ^ 0x5a,
            "bit 7 is the NMI mask, not part of the index"
        );
        rtc.write(0, &[0x20]);
        assert!(!rtc.nmi_masked());
        rtc.read(0, &mut d);
        assert_eq!(d[0], 0xff, "the index port is write-only");
    }

    #[test]
    fn a_guest_that_sets_the_time_moves_its_clock_and_it_keeps_running() {
        let (mut rtc, clock) = rtc_at(T, 0);
        write(&mut rtc, REG_B, B_SET | B_24H);
        write(&mut rtc, HOURS, 0x08);
        write(&mut rtc, MINUTES, 0x30);
        write(&mut rtc, SECONDS, 0x00);
        clock.set(T + 5, 0);
        assert_eq!(read(&mut rtc, SECONDS), 0x00, "SET stops the updates");
        assert_eq!(read(&mut rtc, REG_A) & A_UIP, 0);
        write(&mut rtc, REG_B, B_24H);
        clock.set(T + 7, 0);
        assert_eq!(read(&mut rtc, HOURS), 0x08);
        assert_eq!(read(&mut rtc, MINUTES), 0x30);
        assert_eq!(
            read(&mut rtc, SECONDS),
            0x02,
            "it runs again from what was set"
        );
        assert_eq!(read(&mut rtc, DAY_OF_MONTH), 0x05, "the date is kept");
        // Without SET, a single field moves the clock at once.
        write(&mut rtc, YEAR, 0x30);
        assert_eq!(read(&mut rtc, YEAR), 0x30);
        assert_eq!(read(&mut rtc, CENTURY), 0x20);
    }

    #[test]
    fn registers_c_and_d_ignore_writes() {
        let (mut rtc, _) = rtc_at(T, 0);
        write(&mut rtc, REG_C, 0xff);
        write(&mut rtc, REG_D, 0);
        assert_eq!(read(&mut rtc, REG_C), 0);
        assert_eq!(read(&mut rtc, REG_D), D_VRT);
    }

    fn dont_care_alarm(rtc: &mut CmosRtc) {
        for reg in [SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM] {
            write(rtc, reg, 0xc0);
        }
    }

    #[test]
    fn register_c_reports_updates_and_the_alarm_then_clears() {
        let (mut rtc, clock) = rtc_at(T, 0);
        assert_eq!(read(&mut rtc, REG_C), 0, "no update yet");
        clock.set(T + 1, 0);
        assert_eq!(
            read(&mut rtc, REG_C),
            C_UF,
            "an update; no alarm matches 00:00:00"
        );
        assert_eq!(read(&mut rtc, REG_C), 0, "reading cleared it");
        // An alarm one second ahead (13:07:11), in BCD; no interrupt enabled.
        write(&mut rtc, HOURS_ALARM, 0x13);
        write(&mut rtc, MINUTES_ALARM, 0x07);
        write(&mut rtc, SECONDS_ALARM, 0x11);
        clock.set(T + 2, 500_000_000);
        assert_eq!(
            read(&mut rtc, REG_C),
            C_AF | C_UF,
            "AF without IRQF: AIE is off"
        );
        clock.set(T + 3, 0);
        assert_eq!(read(&mut rtc, REG_C), C_UF, "13:07:12 does not match");
    }

    #[test]
    fn an_enabled_alarm_raises_irqf_and_irq_8_once_until_read() {
        let (rtc, clock) = rtc_at(T, 0);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let signal = Arc::new(AlarmSignal::default());
        let mut rtc = rtc.with_irq(irq.try_clone().unwrap(), signal);
        assert_eq!(rtc.next_interrupt(), None, "nothing enabled");
        dont_care_alarm(&mut rtc);
        write(&mut rtc, REG_B, B_DEFAULT | B_AIE);
        clock.set(T, 250_000_000);
        assert_eq!(rtc.next_interrupt(), Some(Duration::from_millis(750)));
        assert!(irq.read().is_err(), "no IRQ before the update");
        clock.set(T + 1, 0);
        assert_eq!(
            rtc.catch_up(),
            RtcEvents {
                alarm_interrupt: true
            }
        );
        assert_eq!(irq.read().unwrap(), 1, "one edge");
        clock.set(T + 2, 0);
        assert!(
            rtc.catch_up().alarm_interrupt,
            "the alarm fires every second"
        );
        assert!(irq.read().is_err(), "IRQF still up: no new edge");
        assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
        clock.set(T + 3, 0);
        assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
        assert_eq!(irq.read().unwrap(), 1, "a new edge after the read");
    }

    #[test]
    fn enabling_the_alarm_interrupt_with_af_up_raises_it_at_once() {
        let (rtc, clock) = rtc_at(T, 0);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut rtc = rtc.with_irq(irq.try_clone().unwrap(), Arc::default());
        dont_care_alarm(&mut rtc);
        clock.set(T + 1, 0);
        assert!(!rtc.catch_up().alarm_interrupt, "AIE off: no interrupt");
        assert!(irq.read().is_err());
        write(&mut rtc, REG_B, B_DEFAULT | B_AIE);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
    }

    #[test]
    fn the_update_interrupt_is_due_at_the_next_second_and_set_stops_it() {
        let (mut rtc, clock) = rtc_at(T, 900_000_000);
        write(&mut rtc, REG_B, B_DEFAULT | B_UIE);
        assert_eq!(rtc.next_interrupt(), Some(Duration::from_millis(100)));
        clock.set(T + 1, 0);
        assert_eq!(read(&mut rtc, REG_C), C_IRQF | C_UF);
        write(&mut rtc, REG_B, B_SET | B_DEFAULT | B_UIE);
        assert_eq!(rtc.next_interrupt(), None, "SET stops the updates");
        clock.set(T + 5, 0);
        assert_eq!(read(&mut rtc, REG_C), 0);
    }

    #[test]
    fn setting_the_time_is_not_an_update() {
        let (mut rtc, clock) = rtc_at(T, 0);
        dont_care_alarm(&mut rtc);
        write(&mut rtc, HOURS, 0x08);
        assert_eq!(read(&mut rtc, REG_C), 0, "the clock moved back five hours");
        clock.set(T + 1, 0);
        assert_eq!(read(&mut rtc, REG_C), C_AF | C_UF);
    }
}
