//! Hit throughput of the whole VMM (issue 12): the `kfunc` guest on 1, 2 and 4 vCPUs with one
//! host breakpoint every vCPU hits, each hit published on the event bus and written by its one
//! writer thread (to a sink that discards, so the disk is not measured). And the side-by-side
//! with QEMU + gdb, where both are installed.

use std::sync::Arc;
use std::time::Duration;

use drvisor::debug::{HitContext, HostRequest};
use drvisor::events::{spawn_writer, Event, WriterOptions, DEFAULT_CAPACITY};
use drvisor::symbols::SymbolTable;
use drvisor::{guest_image, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Scope};

use crate::measure::{median_of, time, us};

/// Calls of each function per vCPU.
const COUNT: u64 = 2000;

/// The `kfunc` scenario on `vcpus` vCPUs, with a host breakpoint on `symbol` (or none): the
/// wall time of the run, and the hits written.
fn kfunc_run(vcpus: usize, symbol: Option<&str>) -> (Duration, u64) {
    let mut config = VmConfig::new(
        guest_image::kernel(),
        format!("scenario=kfunc ncpus={vcpus} count={COUNT} slots="),
    );
    config.vcpus = vcpus;
    let vm = Vm::try_from(config).expect("VM");
    let bus = vm.events().clone();
    let writer = spawn_writer(
        bus.subscribe(DEFAULT_CAPACITY),
        Box::new(std::io::sink()),
        WriterOptions::default(),
        |e| panic!("{e}"),
    )
    .expect("writer");
    if let Some(symbol) = symbol {
        let addr = SymbolTable::from_elf(guest_image::ELF)
            .resolve(symbol)
            .expect("symbol");
        let publish = bus.clone();
        vm.debug()
            .add(HostRequest {
                spec: BreakSpec::exec(addr).expect("spec"),
                scope: Scope::Vm,
                label: symbol.into(),
                // What the command line's callback does: a wire event onto the bus.
                on_hit: Arc::new(move |h: &HitContext| {
                    publish.publish(Event::Hit(drvisor::control::hit_event(
                        h,
                        HitAction::Continue,
                    )));
                    HitAction::Continue
                }),
            })
            .expect("add");
    }
    let t = time(|| {
        let outcome = vm.run().expect("run");
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
    });
    bus.close();
    let report = writer.join().expect("writer");
    assert_eq!(report.lost, 0, "the event bus lost hits");
    (t, report.written)
}

/// Prints hits per second at 1, 2 and 4 vCPUs on each resume path.
pub fn run() {
    println!("hits per second, `kfunc` guest, every vCPU hitting one host breakpoint ({COUNT} calls each), events on the bus");
    for (symbol, path) in [
        ("drv_kfunc_1_nop5", "emulated 5-byte NOP"),
        ("drv_kfunc_1_inc", "step-over (lock inc)"),
    ] {
        for vcpus in [1usize, 2, 4] {
            let mut hits = 0;
            let with = median_of(3, || {
                let (t, n) = kfunc_run(vcpus, Some(symbol));
                hits = n;
                t
            });
            let without = median_of(3, || kfunc_run(vcpus, None).0);
            println!(
                "  {path:<22} {vcpus} vCPU(s): {hits} hits in {:>7.1} ms = {:>6.0} hits/s (the same run without the breakpoint: {:>6.1} ms)",
                us(with) / 1e3,
                hits as f64 / with.as_secs_f64(),
                us(without) / 1e3,
            );
        }
    }
    side_by_side();
}

/// `bench/qemu-gdb-side-by-side.sh` on the `exec` guest (step-over path) and the
/// `kfunc` guest (emulated path), with this build's drvisor.
fn side_by_side() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/qemu-gdb-side-by-side.sh"
    );
    let have = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !std::path::Path::new(script).exists() {
        println!("side by side with QEMU + gdb: skipped, no {script}");
        return;
    }
    if !have("qemu-system-x86_64") || !have("gdb") || !have("bc") {
        println!("side by side with QEMU + gdb: skipped, qemu-system-x86_64, gdb or bc missing");
        return;
    }
    let elf = std::env::temp_dir().join(format!("drvisor-bench-guest-{}", std::process::id()));
    if std::fs::write(&elf, guest_image::ELF).is_err() {
        println!("side by side with QEMU + gdb: skipped, cannot write the guest ELF");
        return;
    }
    println!("side by side with QEMU + gdb (same guest ELF, one host breakpoint, 3000 hits)");
    for (symbol, cmdline, path) in [
        ("drv_target_0", "scenario=exec count=3000", "step-over"),
        (
            "drv_kfunc_1_nop5",
            "scenario=kfunc count=3000 slots=",
            "emulated",
        ),
    ] {
        let out = std::process::Command::new("bash")
            .arg(script)
            .args(["3000", elf.to_str().unwrap_or_default(), symbol, cmdline])
            .env("DRV", env!("CARGO_BIN_EXE_drvisor"))
            .output();
        match out {
            Ok(o) => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    println!("  {path:<9} {line}");
                }
            }
            Err(e) => println!("  {path}: the script did not run: {e}"),
        }
    }
    let _ = std::fs::remove_file(&elf);
}
