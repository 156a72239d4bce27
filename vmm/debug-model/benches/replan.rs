//! Re-plan cost: how long `plan()` takes for 1, 4 and 16 vCPUs under a mixed host/guest load.
//!
//! The VMM re-plans on every host registration and every guest DR7 change it observes, so this
//! is the latency added to either. Run: `cargo bench -p drvisor-debug --bench replan`
//! (add `-- --quick` for a fast, less precise run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use drvisor_debug::{
    attribute, plan, AttributionContext, BreakKind, BreakSpec, Dr6, Dr7, DrKind, DrLen,
    GuestDrFile, HostBpId, HostBreakpoint, Policy, Scope, Slot, VcpuId,
};

/// Three VM-wide host breakpoints plus one per vCPU, and guests enabling 0-3 slots (vCPU i
/// enables i % 4), so some vCPUs fit and some conflict.
fn mixed_load(vcpus: u32) -> (Vec<HostBreakpoint>, Vec<GuestDrFile>) {
    let spec = |addr, kind, len| BreakSpec::new(addr, kind, len).expect("valid bench spec");
    let mut hosts = vec![
        HostBreakpoint {
            id: HostBpId(1),
            spec: spec(0xffff_ffff_8100_0000, BreakKind::Exec, 1),
            scope: Scope::Vm,
        },
        HostBreakpoint {
            id: HostBpId(2),
            spec: spec(0xffff_ffff_8200_0040, BreakKind::Write, 8),
            scope: Scope::Vm,
        },
        HostBreakpoint {
            id: HostBpId(3),
            spec: spec(0xffff_ffff_8200_0080, BreakKind::ReadWrite, 4),
            scope: Scope::Vm,
        },
    ];
    for v in 0..vcpus {
        hosts.push(HostBreakpoint {
            id: HostBpId(100 + v),
            spec: spec(0xffff_ffff_8100_1000 + u64::from(v), BreakKind::Exec, 1),
            scope: Scope::Vcpu(VcpuId(v)),
        });
    }
    let guests = (0..vcpus)
        .map(|v| {
            let mut file = GuestDrFile::default();
            for slot in Slot::ALL.into_iter().take((v % 4) as usize) {
                file.dr[slot.index()] = 0x40_0000 + 8 * u64::from(slot.number());
                file.dr7 = file
                    .dr7
                    .with_local(slot, true)
                    .with_rw(slot, DrKind::Write)
                    .with_len(slot, DrLen::Eight);
            }
            file
        })
        .collect();
    (hosts, guests)
}

fn replan(c: &mut Criterion) {
    let mut group = c.benchmark_group("replan");
    for vcpus in [1u32, 4, 16] {
        let (hosts, guests) = mixed_load(vcpus);
        for policy in [Policy::HostFirst, Policy::GuestFirst] {
            group.bench_with_input(
                BenchmarkId::new(policy.name(), vcpus),
                &(hosts.as_slice(), guests.as_slice()),
                |b, (hosts, guests)| {
                    b.iter(|| plan(black_box(policy), black_box(hosts), black_box(guests)))
                },
            );
        }
    }
    group.finish();
}

fn dispatch(c: &mut Criterion) {
    let (hosts, guests) = mixed_load(4);
    let p = plan(Policy::HostFirst, &hosts, &guests);
    let vcpu = p.vcpus[3];
    let dr6 = Dr6::from_bits(0xffff_0fff).with_bs(true);
    let ctx = AttributionContext {
        host_single_step: true,
        ..Default::default()
    };
    debug_assert_ne!(vcpu.dr7, Dr7::INIT);
    c.bench_function("attribute/4-hits+bs", |b| {
        b.iter(|| attribute(black_box(dr6), black_box(&vcpu), black_box(ctx)))
    });
}

criterion_group!(benches, replan, dispatch);
criterion_main!(benches);
