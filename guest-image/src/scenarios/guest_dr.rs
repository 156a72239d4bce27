//! `guest-dr`: the guest arms its own debug registers on drv_target_T and counts the #DBs.
//!
//! For each `slots=` element S[:T]: DR<S> = &drv_target_T, DR7.L<S> = 1 with RW=00 LEN=00
//! (instruction breakpoint), plus DR7 bits 8/9 (LE/GE) and 10 (reserved, 1). Then the `exec`
//! loop runs, then DR7 = 0.
//!
//! With `announce=1` (the default) the DR7 line is printed after DR7 is written: the port
//! writes are exits, so a VMM that cannot trap MOV DR (SVM) has seen the new DR7 before the
//! first call. With `announce=0` it is printed before, and nothing separates the DR7 write from
//! the first call: the window that such a VMM documents.
//!
//! Output (always every line, even when the host stole slots):
//!   drv: scenario=guest-dr dr7=0x..
//!   drv: scenario=guest-dr target=K calls=C                 (K = 0..3)
//!   drv: scenario=guest-dr slot=S target=T hits=H dr6=0x..  (each enabled slot; dr6 = last
//!                                                            DR6 seen with B<S> set, 0x0 if none)
//!   drv: scenario=guest-dr other_db=N
//!   drv: scenario=guest-dr bs_db=N bd_db=N
//!   drv: summary scenario=guest-dr status=S   (0 iff every enabled slot's H == count and N == 0)

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cmdline::Config;
use crate::idt::{dr, Frame, RFLAGS_RF};
use crate::serial;
use crate::targets::{exec_loop, target_addr};

/// DR6 value that clears every status bit (reserved bits read as 1).
pub const DR6_CLEAR: u64 = 0xffff_0ff0;
const DR6_BD: u64 = 1 << 13;
const DR6_BS: u64 = 1 << 14;
/// DR7 LE | GE | bit 10.
pub const DR7_BASE: u64 = 0x700;

static HITS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static LAST_DR6: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static BS_DB: AtomicU64 = AtomicU64::new(0);
static BD_DB: AtomicU64 = AtomicU64::new(0);
static OTHER_DB: AtomicU64 = AtomicU64::new(0);
/// Bit n set = slot n armed by the guest.
static ENABLED: AtomicU64 = AtomicU64::new(0);

/// Which guest slots the handler counts as armed (bit n = slot n), for scenarios that share it.
pub fn set_enabled(mask: u64) {
    ENABLED.store(mask, Ordering::Relaxed);
}

/// #DBs with B<slot> set so far.
pub fn hits(slot: usize) -> u64 {
    HITS.get(slot).map_or(0, |h| h.load(Ordering::Relaxed))
}

/// #DBs that carried no armed slot's B bit, no BS and no BD.
pub fn other_db() -> u64 {
    OTHER_DB.load(Ordering::Relaxed)
}

/// #DB handler (vector 1), called from the exception stub with the saved frame.
/// A #DB carrying no B<n> of an armed slot, no BS and no BD counts as "other".
pub fn on_debug_exception(frame: &mut Frame) {
    let dr6 = dr::read_dr6();
    let enabled = ENABLED.load(Ordering::Relaxed);
    let mut expected = false;
    for n in 0..4 {
        if dr6 & (1 << n) != 0 {
            HITS[n].fetch_add(1, Ordering::Relaxed);
            LAST_DR6[n].store(dr6, Ordering::Relaxed);
            expected |= enabled & (1 << n) != 0;
        }
    }
    if dr6 & DR6_BS != 0 {
        BS_DB.fetch_add(1, Ordering::Relaxed);
        expected = true;
    }
    if dr6 & DR6_BD != 0 {
        BD_DB.fetch_add(1, Ordering::Relaxed);
        expected = true;
    }
    if !expected {
        OTHER_DB.fetch_add(1, Ordering::Relaxed);
    }
    dr::write_dr6(DR6_CLEAR);
    // Instruction breakpoints are faults: resume with RF so the same one does not fire again.
    frame.rflags |= RFLAGS_RF;
}

/// Tells the #DB handler which slots are armed (bit n = slot n), for other scenarios that arm
/// their own and count with this handler.
pub fn expect_slots(slots: &[Option<u8>; 4]) {
    let enabled = slots
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_some())
        .fold(0, |bits, (slot, _)| bits | 1 << slot);
    ENABLED.store(enabled, Ordering::Relaxed);
}

pub fn run(cfg: &Config) -> ! {
    crate::idt::install();

    dr::write_dr7(0);
    dr::write_dr6(DR6_CLEAR);
    let mut dr7 = DR7_BASE;
    let mut enabled = 0;
    for (slot, target) in cfg.slots.iter().enumerate() {
        match target {
            Some(t) => {
                dr::write_addr(slot, target_addr(*t));
                dr7 |= 1 << (2 * slot); // L<slot>; RW<slot> = LEN<slot> = 00 (exec)
                enabled |= 1 << slot;
            }
            None => dr::write_addr(slot, 0),
        }
    }
    ENABLED.store(enabled, Ordering::Relaxed);
    if cfg.announce {
        dr::write_dr7(dr7);
        serial::line().s("scenario=guest-dr dr7=").hex(dr7);
    } else {
        serial::line().s("scenario=guest-dr dr7=").hex(dr7);
        dr::write_dr7(dr7);
    }
    exec_loop(cfg.count);
    dr::write_dr7(0);

    super::exec::print_target_calls(b"guest-dr", cfg.count);
    let mut ok = true;
    // Zipped iterators rather than indexing: no bounds-check panic path (see serial::Line::dec).
    for (slot, (target, (hits, last_dr6))) in cfg
        .slots
        .iter()
        .zip(HITS.iter().zip(LAST_DR6.iter()))
        .enumerate()
    {
        let Some(t) = target else { continue };
        let hits = hits.load(Ordering::Relaxed);
        ok &= hits == cfg.count;
        serial::line()
            .s("scenario=guest-dr slot=")
            .dec(slot as u64)
            .s(" target=")
            .dec(u64::from(*t))
            .s(" hits=")
            .dec(hits)
            .s(" dr6=")
            .hex(last_dr6.load(Ordering::Relaxed));
    }
    let other = OTHER_DB.load(Ordering::Relaxed);
    ok &= other == 0;
    serial::line().s("scenario=guest-dr other_db=").dec(other);
    serial::line()
        .s("scenario=guest-dr bs_db=")
        .dec(BS_DB.load(Ordering::Relaxed))
        .s(" bd_db=")
        .dec(BD_DB.load(Ordering::Relaxed));
    crate::finish(if ok { 0 } else { 1 })
}
