//! `hello`: `drv: hello from drvisor-guest cpus=N cmdline="..."`, status 0.

use crate::cmdline::Config;
use crate::serial;

pub fn run(cfg: &Config) -> ! {
    serial::line()
        .s("hello from drvisor-guest cpus=")
        .dec(u64::from(cfg.ncpus))
        .s(" cmdline=\"")
        .b(cfg.raw)
        .s("\"");
    crate::finish(0)
}
