//! `exit-race`: every CPU 0..ncpus-1 writes its own status, 10 + its index, to the exit port at
//! the same moment (after a spin barrier), so the VMM sees several competing exits. The first
//! one it takes ends the run; the others must be ignored without harm. Prints
//! `drv: scenario=exit-race cpus=N` before the barrier; no summary line (the status is the race's).

use core::sync::atomic::{AtomicU32, Ordering};

use crate::cmdline::Config;
use crate::serial;

static READY: AtomicU32 = AtomicU32::new(0);

fn race(cpu: u32, ncpus: u32) -> ! {
    READY.fetch_add(1, Ordering::AcqRel);
    while READY.load(Ordering::Acquire) < ncpus {
        core::hint::spin_loop();
    }
    serial::exit(10u32.saturating_add(cpu).min(255) as u8)
}

/// CPU 0.
pub fn run(cfg: &Config) -> ! {
    serial::line()
        .s("scenario=exit-race cpus=")
        .dec(u64::from(cfg.ncpus));
    race(0, cfg.ncpus)
}

/// The other CPUs below ncpus.
pub fn run_secondary(cpu: u32, cfg: &Config) -> ! {
    race(cpu, cfg.ncpus)
}
