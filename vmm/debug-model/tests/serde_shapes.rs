//! The JSON shapes the REST API and `--show-plan --json` print, and the checks deserializing
//! runs. These are a contract with API clients: change them deliberately.

use drvisor_debug::{
    plan, BreakSpec, Dr7, DrKind, DrLen, GuestDrFile, HostBpId, HostBreakpoint, Policy, Scope,
    Slot, VcpuId,
};
use serde_json::{json, Value};

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializable")
}

#[test]
fn policy_is_kebab_case_both_ways() {
    for (policy, name) in [
        (Policy::HostFirst, "host-first"),
        (Policy::GuestFirst, "guest-first"),
        (Policy::Deny, "deny"),
    ] {
        assert_eq!(to_json(&policy), json!(name));
        assert_eq!(
            serde_json::from_value::<Policy>(json!(name)).ok(),
            Some(policy)
        );
    }
    assert!(serde_json::from_value::<Policy>(json!("host_first")).is_err());
}

#[test]
fn deserializing_a_spec_validates_it() {
    let ok: BreakSpec =
        serde_json::from_value(json!({"addr": 4096, "kind": "write", "len": 4})).expect("valid");
    assert_eq!(
        ok,
        BreakSpec::new(4096, drvisor_debug::BreakKind::Write, 4).expect("valid")
    );
    let exec: BreakSpec =
        serde_json::from_value(json!({"addr": 16, "kind": "exec"})).expect("len defaults to 1");
    assert_eq!(exec.len(), 1);
    for (bad, needle) in [
        (
            json!({"addr": 4098, "kind": "write", "len": 4}),
            "not aligned",
        ),
        (json!({"addr": 4096, "kind": "exec", "len": 4}), "length 1"),
        (
            json!({"addr": 4096, "kind": "rw", "len": 3}),
            "1, 2, 4 or 8",
        ),
        (
            json!({"addr": 4096, "kind": "io", "len": 1}),
            "unknown variant",
        ),
    ] {
        let err = serde_json::from_value::<BreakSpec>(bad)
            .expect_err("invalid")
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
    assert!(serde_json::from_value::<Slot>(json!(4)).is_err());
    assert_eq!(
        serde_json::from_value::<Slot>(json!(3)).ok(),
        Some(Slot::DR3)
    );
}

#[test]
fn scope_and_host_breakpoint() {
    assert_eq!(to_json(&Scope::Vm), json!("vm"));
    assert_eq!(to_json(&Scope::Vcpu(VcpuId(2))), json!({"vcpu": 2}));
    let bp = HostBreakpoint {
        id: HostBpId(7),
        spec: BreakSpec::exec(0x1000).expect("valid"),
        scope: Scope::Vm,
    };
    let value = to_json(&bp);
    assert_eq!(
        value,
        json!({"id": 7, "spec": {"addr": 4096, "kind": "exec", "len": 1}, "scope": "vm"})
    );
    assert_eq!(
        serde_json::from_value::<HostBreakpoint>(value).ok(),
        Some(bp)
    );
}

#[test]
fn plan_shape() {
    let hosts: Vec<HostBreakpoint> = (1..=4)
        .map(|id| HostBreakpoint {
            id: HostBpId(id),
            spec: BreakSpec::exec(0x1000 * u64::from(id)).expect("valid"),
            scope: Scope::Vm,
        })
        .collect();
    let guest = GuestDrFile {
        dr7: Dr7::INIT
            .with_local(Slot::DR1, true)
            .with_rw(Slot::DR1, DrKind::Write)
            .with_len(Slot::DR1, DrLen::Four),
        ..GuestDrFile::default()
    };
    let plan = plan(Policy::GuestFirst, &hosts, &[guest, GuestDrFile::default()]);
    let value = to_json(&plan);
    assert_eq!(value["policy"], json!("guest-first"));
    assert_eq!(
        value["vcpus"][0]["slots"],
        json!([{"guest": 1}, {"host": 3}, {"host": 2}, {"host": 1}])
    );
    assert_eq!(
        value["vcpus"][1]["slots"],
        json!([{"host": 4}, {"host": 3}, {"host": 2}, {"host": 1}])
    );
    assert_eq!(
        value["vcpus"][0]["virt_to_phys"],
        json!([null, 0, null, null])
    );
    assert_eq!(
        value["guest_states"][0],
        json!([{"state": "unused"}, {"state": "armed", "phys": 0}, {"state": "unused"}, {"state": "unused"}])
    );
    assert_eq!(
        value["host_states"]["4"],
        json!({
            "summary": "partly-armed",
            "armed": {"1": 0},
            "pending": {"0": "evicted by the guest's own DR7 (guest-first)"}
        })
    );
    assert_eq!(value["host_states"]["1"]["summary"], json!("armed"));
}
