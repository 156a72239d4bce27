//! `write`: the known write sequence on the four watch variables (see `targets::write_loop`),
//! then `drv: scenario=write var=NAME writes=C last=0x..` per variable and
//! `drv: scenario=write checksum=0x..` (FNV-1a 64 over the whole watch page); status 0.

use crate::cmdline::Config;
use crate::serial;
use crate::targets::{watch_page_checksum, watch_values, write_loop};

pub const WATCH_NAMES: [&str; 4] = [
    "drv_watch_u8",
    "drv_watch_u16",
    "drv_watch_u32",
    "drv_watch_u64",
];

pub fn run(cfg: &Config) -> ! {
    write_loop(cfg.count);
    for (name, last) in WATCH_NAMES.iter().zip(watch_values()) {
        serial::line()
            .s("scenario=write var=")
            .s(name)
            .s(" writes=")
            .dec(cfg.count)
            .s(" last=")
            .hex(last);
    }
    serial::line()
        .s("scenario=write checksum=")
        .hex(watch_page_checksum());
    crate::finish(0)
}
