//! The ACPI power-management timer (ACPI specification, "PM Timer"): a free-running counter at
//! 3.579545 MHz that the guest reads at the FADT's `PM_TMR_BLK` port. drvisor's is 32 bits wide
//! (the FADT sets `TMR_VAL_EXT`), counts from 0 when the VM is built, and follows the host's
//! monotonic clock, so it keeps real time however slowly the guest's code runs. It is read-only:
//! writes are ignored. Its overflow status bit (`TMR_STS`) and interrupt are not modelled.

use std::time::{Duration, Instant};

use super::PioDevice;

/// The port of the 32-bit counter (QEMU's q35 puts it here too: PM base 0x600 + 8).
pub const PM_TIMER_PORT: u16 = 0x608;
/// Its width in ports.
pub const PM_TIMER_PORTS: u16 = 4;
/// The counter's rate, in Hz (the ACPI specification's 3.579545 MHz).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// The counter's value `elapsed` after it started: whole ticks at [`PM_TIMER_HZ`], wrapping at
/// 32 bits.
pub fn ticks(elapsed: Duration) -> u32 {
    let ticks = elapsed.as_nanos() * u128::from(PM_TIMER_HZ) / 1_000_000_000;
    // Wraps, as the hardware counter does: the low 32 bits.
    ticks as u32
}

/// How long the timer has been running.
pub trait Elapsed: Send {
    /// Time since the timer started.
    fn elapsed(&self) -> Duration;
}

/// The host's monotonic clock, from when this was made.
pub struct SinceStart(Instant);

impl Default for SinceStart {
    fn default() -> Self {
        SinceStart(Instant::now())
    }
}

impl Elapsed for SinceStart {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The PM timer's port.
pub struct PmTimer {
    clock: Box<dyn Elapsed>,
}

impl PmTimer {
    /// A timer that counts `clock`'s elapsed time.
    pub fn new(clock: Box<dyn Elapsed>) -> Self {
        PmTimer { clock }
    }
}

impl Default for PmTimer {
    /// Counting from now, on the host's monotonic clock.
    fn default() -> Self {
        PmTimer::new(Box::<SinceStart>::default())
    }
}

impl PioDevice for PmTimer {
    /// Any width at any offset reads those bytes of the counter, little-endian; past its four
    /// bytes, all ones.
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = ticks(self.clock.elapsed()).to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = value.get(usize::from(offset) + i).copied().unwrap_or(0xff);
        }
    }

    /// The counter is read-only.
    fn write(&mut self, _offset: u16, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn one_second_is_3579545_ticks() {
        assert_eq!(ticks(Duration::ZERO), 0);
        assert_eq!(ticks(Duration::from_secs(1)), 3_579_545);
        assert_eq!(ticks(Duration::from_millis(1)), 3_579);
        // 279.4 ns per tick: 279 ns is not yet one, 280 ns is.
        assert_eq!(ticks(Duration::from_nanos(279)), 0);
        assert_eq!(ticks(Duration::from_nanos(280)), 1);
        assert_eq!(ticks(Duration::from_secs(10)), 35_795_450);
    }

    #[test]
    fn it_wraps_at_32_bits_after_about_20_minutes() {
        // 2^32 ticks at 3.579545 MHz: 1199.86 s.
        let wrap_ns = (1u128 << 32) * 1_000_000_000 / u128::from(PM_TIMER_HZ);
        let just_before = Duration::from_nanos(wrap_ns as u64 - 1_000);
        let just_after = Duration::from_nanos(wrap_ns as u64 + 1_000);
        assert!(
            ticks(just_before) > 0xffff_f000,
            "{:#x}",
            ticks(just_before)
        );
        assert!(ticks(just_after) < 0x1000, "{:#x}", ticks(just_after));
        // No overflow in the arithmetic for long runs (a year).
        let year = Duration::from_secs(365 * 86_400);
        let full = year.as_nanos() * 3_579_545 / 1_000_000_000;
        assert_eq!(u128::from(ticks(year)), full % (1 << 32));
    }

    #[test]
    fn it_never_goes_backwards_within_a_wrap() {
        let mut last = 0;
        for ms in 0..5_000u64 {
            let now = ticks(Duration::from_micros(ms * 997));
            assert!(now >= last, "{ms}");
            last = now;
        }
    }

    /// A clock the test moves.
    struct Manual(Arc<Mutex<Duration>>);
    impl Elapsed for Manual {
        fn elapsed(&self) -> Duration {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn the_port_reads_the_counter_at_any_width_and_ignores_writes() {
        let now = Arc::new(Mutex::new(Duration::from_secs(2)));
        let mut timer = PmTimer::new(Box::new(Manual(now.clone())));
        let want = ticks(Duration::from_secs(2));
        assert_eq!(want, 7_159_090);
        let bytes = want.to_le_bytes();
        let mut d = [0u8; 4];
        timer.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), want);
        timer.write(0, &[0, 0, 0, 0]);
        timer.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), want, "a write changed the counter");
        let mut w = [0u8; 2];
        timer.read(2, &mut w);
        assert_eq!(w, [bytes[2], bytes[3]]);
        let mut past = [0u8; 2];
        timer.read(3, &mut past);
        assert_eq!(past, [bytes[3], 0xff]);
        *now.lock().unwrap() = Duration::from_secs(3);
        timer.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d) - want, 3_579_545);
    }

    #[test]
    fn the_host_clock_advances() {
        let mut timer = PmTimer::default();
        let mut a = [0u8; 4];
        timer.read(0, &mut a);
        std::thread::sleep(Duration::from_millis(2));
        let mut b = [0u8; 4];
        timer.read(0, &mut b);
        let delta = u32::from_le_bytes(b).wrapping_sub(u32::from_le_bytes(a));
        // At least 2 ms (7159 ticks); well under a minute.
        assert!((7_159..PM_TIMER_HZ as u32 * 60).contains(&delta), "{delta}");
    }
}
