//! `kfunc`: every CPU 0..ncpus-1 arms its own debug registers on the kernel-like functions
//! (`slots=`: slot S on `drv_kfunc_T`, or on `drv_kfunc_T_inc` with `gbp=inc`; `slots=` empty
//! arms none), calls `drv_kfunc_0..3`
//! `count` times each, and disarms. The #DBs are counted by the guest-dr handler.
//!
//! Output:
//!   drv: scenario=kfunc cpu=I calls=C                       (each CPU; C = 4*count)
//!   drv: scenario=kfunc target=K calls=C                    (K = 0..3; C = ncpus*count)
//!   drv: scenario=kfunc slot=S target=T hits=H              (each armed slot; H = ncpus*count)
//!   drv: scenario=kfunc other_db=N
//!   drv: summary scenario=kfunc cpus=N status=S             (0 iff every count is exact, N=0)

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::boot::MAX_CPUS;
use crate::cmdline::Config;
use crate::idt::dr;
use crate::kfuncs::{kfunc_addr, kfunc_inc_addr, kfunc_loop, KFUNC_CALLS};
use crate::serial;

use super::guest_dr::{self, DR6_CLEAR, DR7_BASE};

static CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DONE: AtomicU32 = AtomicU32::new(0);
/// CPU 0 has built the IDT and set what the #DB handler expects.
static READY: AtomicBool = AtomicBool::new(false);

/// Arms this CPU's slots per `cfg.slots`, runs the loop, disarms, and reports.
fn work(cpu: usize, cfg: &Config) {
    dr::write_dr7(0);
    dr::write_dr6(DR6_CLEAR);
    let mut dr7 = DR7_BASE;
    for (slot, target) in cfg.slots.iter().enumerate() {
        if let Some(t) = target {
            let addr = if cfg.gbp_inc {
                kfunc_inc_addr(*t)
            } else {
                kfunc_addr(*t)
            };
            dr::write_addr(slot, addr);
            dr7 |= 1 << (2 * slot); // L<slot>, exec
        }
    }
    dr::write_dr7(dr7);
    // One exit (a read of the host-signal port) between arming and the first call, so a VMM
    // that cannot trap MOV DR (SVM) has placed the slots before they are relied on, as the
    // guest-dr scenario's `announce=1` does.
    let _ = crate::host_signal::raised();
    let calls = kfunc_loop(cfg.count);
    dr::write_dr7(0);
    if let Some(c) = CALLS.get(cpu) {
        c.store(calls, Ordering::Relaxed);
    }
    serial::line()
        .s("scenario=kfunc cpu=")
        .dec(cpu as u64)
        .s(" calls=")
        .dec(calls);
    DONE.fetch_add(1, Ordering::Release);
}

/// Non-boot CPU with index < ncpus.
pub fn run_secondary(cpu: usize, cfg: &Config) -> ! {
    while !READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    crate::idt::load();
    work(cpu, cfg);
    crate::boot::park()
}

/// CPU 0: set up, work, wait for everyone, check, summarise.
pub fn run_boot(cfg: &Config) -> ! {
    crate::idt::install();
    guest_dr::expect_slots(&cfg.slots);
    READY.store(true, Ordering::Release);
    let ncpus = cfg.ncpus as usize;
    work(0, cfg);
    while (DONE.load(Ordering::Acquire) as usize) < ncpus {
        core::hint::spin_loop();
    }
    let total = cfg.ncpus as u64 * cfg.count;
    let mut ok = CALLS
        .iter()
        .take(ncpus)
        .all(|c| c.load(Ordering::Relaxed) == 4 * cfg.count);
    for (k, calls) in KFUNC_CALLS.iter().enumerate() {
        let calls = calls.load(Ordering::Relaxed);
        ok &= calls == total;
        serial::line()
            .s("scenario=kfunc target=")
            .dec(k as u64)
            .s(" calls=")
            .dec(calls);
    }
    for (slot, target) in cfg.slots.iter().enumerate() {
        let Some(t) = target else { continue };
        let hits = guest_dr::hits(slot);
        ok &= hits == total;
        serial::line()
            .s("scenario=kfunc slot=")
            .dec(slot as u64)
            .s(" target=")
            .dec(u64::from(*t))
            .s(" hits=")
            .dec(hits);
    }
    let other = guest_dr::other_db();
    ok &= other == 0;
    serial::line().s("scenario=kfunc other_db=").dec(other);
    crate::finish_with(if ok { 0 } else { 1 }, |l| {
        l.s("cpus=").dec(ncpus as u64).s(" ");
    })
}
