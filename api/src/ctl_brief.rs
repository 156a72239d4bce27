//! `drvisor ctl --brief`: one line per object for a person at a terminal, instead of pretty
//! JSON. Pure: a response in, its line out. Only the VM and breakpoint answers have a brief
//! form; every other answer is its JSON on one line.

use serde::Serialize;

use crate::rest::{Breakpoint, BreakpointKind, VmInfo};

/// A serde enum's wire name (`host-first`, `hw`, `api`, ...).
fn word(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

/// `running: 1 vCPU, 64 MiB, embedded test guest, policy host-first, up 1538 ms`; a stopped VM
/// says how it ended first.
pub fn vm(v: &VmInfo) -> String {
    let state = match &v.exit {
        Some(exit) => format!("{} (exit {}: {})", word(&v.state), exit.status, exit.reason),
        None => word(&v.state),
    };
    format!(
        "{state}: {} vCPU{}, {} MiB, {}, policy {}, up {} ms",
        v.vcpus,
        if v.vcpus == 1 { "" } else { "s" },
        v.memory_mib,
        v.kernel,
        v.policy,
        v.uptime_ms
    )
}

/// `#1 exec drv_target_0 at 0x108ee0: hw, armed, 12 hits, owner api`, with the access and
/// length of a watch, a vCPU scope and an action other than `continue` where they apply.
pub fn breakpoint(b: &Breakpoint) -> String {
    let mut what = format!(
        "#{} {} {} at {:#x}",
        b.id,
        word(&b.kind),
        b.location,
        b.addr
    );
    if b.kind == BreakpointKind::Watch {
        let access = b
            .access
            .as_ref()
            .map_or_else(String::new, |a| format!(" {}", word(a)));
        what.push_str(&format!(" ({} bytes{access})", b.len));
    }
    let mut line = format!(
        "{what}: {}, {}, {} hit{}, owner {}",
        word(&b.engine),
        b.state,
        b.hits,
        if b.hits == 1 { "" } else { "s" },
        word(&b.owner)
    );
    if let Some(vcpu) = b.vcpu {
        line.push_str(&format!(", vCPU {vcpu} only"));
    }
    if let Some(condition) = &b.condition {
        line.push_str(&format!(
            ", if `{condition}` ({} matched",
            b.matched.unwrap_or(0)
        ));
        match b.condition_faults.unwrap_or(0) {
            0 => line.push(')'),
            n => line.push_str(&format!(", {n} faults)")),
        }
    }
    let action = word(&b.action);
    if action != "continue" {
        line.push_str(&format!(", on hit {action}"));
    }
    line
}

/// One line per breakpoint or watch, or `no breakpoints`.
pub fn breakpoints(list: &[Breakpoint]) -> String {
    if list.is_empty() {
        return "no breakpoints".into();
    }
    list.iter().map(breakpoint).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::{Engine, Owner, VmExit, VmState, WatchAccess};
    use crate::HitAction;

    fn bp(kind: BreakpointKind) -> Breakpoint {
        Breakpoint {
            id: 2,
            kind,
            location: "drv_target_0".into(),
            addr: 0x108ee0,
            len: 1,
            access: None,
            vcpu: None,
            action: HitAction::Continue,
            engine: Engine::Hw,
            owner: Owner::Api,
            state: "armed".into(),
            vcpus: vec![],
            pages: vec![],
            hits: 1,
            condition: None,
            matched: None,
            condition_faults: None,
        }
    }

    #[test]
    fn each_answer_is_one_line() {
        let mut v = VmInfo {
            state: VmState::Running,
            exit: None,
            vcpus: 2,
            memory_mib: 64,
            kernel: "embedded test guest".into(),
            policy: "host-first".into(),
            uptime_ms: 7,
        };
        assert_eq!(
            vm(&v),
            "running: 2 vCPUs, 64 MiB, embedded test guest, policy host-first, up 7 ms"
        );
        v.state = VmState::Stopped;
        v.exit = Some(VmExit {
            status: 0,
            reason: "the run was ended on request".into(),
        });
        assert!(vm(&v).starts_with("stopped (exit 0: the run was ended on request): 2 vCPUs"));

        let exec = bp(BreakpointKind::Exec);
        assert_eq!(
            breakpoint(&exec),
            "#2 exec drv_target_0 at 0x108ee0: hw, armed, 1 hit, owner api"
        );
        let mut watch = bp(BreakpointKind::Watch);
        watch.access = Some(WatchAccess::ReadWrite);
        watch.len = 8;
        watch.vcpu = Some(1);
        watch.action = HitAction::Pause;
        watch.hits = 0;
        assert_eq!(
            breakpoint(&watch),
            "#2 watch drv_target_0 at 0x108ee0 (8 bytes rw): hw, armed, 0 hits, owner api, \
             vCPU 1 only, on hit pause"
        );
        assert_eq!(breakpoints(&[]), "no breakpoints");
        assert_eq!(breakpoints(&[exec.clone(), exec]).lines().count(), 2);
    }
}
