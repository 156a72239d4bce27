//! `cargo bench -p drvisor --bench exits`: the exit baselines every later cost is divided by.
//!
//! Prints, from one run:
//! - boot of the embedded guest's `hello` scenario to its exit, in process (no process start);
//! - the round trip of a bare `KVM_EXIT_IO` (guest `out` → VMM → resume), per exit;
//! - a `KVM_RUN` that does nothing but exit on HLT;
//! and their ratios. Absolute times on an emulating host are noise; the ratios are the result.

use std::time::{Duration, Instant};

use drvisor::probe::tiny_vm::{Stop, TinyVm};
use drvisor::{guest_image, Vm, VmConfig};
use kvm_ioctls::Kvm;

const EXITS: u32 = 20_000;
const BOOTS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn boot_hello() -> Duration {
    let start = Instant::now();
    let vm = Vm::try_from(VmConfig::new(
        guest_image::kernel(),
        "scenario=hello ncpus=1",
    ))
    .expect("build VM");
    let outcome = vm.run().expect("run");
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    start.elapsed()
}

/// Per-exit cost of a guest loop that exits `EXITS` times on `out 0x80, al`.
fn io_exit(kvm: &Kvm) -> Duration {
    let n = EXITS.to_le_bytes();
    // mov ecx, EXITS; 1: out 0x80, al; dec ecx; jnz 1b; hlt
    let code = [
        0xb9, n[0], n[1], n[2], n[3], 0xe6, 0x80, 0xff, 0xc9, 0x75, 0xfa, 0xf4,
    ];
    let mut vm = TinyVm::new(kvm, 0, false, &code).expect("probe VM");
    let start = Instant::now();
    let mut exits = 0;
    loop {
        match vm.run().expect("run").0 {
            Stop::IoOut { .. } => exits += 1,
            Stop::Hlt => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(exits, EXITS);
    start.elapsed() / EXITS
}

/// Per-run cost of `1: hlt; jmp 1b`: KVM_RUN, one HLT exit, back.
fn hlt_run(kvm: &Kvm) -> Duration {
    let mut vm = TinyVm::new(kvm, 0, false, &[0xf4, 0xeb, 0xfd]).expect("probe VM");
    let start = Instant::now();
    for _ in 0..EXITS {
        let (stop, _) = vm.run().expect("run");
        assert_eq!(stop, Stop::Hlt);
    }
    start.elapsed() / EXITS
}

fn main() {
    // `cargo test --benches` runs this with --test-ish flags; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let kvm = Kvm::new().expect("/dev/kvm");
    let _warm = boot_hello();
    let boot = median((0..BOOTS).map(|_| boot_hello()).collect());
    let io = median((0..5).map(|_| io_exit(&kvm)).collect());
    let hlt = median((0..5).map(|_| hlt_run(&kvm)).collect());
    println!("drvisor exit baselines (median of repeated runs, same process)");
    println!(
        "  boot `hello` to exit, in process      {:>10.1} us",
        boot.as_secs_f64() * 1e6
    );
    println!(
        "  bare KVM_EXIT_IO round trip, per exit  {:>10.3} us",
        io.as_secs_f64() * 1e6
    );
    println!(
        "  KVM_RUN that only exits on HLT         {:>10.3} us",
        hlt.as_secs_f64() * 1e6
    );
    println!("ratios");
    println!(
        "  io exit / hlt run                      {:>10.2}",
        io.as_secs_f64() / hlt.as_secs_f64()
    );
    println!(
        "  boot / io exit                         {:>10.0}",
        boot.as_secs_f64() / io.as_secs_f64()
    );
    println!(
        "  boot / hlt run                         {:>10.0}",
        boot.as_secs_f64() / hlt.as_secs_f64()
    );
}
