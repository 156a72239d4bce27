//! `exec`: calls drv_target_0..3 `count` times each (order 0,1,2,3,0,...), prints
//! `drv: scenario=exec target=K calls=C` per target; status 0 iff every C == count.

use core::sync::atomic::Ordering;

use crate::cmdline::Config;
use crate::serial;
use crate::targets::{exec_loop, TARGET_CALLS};

pub fn run(cfg: &Config) -> ! {
    exec_loop(cfg.count);
    let status = if print_target_calls(b"exec", cfg.count) {
        0
    } else {
        1
    };
    crate::finish(status)
}

/// Prints `drv: scenario=NAME target=K calls=C` for K = 0..3; true iff every C == `expected`.
pub fn print_target_calls(scenario: &[u8], expected: u64) -> bool {
    let mut ok = true;
    for (k, calls) in TARGET_CALLS.iter().enumerate() {
        let calls = calls.load(Ordering::Relaxed);
        ok &= calls == expected;
        serial::line()
            .s("scenario=")
            .b(scenario)
            .s(" target=")
            .dec(k as u64)
            .s(" calls=")
            .dec(calls);
    }
    ok
}
