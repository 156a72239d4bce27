//! Page-protection watch costs (issue 4), against the baseline of the same run.

use std::time::Duration;

use drvisor::debug::always;
use drvisor::symbols::SymbolTable;
use drvisor::watch::{PageWatchRequest, WatchRange};
use drvisor::{guest_image, Outcome, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_watch::Access;

use crate::baseline::Baseline;
use crate::measure::{ratio, time, us};

fn symbol(name: &str) -> u64 {
    SymbolTable::from_elf(guest_image::ELF)
        .resolve(name)
        .expect("test guest symbol")
}

fn write_watch(gpa: u64, len: u64) -> PageWatchRequest {
    PageWatchRequest {
        range: WatchRange::Physical { gpa, len },
        access: Access::Write,
        label: format!("{gpa:#x}"),
        on_hit: always(HitAction::Continue),
    }
}

/// The same watch given guest-virtual (the guest maps its memory 1:1): armed watches of this
/// kind are followed, with a page walk at each debug and page exit.
fn virtual_write_watch(gva: u64, len: u64) -> PageWatchRequest {
    PageWatchRequest {
        range: WatchRange::Virtual { gva, len },
        ..write_watch(gva, len)
    }
}

/// Runs `cmdline` to completion with `watches` armed first; returns the run time.
fn run_with(cmdline: &str, watches: &[PageWatchRequest]) -> Duration {
    let vm = Vm::try_from(VmConfig::new(guest_image::kernel(), cmdline)).expect("VM");
    for w in watches {
        vm.watch().add(w.clone()).expect("arm");
    }
    time(|| {
        let outcome = vm.run().expect("run");
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
    })
}

/// The `mixed` scenario writes offset 0 and offset 2048 of its page `count` times each. With a
/// write watch on offset 0 every one of those writes traps: half hits, half false traps.
/// Returns the added cost of one trap with the watch given guest-physical, and guest-virtual.
fn trapped_write(count: u64) -> (Duration, Duration) {
    let cmdline = format!("scenario=mixed count={count} ncpus=1");
    let page = symbol("drv_mixed_page");
    // Interleaved, so that a change in the machine's load touches all three alike.
    let (mut physical, mut virt, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        physical.push(run_with(&cmdline, &[write_watch(page, 8)]));
        virt.push(run_with(&cmdline, &[virtual_write_watch(page, 8)]));
        bare.push(run_with(&cmdline, &[]));
    }
    let median = |mut runs: Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let bare = median(bare);
    let per_trap = |watched: Duration| watched.saturating_sub(bare) / (2 * count as u32);
    (per_trap(median(physical)), per_trap(median(virt)))
}

/// Add and remove one page watch while the guest runs, or while it is paused.
fn arm_disarm(paused: bool) -> (Duration, Duration) {
    let vm = Vm::try_from(VmConfig::new(
        guest_image::kernel(),
        "scenario=smp count=100000000 ncpus=1",
    ))
    .expect("VM");
    let (pages, ctl, control) = (
        vm.watch().clone(),
        vm.debug().clone(),
        vm.run_control().clone(),
    );
    let runner = std::thread::spawn(move || vm.run());
    std::thread::sleep(Duration::from_millis(100));
    if paused {
        ctl.pause_all("bench");
    }
    let buf = symbol("drv_range_buf");
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for _ in 0..21 {
        let mut id = None;
        adds.push(time(|| {
            id = Some(pages.add(write_watch(buf, 64)).expect("arm"))
        }));
        removes.push(time(|| pages.remove(id.expect("armed")).expect("disarm")));
    }
    ctl.resume("bench");
    control.finish(Outcome::Requested);
    let _ = runner.join();
    adds.sort();
    removes.sort();
    (adds[10], removes[10])
}

/// Measures and prints the page-watch costs.
pub fn run(base: &Baseline) {
    let (per_trap, per_virtual_trap) = trapped_write(2000);
    println!("page-protection watches");
    println!(
        "  trapped write round trip (exit, perform, match, callback, resume) {:>8.3} us",
        us(per_trap)
    );
    println!(
        "  / bare KVM_EXIT_MMIO round trip                                    {:>8.2}   (target <= 1.3)",
        ratio(per_trap, base.mmio_exit)
    );
    println!(
        "  / bare KVM_EXIT_IO round trip                                      {:>8.2}",
        ratio(per_trap, base.io_exit)
    );
    println!(
        "  the same, watch given guest-virtual (followed: a page walk per trap) {:>6.2} bare KVM_EXIT_MMIO",
        ratio(per_virtual_trap, base.mmio_exit)
    );

    // `write` touches only the drv_watch page; 128 watches cover drv_range_buf elsewhere.
    let buf = symbol("drv_range_buf");
    let elsewhere: Vec<PageWatchRequest> =
        (0..128).map(|k| write_watch(buf + 512 * k, 512)).collect();
    let cmdline = "scenario=write count=3000 ncpus=1";
    let _warm = run_with(cmdline, &[]);
    let mut armed = Vec::new();
    let mut none = Vec::new();
    for _ in 0..7 {
        armed.push(run_with(cmdline, &elsewhere));
        none.push(run_with(cmdline, &[]));
    }
    armed.sort();
    none.sort();
    println!(
        "  workload on unwatched pages, 128 watches elsewhere / none        {:>8.3}   (target <= 1.02)",
        ratio(armed[3], none[3])
    );

    for paused in [false, true] {
        let (add, remove) = arm_disarm(paused);
        println!(
            "  arm {:>8.1} us ({:>5.1} io exits), disarm {:>8.1} us ({:>5.1} io exits), {}",
            us(add),
            ratio(add, base.io_exit),
            us(remove),
            ratio(remove, base.io_exit),
            if paused { "VM paused" } else { "VM running" }
        );
    }
}
