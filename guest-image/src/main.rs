//! drvisor-guest: a freestanding x86_64 test kernel for the drvisor VMM.
//!
//! Booted through the Xen PVH entry (see `boot.rs`), it reads `scenario=` and friends from the
//! command line (`cmdline.rs`), runs one scenario (`scenarios/`), prints `drv: ...` lines on
//! COM1 (`serial.rs`) and ends the run by writing the status byte to port 0xf4.
//! See README.md for the protocol and every scenario's output.

#![no_std]
#![no_main]

mod access;
mod boot;
mod cmdline;
mod host_signal;
mod idt;
mod kfuncs;
mod mem;
mod scenarios;
mod serial;
mod targets;

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Name of the running scenario, for summary lines printed from panic/exception paths.
static SCENARIO_PTR: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static SCENARIO_LEN: AtomicUsize = AtomicUsize::new(0);

fn set_scenario(name: &'static [u8]) {
    SCENARIO_LEN.store(name.len(), Ordering::Relaxed);
    SCENARIO_PTR.store(name.as_ptr() as *mut u8, Ordering::Release);
}

fn scenario_name() -> &'static [u8] {
    let p = SCENARIO_PTR.load(Ordering::Acquire);
    if p.is_null() {
        return b"none";
    }
    // SAFETY: set_scenario stored the parts of a 'static slice (the read-only command line).
    unsafe { core::slice::from_raw_parts(p, SCENARIO_LEN.load(Ordering::Relaxed)) }
}

/// Prints `drv: summary scenario=NAME status=S` and ends the run with status `S`.
pub fn finish(status: u8) -> ! {
    finish_with(status, |_| {})
}

/// Like `finish`, with extra `key=value ` fields (written by `extra`) before `status=`.
pub fn finish_with(status: u8, extra: impl FnOnce(&mut serial::Line)) -> ! {
    {
        let mut l = serial::line();
        l.s("summary scenario=").b(scenario_name()).s(" ");
        extra(&mut l);
        l.s("status=").dec(u64::from(status));
    }
    serial::exit(status)
}

/// Rust entry point, called by `boot.rs` on every CPU with its own stack.
#[no_mangle]
extern "C" fn drv_main(cpu: u32, start_info_paddr: u32) -> ! {
    let cfg = cmdline::parse(start_info_paddr);

    if cpu != 0 {
        // Only the smp, soak, kfunc, dr-migrate and exit-race scenarios use the other CPUs.
        if cfg.error.is_none() && cpu < cfg.ncpus {
            match cfg.scenario {
                b"smp" => scenarios::smp::run_secondary(cpu as usize, &cfg),
                b"soak" => scenarios::soak::run_secondary(cpu as usize),
                b"kfunc" => scenarios::kfunc::run_secondary(cpu as usize, &cfg),
                b"dr-migrate" => scenarios::dr_migrate::run_secondary(cpu as usize, &cfg),
                _ => {}
            }
        }
        if cfg.error.is_none() && cfg.scenario == b"exit-race" && cpu < cfg.ncpus {
            scenarios::exit_race::run_secondary(cpu, &cfg);
        }
        boot::park();
    }

    if cfg.ncpus > 1 {
        // The other CPUs wait for INIT/SIPI, as the PVH protocol says; they park unless the
        // scenario uses them.
        boot::start_aps(start_info_paddr, cfg.ncpus);
    }
    set_scenario(cfg.scenario);
    match cfg.error {
        None => {}
        Some(cmdline::Error::BadMagic(magic)) => {
            serial::line()
                .s("error bad hvm_start_info magic=")
                .hex(u64::from(magic));
            finish(2);
        }
        Some(cmdline::Error::BadValue(word)) => {
            serial::line().s("error invalid value ").b(word);
            finish(2);
        }
    }
    scenarios::run(&cfg)
}

/// Referenced by the prebuilt `core` (built with unwinding); never called with panic=abort.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    {
        let mut l = serial::line();
        l.s("panic");
        if let Some(loc) = info.location() {
            l.s(" at ").s(loc.file()).s(":").dec(u64::from(loc.line()));
        }
        // Only static messages: formatting arbitrary arguments would need core::fmt.
        if let Some(msg) = info.message().as_str() {
            l.s(": ").s(msg);
        }
    }
    finish(3)
}
