//! `evict`: `drv_watch_u32` is written in three phases; in the middle one the guest holds all
//! four of its own debug-register slots, so a host watchpoint on `drv_watch_u32` that lives in a
//! debug register has to move to another engine (and back). README.md, "`evict`", has the
//! exact sequence. With `C` = `count`:
//!
//!   drv: scenario=evict phase=A            then C writes, values 1..=C
//!   (DR0..DR3 = &drv_target_0..3, exec, DR7 = 0x755)
//!   drv: scenario=evict phase=B dr7=0x755  then C writes, values 1001..=1000+C
//!   (DR7 = 0)
//!   drv: scenario=evict phase=C            then C writes, values 2001..=2000+C
//!   drv: scenario=evict writes_a=C writes_b=C writes_c=C other_db=N last=0x..
//!   drv: summary scenario=evict status=S   (0 iff last == expected and N == 0)
//!
//! Every printed byte is a port write, i.e. a VM exit, so each phase line is printed *after*
//! the debug-register change and *before* that phase's writes: the VMM sees the new guest DR7
//! before the first write of the phase. Every write is one `mov dword ptr [..], r32`
//! (`crate::access::write_u32`); the only other access to the watch page is the one 4-byte read
//! for `last`. The targets are never called, so every #DB the guest receives is a stray one: it
//! is counted (`other_db`), not fatal.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::access::{read_u32, write_u32};
use crate::cmdline::Config;
use crate::idt::{dr, Frame, RFLAGS_RF};
use crate::scenarios::guest_dr::{DR6_CLEAR, DR7_BASE};
use crate::serial;
use crate::targets::{drv_watch_u32, target_addr};

/// Value bases of the three phases: phase X writes `BASE_X + i` for i = 1..=count (mod 2^32).
pub const BASE_A: u32 = 0;
pub const BASE_B: u32 = 1000;
pub const BASE_C: u32 = 2000;
/// DR7 armed in phase B: L0..L3, every RW/LEN = 00 (exec), plus LE, GE and bit 10.
pub const PHASE_B_DR7: u64 = DR7_BASE | 0x55;

/// Set while this scenario runs: the IDT sends #DB here instead of to guest-dr.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static OTHER_DB: AtomicU64 = AtomicU64::new(0);
static LAST_DR6: AtomicU64 = AtomicU64::new(0);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);

/// Whether #DB belongs to this scenario's handler.
pub fn owns_debug_exceptions() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// #DB handler while `evict` runs: every #DB is unexpected (the targets are never called).
/// Counted, DR6 cleared, resumed with RF set, exactly like guest-dr's handler.
pub fn on_debug_exception(frame: &mut Frame) {
    OTHER_DB.fetch_add(1, Ordering::Relaxed);
    LAST_DR6.store(dr::read_dr6(), Ordering::Relaxed);
    LAST_RIP.store(frame.rip, Ordering::Relaxed);
    dr::write_dr6(DR6_CLEAR);
    frame.rflags |= RFLAGS_RF;
}

/// `count` single 4-byte writes of `base + i` (i = 1..=count, mod 2^32) to `drv_watch_u32`.
/// Returns the number of writes made.
fn write_phase(base: u32, count: u64) -> u64 {
    let p = &raw mut drv_watch_u32 as *mut u8;
    let mut writes = 0;
    for i in 1..=count {
        // SAFETY: drv_watch_u32 is a naturally aligned u32 static that only CPU 0 touches here.
        unsafe { write_u32(p, base.wrapping_add(i as u32)) };
        writes += 1;
    }
    writes
}

pub fn run(cfg: &Config) -> ! {
    let count = cfg.count;
    ACTIVE.store(true, Ordering::Relaxed);
    crate::idt::install();
    dr::write_dr7(0);
    dr::write_dr6(DR6_CLEAR);

    // Phase A: no guest debug registers in use.
    serial::line().s("scenario=evict phase=A");
    let writes_a = write_phase(BASE_A, count);

    // Phase B: the guest takes all four slots (exec breakpoints on targets that are never
    // called), announced only after DR7 is armed.
    for slot in 0..4u8 {
        dr::write_addr(usize::from(slot), target_addr(slot));
    }
    dr::write_dr7(PHASE_B_DR7);
    serial::line()
        .s("scenario=evict phase=B dr7=")
        .hex(PHASE_B_DR7);
    let writes_b = write_phase(BASE_B, count);

    // Phase C: the guest releases them (DR0..DR3 keep their addresses, DR7 = 0).
    dr::write_dr7(0);
    serial::line().s("scenario=evict phase=C");
    let writes_c = write_phase(BASE_C, count);

    // SAFETY: one aligned 4-byte read of drv_watch_u32.
    let last = unsafe { read_u32(&raw const drv_watch_u32 as *const u8) };
    let other = OTHER_DB.load(Ordering::Relaxed);
    serial::line()
        .s("scenario=evict writes_a=")
        .dec(writes_a)
        .s(" writes_b=")
        .dec(writes_b)
        .s(" writes_c=")
        .dec(writes_c)
        .s(" other_db=")
        .dec(other)
        .s(" last=")
        .hex(u64::from(last));

    // count = 0 writes nothing: the variable keeps its initial 0.
    let expected = if count == 0 {
        0
    } else {
        BASE_C.wrapping_add(count as u32)
    };
    let mut ok = true;
    if last != expected {
        ok = false;
        serial::line()
            .s("error evict: last=")
            .hex(u64::from(last))
            .s(" expected=")
            .hex(u64::from(expected));
    }
    if other != 0 {
        ok = false;
        serial::line()
            .s("error evict: other_db=")
            .dec(other)
            .s(" last_dr6=")
            .hex(LAST_DR6.load(Ordering::Relaxed))
            .s(" last_rip=")
            .hex(LAST_RIP.load(Ordering::Relaxed));
    }
    crate::finish(if ok { 0 } else { 1 })
}
