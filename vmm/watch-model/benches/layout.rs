//! Planning and matching cost over 1 GiB of RAM.
//!
//! `plan` is the latency the VMM adds to arming or removing a watch (with the vCPUs paused for
//! the diff), and `match` the cost added to every trapped exit. Run:
//! `cargo bench -p drvisor-watch --bench layout` (add `-- --quick` for a fast, rougher run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use drvisor_watch::{diff, plan_layout, Access, RamRegion, Watch, WatchId};

const GIB: u64 = 1 << 30;
/// Room for any layout here: x86 KVM has offered 32764 slots since Linux 5.x.
const MAX_SLOTS: usize = 32764;

/// `n` 8-byte watches spread evenly over `ram_size`, every third one a read watch (a hole),
/// the others write watches (a read-only page).
fn spread(n: u64, ram_size: u64) -> Vec<Watch> {
    let stride = ram_size / n;
    (0..n)
        .map(|i| {
            let access = if i % 3 == 2 {
                Access::Read
            } else {
                Access::Write
            };
            let id = WatchId(u32::try_from(i).expect("bench watch count fits u32"));
            Watch::new(id, i * stride + 0x40, 8, access).expect("valid bench watch")
        })
        .collect()
}

fn plan(c: &mut Criterion) {
    let ram = [RamRegion::new(0, GIB).expect("valid bench RAM")];
    let mut group = c.benchmark_group("plan");
    for n in [1u64, 100, 1000] {
        let watches = spread(n, GIB);
        group.bench_with_input(BenchmarkId::new("fresh", n), &watches, |b, watches| {
            b.iter(|| plan_layout(black_box(&ram), black_box(watches), MAX_SLOTS))
        });
        // The usual change: one watch removed from an armed layout, then the diff to install.
        let armed = plan_layout(&ram, &watches, MAX_SLOTS).expect("bench layout fits");
        let fewer = &watches[1..];
        group.bench_with_input(BenchmarkId::new("replan+diff", n), &fewer, |b, fewer| {
            b.iter(|| {
                let next = armed.replan(black_box(fewer), MAX_SLOTS).expect("fits");
                diff(&armed, &next)
            })
        });
    }
    group.finish();
}

fn matching(c: &mut Criterion) {
    let ram = [RamRegion::new(0, GIB).expect("valid bench RAM")];
    // 100 watches: 90 spread over RAM, 10 crowded onto one page with the hit.
    let mut watches = spread(90, GIB);
    for i in 0..10u32 {
        let gpa = 0x20_0000 + 16 * u64::from(i);
        watches.push(Watch::new(WatchId(1000 + i), gpa, 8, Access::ReadWrite).expect("valid"));
    }
    let layout = plan_layout(&ram, &watches, MAX_SLOTS).expect("bench layout fits");
    let mut group = c.benchmark_group("match");
    let cases = [
        ("hit", 0x20_0044u64),
        ("false-trap", 0x20_0800),
        ("untrapped", 0x30_0000),
    ];
    for (name, gpa) in cases {
        group.bench_function(name, |b| {
            b.iter(|| layout.match_access(black_box(gpa), black_box(8), black_box(true)))
        });
    }
    group.finish();
}

criterion_group!(benches, plan, matching);
criterion_main!(benches);
