//! The plan as people and tools see it: wire states for the API and `--events`, and text
//! tables for `--show-plan` (the hardware slots, and the page watches).

use std::collections::BTreeMap;
use std::fmt::Write;

use drvisor_api::{BreakpointState, VcpuDebugState};
use drvisor_debug::{DrKind, HostBpId, HostSummary, PhysSlot, Plan, Slot};

/// Who owns a physical slot, in the wire's words: `free`, `host:ID`, `guest:DRn`, or
/// `host:ID+guest:DRn` when they share it.
pub fn slot_owner(slot: &PhysSlot) -> String {
    match slot {
        PhysSlot::Free => "free".to_owned(),
        PhysSlot::Host(id) => format!("host:{}", id.0),
        PhysSlot::Guest(virt) => format!("guest:{virt}"),
        PhysSlot::Shared { host, guest } => format!("host:{}+guest:{guest}", host.0),
    }
}

/// A breakpoint's state in one word: `armed`, `partly-armed` or `pending`.
pub fn summary_word(summary: HostSummary) -> &'static str {
    match summary {
        HostSummary::Armed => "armed",
        HostSummary::PartlyArmed => "partly-armed",
        HostSummary::Pending => "pending",
    }
}

/// Each vCPU's physical slots and guest slot states.
pub fn vcpu_states(plan: &Plan) -> Vec<VcpuDebugState> {
    plan.vcpus
        .iter()
        .zip(&plan.guest_states)
        .map(|(v, guest)| VcpuDebugState {
            vcpu: v.vcpu.0,
            physical: v.slots.map(|s| slot_owner(&s)),
            guest: guest.map(|g| g.to_string()),
            dr7: v.dr7.bits(),
        })
        .collect()
}

/// Each host breakpoint's state, with its label.
pub fn breakpoint_states(plan: &Plan, labels: &BTreeMap<HostBpId, String>) -> Vec<BreakpointState> {
    plan.host_states
        .iter()
        .map(|(id, state)| BreakpointState {
            id: id.0,
            label: labels.get(id).cloned().unwrap_or_default(),
            state: summary_word(state.summary()).to_owned(),
            armed: state.armed.iter().map(|(v, s)| (v.0, s.number())).collect(),
            pending: state
                .pending
                .iter()
                .map(|(v, r)| (v.0, r.to_string()))
                .collect(),
        })
        .collect()
}

/// A text table of the plan. `exec_note`, when the host has one ([`super::DebugCaps::exec_note`]),
/// follows every armed exec breakpoint's state.
pub fn describe(
    plan: &Plan,
    labels: &BTreeMap<HostBpId, String>,
    exec_note: Option<&str>,
) -> String {
    let mut out = format!("slot plan (policy {}):\n", plan.policy);
    for v in vcpu_states(plan) {
        let _ = writeln!(
            out,
            "  vcpu{}: DR0 {:<10} DR1 {:<10} DR2 {:<10} DR3 {:<10} dr7={:#x}",
            v.vcpu, v.physical[0], v.physical[1], v.physical[2], v.physical[3], v.dr7
        );
        for (n, g) in v.guest.iter().enumerate() {
            if g != "unused" {
                let _ = writeln!(out, "    guest DR{n}: {g}");
            }
        }
    }
    for b in breakpoint_states(plan, labels) {
        let armed: Vec<String> = b
            .armed
            .iter()
            .map(|(v, s)| format!("vcpu{v}:DR{s}"))
            .collect();
        let _ = write!(out, "  host #{} {}: {}", b.id, b.label, b.state);
        if !armed.is_empty() {
            let _ = write!(out, " [{}]", armed.join(" "));
            let exec = b.armed.iter().any(|(v, s)| {
                plan.vcpus.get(*v as usize).is_some_and(|p| {
                    Slot::new(*s).is_some_and(|slot| p.dr7.rw(slot) == DrKind::Exec)
                })
            });
            if let Some(note) = exec_note.filter(|_| exec) {
                let _ = write!(out, " ({note})");
            }
        }
        for (v, why) in &b.pending {
            let _ = write!(out, "; vcpu{v} pending: {why}");
        }
        out.push('\n');
    }
    out
}
