//! The exit baselines every other cost is divided by (issue 2): boot to exit, a bare
//! `KVM_EXIT_IO` round trip, and a `KVM_RUN` that only exits on HLT.

use std::time::Duration;

use drvisor::probe::tiny_vm::{Stop, TinyVm};
use drvisor::{guest_image, Vm, VmConfig};
use kvm_ioctls::Kvm;

use crate::measure::{median_of, ratio, time, us};

/// Exits per loop measurement.
pub const EXITS: u32 = 20_000;

/// The baselines of this run.
pub struct Baseline {
    /// Per bare `KVM_EXIT_IO` round trip.
    pub io_exit: Duration,
    /// Per bare `KVM_EXIT_MMIO` round trip: a guest store to a read-only memslot, exit, resume
    /// without doing anything with it.
    pub mmio_exit: Duration,
}

/// `mov ecx, n; 1: <body>; dec ecx; jnz 1b; hlt`, with a 2-byte body.
pub fn loop_of(body: [u8; 2], n: u32) -> Vec<u8> {
    let n = n.to_le_bytes();
    vec![
        0xb9, n[0], n[1], n[2], n[3], body[0], body[1], 0xff, 0xc9, 0x75, 0xfa, 0xf4,
    ]
}

/// Where the loop body sits.
pub const BODY_OFFSET: u64 = 5;

fn boot_hello() -> Duration {
    time(|| {
        let vm = Vm::try_from(VmConfig::new(
            guest_image::kernel(),
            "scenario=hello ncpus=1",
        ))
        .expect("build VM");
        let outcome = vm.run().expect("run");
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
    })
}

/// One bare `KVM_EXIT_IO` round trip, measured now.
pub fn io_exit(kvm: &Kvm) -> Duration {
    // out 0x80, al
    let mut vm = TinyVm::new(kvm, 0, false, &loop_of([0xe6, 0x80], EXITS)).expect("VM");
    let t = time(|| {
        let mut exits = 0;
        while let (Stop::IoOut { .. }, _) = vm.run_raw().expect("run") {
            exits += 1;
        }
        assert_eq!(exits, EXITS);
    });
    t / EXITS
}

fn mmio_exit(kvm: &Kvm) -> Duration {
    let n = EXITS.to_le_bytes();
    // mov ecx, EXITS; 1: mov [DATA], al; dec ecx; jnz 1b; hlt  (DATA is a read-only memslot)
    let code = [
        0xb9, n[0], n[1], n[2], n[3], 0x88, 0x04, 0x25, 0, 0, 0x20, 0, 0xff, 0xc9, 0x75, 0xf5, 0xf4,
    ];
    let mut vm = TinyVm::new(kvm, 0, true, &code).expect("VM");
    let t = time(|| {
        let mut exits = 0;
        while let (Stop::Mmio { .. }, _) = vm.run_raw().expect("run") {
            exits += 1;
        }
        assert_eq!(exits, EXITS);
    });
    t / EXITS
}

fn hlt_run(kvm: &Kvm) -> Duration {
    // 1: hlt; jmp 1b
    let mut vm = TinyVm::new(kvm, 0, false, &[0xf4, 0xeb, 0xfd]).expect("VM");
    time(|| {
        for _ in 0..EXITS {
            assert_eq!(vm.run_raw().expect("run").0, Stop::Hlt);
        }
    }) / EXITS
}

/// Measures and prints the baselines.
pub fn run(kvm: &Kvm) -> Baseline {
    let _warm = boot_hello();
    let boot = median_of(15, boot_hello);
    let io = median_of(5, || io_exit(kvm));
    let hlt = median_of(5, || hlt_run(kvm));
    let mmio = median_of(5, || mmio_exit(kvm));
    println!("exit baselines (medians, one process)");
    println!(
        "  boot `hello` to exit, in process         {:>12.1} us",
        us(boot)
    );
    println!(
        "  bare KVM_EXIT_IO round trip, per exit     {:>12.3} us",
        us(io)
    );
    println!(
        "  KVM_RUN that only exits on HLT            {:>12.3} us",
        us(hlt)
    );
    println!(
        "  bare KVM_EXIT_MMIO (read-only memslot)    {:>12.3} us",
        us(mmio)
    );
    println!(
        "  io exit / hlt run                         {:>12.2}",
        ratio(io, hlt)
    );
    println!(
        "  boot / io exit                            {:>12.0}",
        ratio(boot, io)
    );
    println!(
        "  boot / hlt run                            {:>12.0}",
        ratio(boot, hlt)
    );
    Baseline {
        io_exit: io,
        mmio_exit: mmio,
    }
}
