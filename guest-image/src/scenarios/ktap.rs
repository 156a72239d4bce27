//! `ktap`: real self-checks reported in KTAP v1, as KUnit prints them, for the CI harness's
//! `results = "ktap"`: a `targets` suite with one subtest per target (each called `count`
//! times, its call counter must grow by exactly that), `watch_page_starts_zeroed` (the watch
//! variables before anything writes them), `count_is_positive` (fails with `count=0`) and
//! `sse_state` (always skipped: the guest is built without SSE). Status 0 if every case passed,
//! else 1.

use core::sync::atomic::Ordering;

use crate::cmdline::Config;
use crate::serial::bare_line;
use crate::targets::{drv_target_0, drv_target_1, drv_target_2, drv_target_3, TARGET_CALLS};
use crate::targets::{drv_watch_u16, drv_watch_u32, drv_watch_u64, drv_watch_u8};

const TARGETS: [extern "C" fn(); 4] = [drv_target_0, drv_target_1, drv_target_2, drv_target_3];

fn result(indent: &str, n: u64, ok: bool, name: &str) -> bool {
    let mut l = bare_line();
    l.s(indent)
        .s(if ok { "ok " } else { "not ok " })
        .dec(n)
        .s(" ")
        .s(name);
    ok
}

pub fn run(cfg: &Config) -> ! {
    bare_line().s("KTAP version 1");
    bare_line().s("1..4");
    bare_line().s("    KTAP version 1");
    bare_line().s("    # Subtest: targets");
    bare_line().s("    1..4");
    let mut suite_ok = true;
    for (k, target) in TARGETS.iter().enumerate() {
        let before = TARGET_CALLS[k].load(Ordering::Relaxed);
        for _ in 0..cfg.count {
            target();
        }
        let grew = TARGET_CALLS[k].load(Ordering::Relaxed) - before;
        let name = [
            "calls_counted_0",
            "calls_counted_1",
            "calls_counted_2",
            "calls_counted_3",
        ][k];
        suite_ok &= result("    ", k as u64 + 1, grew == cfg.count, name);
    }
    let mut all_ok = result("", 1, suite_ok, "targets");
    // SAFETY: plain reads of the guest's own statics; nothing else runs.
    let zeroed = unsafe {
        (&raw const drv_watch_u8).read_volatile() == 0
            && (&raw const drv_watch_u16).read_volatile() == 0
            && (&raw const drv_watch_u32).read_volatile() == 0
            && (&raw const drv_watch_u64).read_volatile() == 0
    };
    all_ok &= result("", 2, zeroed, "watch_page_starts_zeroed");
    all_ok &= result("", 3, cfg.count > 0, "count_is_positive");
    bare_line().s("ok 4 sse_state # SKIP the guest is built without SSE");
    crate::finish(if all_ok { 0 } else { 1 })
}
