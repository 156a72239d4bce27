//! What a breakpoint condition costs: the `args` guest calls `drv_target_arg(i, &3i)` for
//! i = 1..=CALLS, with a host breakpoint on it that every call hits. Unconditional (every hit
//! an event on the bus, as the command line's callback does) against conditions true at 1% of
//! the hits, on a register and through a guest-memory read (only those hits published), in
//! one run, paired; and one evaluation on its own against a bare IO exit.

use std::sync::Arc;
use std::time::Duration;

use drvisor::condition::Condition;
use drvisor::control::hit_machine::HitMachine;
use drvisor::debug::{HitContext, HostRequest};
use drvisor::events::{spawn_writer, WriterOptions, DEFAULT_CAPACITY};
use drvisor::symbols::SymbolTable;
use drvisor::{guest_image, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, HostBpId, Scope};

use crate::baseline::Baseline;
use crate::measure::{median_of, paired_ratio, ratio, time, us};

/// Calls of `drv_target_arg`.
const CALLS: u64 = 3000;

/// The run's wall time, and the hit events written.
fn args_run(breakpoint: bool, condition: Option<&str>) -> (Duration, u64) {
    let config = VmConfig::new(
        guest_image::kernel(),
        format!("scenario=args count={CALLS}"),
    );
    let vm = Vm::try_from(config).expect("VM");
    let bus = vm.events().clone();
    let writer = spawn_writer(
        bus.subscribe(DEFAULT_CAPACITY),
        Box::new(std::io::sink()),
        WriterOptions::default(),
        |e| panic!("{e}"),
    )
    .expect("writer");
    if breakpoint {
        let addr = SymbolTable::from_elf(guest_image::ELF)
            .resolve("drv_target_arg")
            .expect("symbol");
        let condition = condition.map(|c| Arc::new(Condition::parse(c).expect("parses")));
        // The callback every client's breakpoint gets.
        let on_hit = drvisor::control::reporter(
            bus.clone(),
            HitAction::Continue,
            0,
            vm.memory().clone(),
            condition,
            None,
            None,
        );
        vm.debug()
            .add(HostRequest {
                spec: BreakSpec::exec(addr).expect("spec"),
                scope: Scope::Vm,
                label: "drv_target_arg".into(),
                on_hit,
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

/// One evaluation of `text` at a hit whose registers make it true 1 time in 100, in a loop.
fn evaluation(text: &str) -> Duration {
    let condition = Condition::parse(text).expect("parses");
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)])
            .expect("memory");
    let mut hit = HitContext {
        id: HostBpId(1),
        label: "b".into(),
        vcpu: 0,
        rip: 0,
        addr: 0,
        kind: drvisor_api::BreakKind::Exec,
        engine: drvisor::watch::Engine::Hw,
        slot: Some(0),
        access: None,
        count: 0,
        regs: drvisor_api::Registers::default(),
        paging: Some(drvisor::guest_paging::SystemRegisters::default()),
    };
    const N: u64 = 1_000_000;
    let mut held = 0u64;
    let t = time(|| {
        for i in 1..=N {
            hit.regs.rdi = i;
            hit.regs.rsi = 0x1000 + (i % 64) * 8;
            hit.count = i;
            let machine = HitMachine {
                hit: &hit,
                mem: &mem,
            };
            held += u64::from(condition.holds(&machine, None).unwrap_or(false));
        }
    });
    assert!(held > 0 || text.contains('*'), "{text} never held");
    t / N as u32
}

/// Prints the costs.
pub fn run(base: &Baseline) {
    println!("breakpoint conditions: `args` guest, {CALLS} calls of drv_target_arg, each a hit");
    let without = median_of(3, || args_run(false, None).0);
    let (mut all_hits, mut some) = (0, 0);
    let plain = median_of(3, || {
        let (t, n) = args_run(true, None);
        all_hits = n;
        t
    });
    let mut row = |name: &str, condition: &str| {
        // Each conditional run right after an unconditional one: the load moves less within
        // a pair than across the whole benchmark.
        let (paired, t) = paired_ratio(
            5,
            || args_run(true, None).0,
            || {
                let (t, n) = args_run(true, Some(condition));
                some = n;
                t
            },
        );
        let per_hit = |t: Duration| (t.saturating_sub(without)) / CALLS as u32;
        println!(
            "  {name:<28} {some:>4} of {CALLS} hits reported, {:>8.1} ms; run time / the unconditional run's (paired, median of 5): {paired:.2}; per hit {:>6.1} us = {:.2} x the unconditional breakpoint's",
            us(t) / 1e3,
            us(per_hit(t)),
            ratio(per_hit(t), per_hit(plain)),
        );
    };
    println!(
        "  {:<28} {all_hits:>4} of {CALLS} hits reported, {:>8.1} ms; per hit {:>6.1} us (the run without the breakpoint: {:.1} ms)",
        "unconditional",
        us(plain) / 1e3,
        us(plain.saturating_sub(without) / CALLS as u32),
        us(without) / 1e3,
    );
    row("rdi % 100 == 0", "rdi % 100 == 0");
    row("*(u64 *)rsi % 300 == 0", "*(u64 *)rsi % 300 == 0");
    for text in [
        "rdi % 100 == 0",
        "hits % 100 == 0 && cpu == 0",
        "*(u64 *)rsi == 30",
    ] {
        let one = evaluation(text);
        println!(
            "  one evaluation of {text:<28} {:>7.1} ns = {:.5} bare IO exits",
            one.as_secs_f64() * 1e9,
            ratio(one, base.io_exit),
        );
    }
}
