//! `dr7-storm`: the guest rewrites its own DR7 on every iteration while the host breaks on the
//! same code, to show that no hit is lost or doubled however often the guest changes its DRs.
//!
//! DR0 = &drv_target_1 (an instruction breakpoint of the guest's own). Iteration i (0-based,
//! `count` of them) writes DR7 = LE|GE|bit 10, plus L0 when i is even, plus G1..G3 from the
//! bits of i (slots 1-3 point at address 0, which never runs), then calls `drv_target_0` and
//! `drv_target_1`. Afterwards DR7 = 0 and
//!   drv: scenario=dr7-storm dr7_writes=N guest_hits=H expected=E other_db=O
//!   drv: summary scenario=dr7-storm status=S   (0 iff H == E, the even iterations, and O == 0)
//! A host breakpoint on drv_target_0 or drv_target_1 must see exactly `count` hits.

use crate::cmdline::Config;
use crate::idt::dr;
use crate::scenarios::guest_dr::{self, DR6_CLEAR, DR7_BASE};
use crate::serial;
use crate::targets::{drv_target_0, drv_target_1, target_addr};

pub fn run(cfg: &Config) -> ! {
    crate::idt::install();
    dr::write_dr7(0);
    dr::write_dr6(DR6_CLEAR);
    dr::write_addr(0, target_addr(1));
    for slot in 1..4 {
        dr::write_addr(slot, 0);
    }
    guest_dr::set_enabled(1);
    let mut expected = 0u64;
    for i in 0..cfg.count {
        let l0 = if i % 2 == 0 { 1 } else { 0 };
        // G1, G2, G3 are DR7 bits 3, 5, 7.
        let g = ((i >> 1) & 1) << 3 | ((i >> 2) & 1) << 5 | ((i >> 3) & 1) << 7;
        dr::write_dr7(DR7_BASE | l0 | g);
        expected += l0;
        drv_target_0();
        drv_target_1();
    }
    dr::write_dr7(0);
    let hits = guest_dr::hits(0);
    let other = guest_dr::other_db();
    serial::line()
        .s("scenario=dr7-storm dr7_writes=")
        .dec(cfg.count)
        .s(" guest_hits=")
        .dec(hits)
        .s(" expected=")
        .dec(expected)
        .s(" other_db=")
        .dec(other);
    crate::finish(if hits == expected && other == 0 { 0 } else { 1 })
}
