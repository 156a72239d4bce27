//! The PC's CMOS clock (an MC146818 as every PC chipset has it), at ports 0x70 (index, bit 7
//! masks NMI) and 0x71 (data): the host's time and date (UTC), in BCD or binary and 24- or
//! 12-hour form as register B asks, the update-in-progress flag of register A as Linux's
//! `mc146818_get_time` and `rtc_cmos` expect it (set only in the last 244 us before each second),
//! a valid battery (register D), and the NVRAM bytes 0x0e-0x7f as plain storage.
//!
//! A guest that writes the time moves its clock, not the host's: drvisor keeps the difference.
//! Registers C's interrupt flags never rise and IRQ 8 is never raised (no periodic, alarm or
//! update interrupts): nothing that boots needs them.

use std::time::{SystemTime, UNIX_EPOCH};

use super::PioDevice;

/// The index port; the data port follows it.
pub const CMOS_PORT: u16 = 0x70;
/// Index and data.
pub const CMOS_PORTS: u16 = 2;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
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
}

impl CmosRtc {
    /// The RTC on `clock`, at the state a PC BIOS leaves.
    pub fn new(clock: Box<dyn WallClock>) -> CmosRtc {
        let mut ram = [0u8; 128];
        ram[usize::from(REG_A)] = A_DEFAULT;
        ram[usize::from(REG_B)] = B_DEFAULT;
        ram[usize::from(REG_D)] = D_VRT;
        CmosRtc {
            clock,
            index: 0,
            nmi_masked: false,
            offset: 0,
            frozen: None,
            ram,
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
            // No interrupt source ever fires; reading clears what there would be.
            REG_C => 0,
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
                self.ram[usize::from(REG_B)] = value;
                if !set {
                    if let Some(t) = self.frozen.take() {
                        self.offset = t - self.clock.now().0;
                    }
                }
            }
            REG_C | REG_D => {}
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
            None => self.offset = target - self.clock.now().0,
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
}
