//! End-to-end tests: the real `drvisor` binary booting real guests on this host's real KVM.
//!
//! Tests this host cannot run are listed as *ignored*, with the reason printed first: the probe
//! decides, never an assumption about the host.

mod acpi;
mod acpi_s3;
mod bad_input;
mod bounded;
mod bzimage;
mod ci_harness;
mod ci_hostile_inputs;
mod cmos_clock;
mod common;
mod conditions;
mod cpu_features;
mod debug_regs_port;
mod emulation;
mod emulation_exact;
mod events;
mod gdb_stub;
mod guest_and_host;
mod guest_faults;
mod host_breakpoints;
mod hostile_guests;
mod kernel_backtrace;
mod kernel_own_symbols;
mod kvm_unit_tests;
mod kvm_unit_tests_cfg;
mod live_changes;
mod one_door;
mod page_watches;
mod probe_cache;
mod probe_table;
mod readme_quickstart;
mod real_bzimage_mutations;
mod rest_api;
mod scenarios;
mod seccomp;
mod signals;
mod soak;
mod symbol_specs;
mod tiny_kernels;
mod trace_file;
mod usage_errors;
mod what_a_person_sees;
mod who_and_where;

use libtest_mimic::{Arguments, Trial};

fn main() {
    // Every drvisor these tests start caches its probe answers here, never in the user's cache.
    let cache = std::env::temp_dir().join(format!("drvisor-e2e-cache-{}", std::process::id()));
    std::env::set_var("XDG_CACHE_HOME", &cache);
    let args = Arguments::from_args();
    let ctx = common::Context::new();
    let mut trials: Vec<Trial> = Vec::new();
    trials.extend(scenarios::trials());
    trials.extend(probe_table::trials());
    trials.extend(probe_cache::trials());
    trials.extend(usage_errors::trials());
    trials.extend(what_a_person_sees::trials());
    trials.extend(bad_input::trials());
    trials.extend(signals::trials());
    trials.extend(hostile_guests::trials());
    trials.extend(real_bzimage_mutations::trials());
    trials.extend(guest_faults::trials(&ctx));
    trials.extend(bzimage::trials());
    trials.extend(host_breakpoints::trials(&ctx));
    trials.extend(conditions::trials());
    trials.extend(guest_and_host::trials(&ctx));
    trials.extend(live_changes::trials());
    trials.extend(one_door::trials());
    trials.extend(soak::trials());
    trials.extend(debug_regs_port::trials(&ctx));
    trials.extend(page_watches::trials(&ctx));
    trials.extend(kvm_unit_tests::trials(&ctx));
    trials.extend(kvm_unit_tests_cfg::trials(&ctx));
    trials.extend(rest_api::trials());
    trials.extend(gdb_stub::trials(&ctx));
    trials.extend(seccomp::trials());
    trials.extend(trace_file::trials());
    trials.extend(who_and_where::trials());
    trials.extend(tiny_kernels::trials());
    trials.extend(cmos_clock::trials());
    trials.extend(acpi::trials());
    trials.extend(acpi_s3::trials(&ctx));
    trials.extend(cpu_features::trials(&ctx));
    trials.extend(symbol_specs::trials());
    trials.extend(kernel_own_symbols::trials());
    trials.extend(kernel_backtrace::trials());
    trials.extend(events::trials());
    trials.extend(emulation::trials(&ctx));
    trials.extend(emulation_exact::trials(&ctx));
    trials.extend(ci_harness::trials(&ctx));
    trials.extend(ci_hostile_inputs::trials());
    trials.extend(readme_quickstart::trials());
    let conclusion = libtest_mimic::run(&args, trials);
    let _ = std::fs::remove_dir_all(&cache);
    conclusion.exit();
}
