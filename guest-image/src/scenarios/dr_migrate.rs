//! `dr-migrate`: the guest's own breakpoint follows one "thread" as it migrates between CPUs,
//! the way Linux's perf hw_breakpoint does (arm on sched-in, disarm on sched-out), and the #DB
//! handler re-arms it on every hit.
//!
//! `rounds=R` rounds (default 8); round r runs on CPU r % ncpus. The CPU that owns a round
//! ("sched-in") clears DR6, points DR0 at target A and enables it in DR7 (L0; `watch=exec`: an
//! instruction breakpoint on `drv_target_0`/`drv_target_1`; `watch=write`: a 1-byte write
//! watch on `drv_watch_u64`/`drv_watch_u32`), then makes `count` iterations of "touch A, touch
//! B". The #DB handler counts each B0 and moves DR0 to the other one of A and B, so every touch
//! hits exactly once when the guest's DR changes take effect at once. Then DR7 = 0
//! ("sched-out") and the baton goes to the next CPU, which has been spinning (no exit) all
//! along. Expected: 2 * count hits per round.
//!
//! `delay=N` (default 0) pauses N busy iterations (no exit) after each touch, so a round lasts
//! long enough for a VMM that samples the guest's DRs periodically to see its arming.
//!
//! `announce=1` (the default) makes an exit (a read of port 0x520) after each arming and each
//! re-arm, so a VMM that cannot trap MOV DR (SVM) has seen the change before the next touch;
//! `announce=0` makes none, as Linux does not.
//!
//! Output, by CPU 0 at the end:
//!   drv: scenario=dr-migrate round=N cpu=C hits=H expected=E
//!   drv: scenario=dr-migrate hits=H expected=E other_db=O
//!   drv: summary scenario=dr-migrate cpus=N status=S   (0 iff every round exact and O == 0)

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::cmdline::Config;
use crate::idt::{dr, Frame, RFLAGS_RF};
use crate::serial;
use crate::targets::{drv_target_0, drv_target_1, drv_watch_u32, drv_watch_u64, target_addr};

use super::guest_dr::{DR6_CLEAR, DR7_BASE};

/// The most rounds; `rounds=` above it runs this many.
pub const MAX_ROUNDS: usize = 64;

static OWNS_DB: AtomicBool = AtomicBool::new(false);
static IDT_READY: AtomicBool = AtomicBool::new(false);
/// The round being run (its owner may touch the targets); `rounds` when all are done.
static BATON: AtomicU64 = AtomicU64::new(0);
static HITS: [AtomicU64; MAX_ROUNDS] = [const { AtomicU64::new(0) }; MAX_ROUNDS];
static OTHER_DB: AtomicU64 = AtomicU64::new(0);
/// The two addresses DR0 alternates between.
static ADDR_A: AtomicU64 = AtomicU64::new(0);
static ADDR_B: AtomicU64 = AtomicU64::new(0);
/// The address DR0 holds (the guest cannot read it back cheaply: MOV from DR0 is emulated).
static DR0_NOW: AtomicU64 = AtomicU64::new(0);
static WRITE: AtomicBool = AtomicBool::new(false);
static ANNOUNCE: AtomicBool = AtomicBool::new(true);

/// Whether this scenario's handler takes #DB.
pub fn owns_debug_exceptions() -> bool {
    OWNS_DB.load(Ordering::Relaxed)
}

/// One exit to the VMM (port 0x520 reads the host-signal count; no side effect).
fn exit_to_vmm() {
    let _ = crate::host_signal::raised();
}

/// #DB handler: counts B0 for the current round and moves DR0 to the other address.
pub fn on_debug_exception(frame: &mut Frame) {
    let dr6 = dr::read_dr6();
    dr::write_dr6(DR6_CLEAR);
    if dr6 & 1 == 0 {
        OTHER_DB.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let round = BATON.load(Ordering::Relaxed) as usize;
    if let Some(h) = HITS.get(round) {
        h.fetch_add(1, Ordering::Relaxed);
    }
    let (a, b) = (
        ADDR_A.load(Ordering::Relaxed),
        ADDR_B.load(Ordering::Relaxed),
    );
    let next = if DR0_NOW.load(Ordering::Relaxed) == a {
        b
    } else {
        a
    };
    DR0_NOW.store(next, Ordering::Relaxed);
    dr::write_addr(0, next);
    if ANNOUNCE.load(Ordering::Relaxed) {
        exit_to_vmm();
    }
    if !WRITE.load(Ordering::Relaxed) {
        // Instruction breakpoints are faults: resume with RF so the same one does not fire again.
        frame.rflags |= RFLAGS_RF;
    }
}

/// DR7 for slot 0 on this scenario's kind.
fn dr7() -> u64 {
    // L0; RW0 = 01 (write) or 00 (exec); LEN0 = 00 (1 byte).
    let rw = if WRITE.load(Ordering::Relaxed) {
        1 << 16
    } else {
        0
    };
    DR7_BASE | 1 | rw
}

fn touch_a() {
    if WRITE.load(Ordering::Relaxed) {
        // SAFETY: naturally aligned static; volatile so the write reaches memory.
        unsafe { (&raw mut drv_watch_u64).write_volatile(1) };
    } else {
        drv_target_0();
    }
}

fn touch_b() {
    if WRITE.load(Ordering::Relaxed) {
        // SAFETY: as in touch_a.
        unsafe { (&raw mut drv_watch_u32).write_volatile(1) };
    } else {
        drv_target_1();
    }
}

/// `n` iterations of a busy pause, no exit: the thread computes between its touches.
fn pause(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// Runs every round this CPU owns until all `rounds` are done.
fn rounds(cpu: usize, cfg: &Config, rounds: u64) {
    let ncpus = u64::from(cfg.ncpus);
    loop {
        let r = BATON.load(Ordering::Acquire);
        if r >= rounds {
            return;
        }
        if r % ncpus != cpu as u64 {
            core::hint::spin_loop();
            continue;
        }
        // Sched-in: arm.
        let a = ADDR_A.load(Ordering::Relaxed);
        dr::write_dr6(DR6_CLEAR);
        DR0_NOW.store(a, Ordering::Relaxed);
        dr::write_addr(0, a);
        dr::write_dr7(dr7());
        if cfg.announce {
            exit_to_vmm();
        }
        for _ in 0..cfg.count {
            touch_a();
            pause(cfg.delay);
            touch_b();
            pause(cfg.delay);
        }
        // Sched-out: disarm, hand over.
        dr::write_dr7(0);
        BATON.store(r + 1, Ordering::Release);
    }
}

/// Non-boot CPU below ncpus: wait for CPU 0's IDT, take part, park.
pub fn run_secondary(cpu: usize, cfg: &Config) -> ! {
    while !IDT_READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    crate::idt::load();
    dr::write_dr7(0);
    rounds(cpu, cfg, cfg.rounds.min(MAX_ROUNDS as u64));
    crate::boot::park()
}

/// CPU 0: set up, take part, wait for the last round, report.
pub fn run_boot(cfg: &Config) -> ! {
    let total = cfg.rounds.min(MAX_ROUNDS as u64);
    let write = cfg.watch_write;
    WRITE.store(write, Ordering::Relaxed);
    ANNOUNCE.store(cfg.announce, Ordering::Relaxed);
    let (a, b) = if write {
        (
            &raw const drv_watch_u64 as u64,
            &raw const drv_watch_u32 as u64,
        )
    } else {
        (target_addr(0), target_addr(1))
    };
    ADDR_A.store(a, Ordering::Relaxed);
    ADDR_B.store(b, Ordering::Relaxed);
    OWNS_DB.store(true, Ordering::Relaxed);
    crate::idt::install();
    dr::write_dr7(0);
    IDT_READY.store(true, Ordering::Release);
    rounds(0, cfg, total);
    while BATON.load(Ordering::Acquire) < total {
        core::hint::spin_loop();
    }
    let expected = 2 * cfg.count;
    let mut ok = true;
    let mut sum = 0;
    for (round, hits) in HITS.iter().enumerate().take(total as usize) {
        let hits = hits.load(Ordering::Relaxed);
        ok &= hits == expected;
        sum += hits;
        serial::line()
            .s("scenario=dr-migrate round=")
            .dec(round as u64)
            .s(" cpu=")
            .dec(round as u64 % u64::from(cfg.ncpus))
            .s(" hits=")
            .dec(hits)
            .s(" expected=")
            .dec(expected);
    }
    let other = OTHER_DB.load(Ordering::Relaxed);
    ok &= other == 0;
    serial::line()
        .s("scenario=dr-migrate hits=")
        .dec(sum)
        .s(" expected=")
        .dec(expected * total)
        .s(" other_db=")
        .dec(other);
    crate::finish_with(if ok { 0 } else { 1 }, |l| {
        l.s("cpus=").dec(u64::from(cfg.ncpus)).s(" ");
    })
}
