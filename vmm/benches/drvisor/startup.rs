//! Start-up, process start to exit: `drvisor run --scenario hello` (the release binary, with a
//! warm probe cache) against QEMU booting the same test-guest ELF with `-accel kvm -M q35
//! -kernel`, alternating, each pair back to back so the load of the moment weighs on both.
//! Without `qemu-system-x86_64` on the PATH, drvisor's median alone, and the reason.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use drvisor::guest_image;

use crate::measure::{paired_ratio, time};

/// Pairs of runs.
const RUNS: usize = 9;

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn drvisor_hello() -> Duration {
    time(|| {
        let status =
            quiet(Command::new(env!("CARGO_BIN_EXE_drvisor")).args(["run", "--scenario", "hello"]))
                .status()
                .expect("start drvisor");
        assert!(status.success(), "drvisor run --scenario hello: {status}");
    })
}

fn qemu_hello(elf: &Path) -> Duration {
    time(|| {
        let status = quiet(Command::new("qemu-system-x86_64").args([
            "-accel",
            "kvm",
            "-M",
            "q35",
            "-m",
            "64",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "null",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-append",
            "scenario=hello",
            "-kernel",
        ]))
        .arg(elf)
        .status()
        .expect("start QEMU");
        // isa-debug-exit: the guest's 0 becomes (0 << 1) | 1.
        assert_eq!(status.code(), Some(1), "QEMU -kernel hello: {status}");
    })
}

fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the group.
pub fn run() {
    println!("start-up, process start to exit ({RUNS} runs each, alternating)");
    // Warms the probe cache and the page cache, unmeasured.
    drvisor_hello();
    if !have_qemu() {
        let median = crate::measure::median_of(RUNS, drvisor_hello);
        println!(
            "  drvisor run --scenario hello (warm): median {:.1} ms",
            ms(median)
        );
        println!("  QEMU: skipped, qemu-system-x86_64 is not on the PATH");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let elf = dir.path().join("drvisor-guest");
    std::fs::write(&elf, guest_image::ELF).expect("write the guest ELF");
    let (mut drvisor, mut qemu) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    let (ratio, _) = paired_ratio(
        RUNS,
        || {
            qemu.push(qemu_hello(&elf));
            qemu[qemu.len() - 1]
        },
        || {
            drvisor.push(drvisor_hello());
            drvisor[drvisor.len() - 1]
        },
    );
    println!(
        "  drvisor run --scenario hello (warm): median {:.1} ms",
        ms(median(&mut drvisor))
    );
    println!(
        "  QEMU -accel kvm -M q35 -kernel: median {:.0} ms",
        ms(median(&mut qemu))
    );
    println!("  drvisor / QEMU: {ratio:.4} (the median of {RUNS} pairs' ratios)");
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
