//! `soak`: every CPU 0..ncpus-1 repeats one iteration of the `exec` loop (a call of each of
//! `drv_target_0..3`) and one of the `write` loop (a write of each `drv_watch_*`) until the host
//! signals (port 0x520; `drvisor run` raises it on SIGUSR2), so a test decides how long the
//! guest runs, whatever the host's speed.
//!
//! Each CPU prints `drv: scenario=soak cpu=I iterations=N`; CPU 0 then prints
//! `drv: scenario=soak target=K calls=C` for each target and `drv: scenario=soak writes=W`
//! (the writes of each variable: the sum of the iterations), and status 0 iff every target's
//! global count equals the sum of the iterations.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::boot::MAX_CPUS;
use crate::cmdline::Config;
use crate::serial;
use crate::targets::{exec_loop, write_once};

static ITERATIONS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DONE: AtomicU32 = AtomicU32::new(0);

/// This CPU's share: iterations until the host signals.
fn work(cpu: usize) {
    let mut i = 0;
    while !crate::host_signal::raised() {
        i += 1;
        exec_loop(1);
        write_once(i);
    }
    if let Some(n) = ITERATIONS.get(cpu) {
        n.store(i, Ordering::Relaxed);
    }
    serial::line()
        .s("scenario=soak cpu=")
        .dec(cpu as u64)
        .s(" iterations=")
        .dec(i);
    DONE.fetch_add(1, Ordering::Release);
}

/// Non-boot CPU with index < ncpus: work, then park.
pub fn run_secondary(cpu: usize) -> ! {
    work(cpu);
    crate::boot::park()
}

/// CPU 0: work, wait for everyone, check, summarise.
pub fn run_boot(cfg: &Config) -> ! {
    let ncpus = cfg.ncpus as usize;
    work(0);
    while (DONE.load(Ordering::Acquire) as usize) < ncpus {
        core::hint::spin_loop();
    }
    let total: u64 = ITERATIONS
        .iter()
        .take(ncpus)
        .map(|n| n.load(Ordering::Relaxed))
        .sum();
    let ok = super::exec::print_target_calls(b"soak", total);
    serial::line().s("scenario=soak writes=").dec(total);
    crate::finish(if ok { 0 } else { 1 })
}
