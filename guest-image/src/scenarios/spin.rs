//! `spin`: a guest that never exits, for stopping the VMM from outside (signals). It prints
//! `drv: scenario=spin started`, then calls `drv_target_0` and writes `drv_watch_u64` (values
//! 1, 2, 3, ... as in `write_loop`) for ever. No summary line: the run only ends from outside.

use crate::serial;
use crate::targets::{drv_target_0, drv_watch_u64, u64_value};

pub fn run() -> ! {
    serial::line().s("scenario=spin started");
    let mut i: u64 = 0;
    loop {
        i = i.wrapping_add(1);
        drv_target_0();
        // SAFETY: a naturally-aligned static; volatile so each write reaches memory (the VMM
        // may trap it).
        unsafe { (&raw mut drv_watch_u64).write_volatile(u64_value(i)) };
    }
}
