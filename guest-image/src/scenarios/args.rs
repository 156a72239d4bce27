//! `args`: calls `drv_target_arg(i, &cell)` for i = 1..=`count` (RDI = i, RSI = the address of
//! a u64 holding 3 * i), prints `drv: scenario=args calls=C`; status 0 iff C == count. For
//! breakpoint conditions on registers and memory: e.g. `rdi % 7 == 0` holds at count / 7
//! calls, `*(u64 *)rsi == 30` at exactly one (i = 10).

use core::sync::atomic::Ordering;

use crate::cmdline::Config;
use crate::serial;
use crate::targets::{arg_loop, ARG_CALLS};

pub fn run(cfg: &Config) -> ! {
    arg_loop(cfg.count);
    let calls = ARG_CALLS.load(Ordering::Relaxed);
    serial::line().s("scenario=args calls=").dec(calls);
    crate::finish(if calls == cfg.count { 0 } else { 1 })
}
