//! `smp`: every CPU 0..ncpus-1 runs the `exec` loop and then the `write` loop, `count`
//! iterations each, on the same shared targets and watch variables.
//!
//! Each CPU prints `drv: scenario=smp cpu=I iterations=N exec_calls=C writes=W` (C = W = 4*N
//! when correct: 4 targets, 4 variables per iteration) and then increments DONE. CPU 0 waits
//! for DONE == ncpus and checks every CPU's C and W and every target's global call count
//! (== ncpus * count); summary `drv: summary scenario=smp cpus=N status=S` (0 = all exact).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::boot::MAX_CPUS;
use crate::cmdline::Config;
use crate::serial;
use crate::targets::{exec_loop, write_loop, TARGET_CALLS};

static EXEC_CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static WRITES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DONE: AtomicU32 = AtomicU32::new(0);

/// This CPU's share of the work; returns after DONE was incremented.
fn work(cpu: usize, count: u64) {
    let calls = exec_loop(count);
    let writes = write_loop(count);
    // cpu < MAX_CPUS (boot.rs parks the others); `get` avoids a bounds-check panic path.
    if let (Some(c), Some(w)) = (EXEC_CALLS.get(cpu), WRITES.get(cpu)) {
        c.store(calls, Ordering::Relaxed);
        w.store(writes, Ordering::Relaxed);
    }
    serial::line()
        .s("scenario=smp cpu=")
        .dec(cpu as u64)
        .s(" iterations=")
        .dec(count)
        .s(" exec_calls=")
        .dec(calls)
        .s(" writes=")
        .dec(writes);
    // Release: CPU 0 sees this CPU's counters (and its printed line came first).
    DONE.fetch_add(1, Ordering::Release);
}

/// Non-boot CPU with index < ncpus: do the work, then park.
pub fn run_secondary(cpu: usize, cfg: &Config) -> ! {
    work(cpu, cfg.count);
    crate::boot::park()
}

/// CPU 0: do the work, wait for everyone, check, summarise.
pub fn run_boot(cfg: &Config) -> ! {
    let ncpus = cfg.ncpus as usize;
    work(0, cfg.count);
    while (DONE.load(Ordering::Acquire) as usize) < ncpus {
        let dups = crate::boot::dup_cpus();
        if dups != 0 {
            // The missing CPUs will never come: they share an index with another CPU.
            serial::line().s("error smp: ").dec(u64::from(dups)).s(
                " cpu(s) parked with a duplicate index (CPUID.1:EBX[31:24] must be the vCPU index)",
            );
            crate::finish_with(1, |l| {
                l.s("cpus=").dec(ncpus as u64).s(" ");
            });
        }
        core::hint::spin_loop();
    }
    let per_cpu = 4 * cfg.count;
    let mut ok = EXEC_CALLS
        .iter()
        .zip(WRITES.iter())
        .take(ncpus)
        .all(|(c, w)| c.load(Ordering::Relaxed) == per_cpu && w.load(Ordering::Relaxed) == per_cpu);
    ok &= TARGET_CALLS
        .iter()
        .all(|c| c.load(Ordering::Relaxed) == cfg.ncpus as u64 * cfg.count);
    crate::finish_with(if ok { 0 } else { 1 }, |l| {
        l.s("cpus=").dec(ncpus as u64).s(" ");
    })
}
