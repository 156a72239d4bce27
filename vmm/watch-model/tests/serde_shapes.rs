//! The JSON shapes the REST API and `--show-plan --json` print, and the checks deserializing
//! runs. These are a contract with API clients: change them deliberately.

use drvisor_watch::{diff, plan_layout, Access, AccessMatch, RamRegion, SlotOp, Watch, WatchId};
use serde_json::{json, Value};

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializable")
}

#[test]
fn access_names_match_the_debug_register_vocabulary() {
    for (access, name) in [
        (Access::Write, "write"),
        (Access::Read, "read"),
        (Access::ReadWrite, "rw"),
    ] {
        assert_eq!(to_json(&access), json!(name));
        assert_eq!(
            serde_json::from_value::<Access>(json!(name)).ok(),
            Some(access)
        );
    }
    assert_eq!(
        serde_json::from_value::<Access>(json!("read-write")).ok(),
        Some(Access::ReadWrite)
    );
    assert!(serde_json::from_value::<Access>(json!("read_write")).is_err());
}

#[test]
fn deserializing_validates() {
    let watch: Watch =
        serde_json::from_value(json!({"id": 3, "gpa": 4096, "len": 8, "access": "write"}))
            .expect("valid");
    assert_eq!(
        watch,
        Watch::new(WatchId(3), 4096, 8, Access::Write).expect("valid")
    );
    let zero =
        serde_json::from_value::<Watch>(json!({"id": 3, "gpa": 4096, "len": 0, "access": "rw"}));
    assert!(zero.is_err_and(|e| e.to_string().contains("length 0")));
    let ram: RamRegion = serde_json::from_value(json!({"gpa": 0, "size": 8192})).expect("valid");
    assert_eq!(ram, RamRegion::new(0, 8192).expect("valid"));
    let odd = serde_json::from_value::<RamRegion>(json!({"gpa": 0, "size": 100}));
    assert!(odd.is_err_and(|e| e.to_string().contains("not page-aligned")));
}

#[test]
fn layout_and_ops() {
    let ram = [RamRegion::new(0, 0x4000).expect("valid")];
    let bare = plan_layout(&ram, &[], 8).expect("fits");
    let watch = Watch::new(WatchId(1), 0x1010, 4, Access::Write).expect("valid");
    let armed = bare.replan(&[watch], 8).expect("fits");
    assert_eq!(
        to_json(&armed),
        json!({
            "ram": [{"gpa": 0, "size": 0x4000}],
            "slots": [
                {"slot": 0, "gpa": 0, "size": 0x1000, "readonly": false, "region": 0, "region_offset": 0},
                {"slot": 1, "gpa": 0x1000, "size": 0x1000, "readonly": true, "region": 0, "region_offset": 0x1000},
                {"slot": 2, "gpa": 0x2000, "size": 0x2000, "readonly": false, "region": 0, "region_offset": 0x2000},
            ],
            "traps": {"4096": {"mode": "read-only", "watches": [1]}},
            "watches": {"1": {"id": 1, "gpa": 0x1010, "len": 4, "access": "write"}},
        })
    );
    let ops: Vec<Value> = diff(&bare, &armed).iter().map(to_json).collect();
    assert_eq!(ops[0], json!({"op": "delete", "slot": 0}));
    assert_eq!(
        ops[2],
        json!({"op": "create", "slot": 1, "gpa": 0x1000, "size": 0x1000, "readonly": true, "region": 0, "region_offset": 0x1000})
    );
    assert!(matches!(diff(&bare, &armed)[0], SlotOp::Delete { slot: 0 }));
    assert_eq!(
        to_json(&AccessMatch {
            hits: vec![WatchId(2)],
            false_trap: false
        }),
        json!({"hits": [2], "false_trap": false})
    );
}
