//! One module per scenario; `run` dispatches on `scenario=`.

pub mod acpi;
pub mod args;
pub mod cpuid;
pub mod dr7_storm;
pub mod dr_migrate;
pub mod echo;
pub mod evict;
pub mod exec;
pub mod exit_race;
pub mod faults;
pub mod guest_dr;
pub mod hello;
pub mod irq_line;
pub mod kfunc;
pub mod ktap;
pub mod late_map;
pub mod mixed;
pub mod ranges;
pub mod remap;
pub mod s3;
pub mod smp;
pub mod soak;
pub mod spin;
pub mod status;
pub mod write;

use crate::cmdline::Config;

/// Runs the scenario named on the command line on CPU 0. Never returns: every scenario ends
/// with its summary line and the exit port (or with a deliberate fault).
pub fn run(cfg: &Config) -> ! {
    match cfg.scenario {
        b"hello" => hello::run(cfg),
        b"cpuid" => cpuid::run(cfg),
        b"acpi" => acpi::run(cfg),
        b"s3" => s3::run(cfg),
        b"exec" => exec::run(cfg),
        b"args" => args::run(cfg),
        b"write" => write::run(cfg),
        b"guest-dr" => guest_dr::run(cfg),
        b"smp" => smp::run_boot(cfg),
        b"soak" => soak::run_boot(cfg),
        b"dr-migrate" => dr_migrate::run_boot(cfg),
        b"triple-fault" => faults::triple_fault(),
        b"emu-fail" => faults::emu_fail(),
        b"bad-port" => faults::bad_port(),
        b"ranges" => ranges::run(cfg),
        b"mixed" => mixed::run(cfg),
        b"evict" => evict::run(cfg),
        b"echo" => echo::run(cfg),
        b"spin" => spin::run(),
        b"dr7-storm" => dr7_storm::run(cfg),
        b"exit-race" => exit_race::run(cfg),
        b"status" => status::run(cfg),
        b"kfunc" => kfunc::run_boot(cfg),
        b"late-map" => late_map::run(cfg),
        b"remap" => remap::run(cfg),
        b"remap-to-code" => remap::run_to_code(cfg),
        b"ktap" => ktap::run(cfg),
        b"irq-line" => irq_line::run(cfg),
        b"panic" => faults::panic(),
        b"unexpected-exception" => faults::unexpected_exception(),
        name => {
            crate::serial::line().s("error unknown scenario=").b(name);
            crate::finish(2)
        }
    }
}
