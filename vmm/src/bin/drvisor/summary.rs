//! The short human summary a run ends with, on stderr (`--quiet` leaves it out): each
//! breakpoint and watch with its engine, final state and hit count, the page engine's trap
//! counts, and the guest's status. The JSON events are the record; this is for the person.

use drvisor::Outcome;
use drvisor_api::rest::{Breakpoint, BreakpointKind, Engine, WatchAccess};

/// The summary's lines, without the `drvisor: ` prefix. `traps`: the page engine's trap and
/// false-trap counts, where it carried a watch. None for a run without breakpoints or watches
/// (there is nothing to sum up), nor for one that ended as the user's mistake, which is told
/// in one line (exit code 2).
pub fn lines(
    breakpoints: &[Breakpoint],
    traps: Option<(u64, u64)>,
    outcome: &Outcome,
) -> Vec<String> {
    let usage = !outcome.is_guest_status() && outcome.exit_code() == drvisor::exit_code::USAGE;
    if breakpoints.is_empty() || usage {
        return Vec::new();
    }
    let mut lines: Vec<String> = breakpoints.iter().map(breakpoint).collect();
    if let Some((traps, false_traps)) = traps {
        lines.push(format!(
            "page traps: {traps}, of which {false_traps} touched no watched byte"
        ));
    }
    if outcome.is_guest_status() {
        lines.push(format!("the guest's status: {}", outcome.exit_code()));
    }
    lines.into_iter().map(|l| format!("summary: {l}")).collect()
}

fn breakpoint(bp: &Breakpoint) -> String {
    let what = match (bp.kind, bp.access) {
        (BreakpointKind::Exec, _) => "exec".to_owned(),
        (BreakpointKind::Watch, access) => {
            let access = match access {
                Some(WatchAccess::Read) => "read",
                Some(WatchAccess::ReadWrite) => "access",
                _ => "write",
            };
            format!(
                "{access} watch, {} byte{}",
                bp.len,
                if bp.len == 1 { "" } else { "s" }
            )
        }
    };
    let mut hits = format!("{} hit{}", bp.hits, if bp.hits == 1 { "" } else { "s" });
    if let Some(condition) = &bp.condition {
        hits += &format!(
            ", {} where `{}` held",
            bp.matched.unwrap_or(0),
            drvisor::quote::cut(condition)
        );
        match bp.condition_faults.unwrap_or(0) {
            0 => {}
            1 => hits += ", 1 where it could not be evaluated",
            n => hits += &format!(", {n} where it could not be evaluated"),
        }
    }
    format!(
        "#{} {} ({what}): {}, {}, {hits}",
        bp.id,
        bp.location,
        placement(bp),
        bp.state
    )
}

/// Where it lived: one slot everywhere, each vCPU's slot or wait, or the page engine's pages.
fn placement(bp: &Breakpoint) -> String {
    if bp.engine == Engine::Page {
        return match bp.pages.len() {
            0 => "page engine".to_owned(),
            1 => "page engine on 1 page".to_owned(),
            n => format!("page engine on {n} pages"),
        };
    }
    let slots: Vec<Option<u8>> = bp.vcpus.iter().map(|p| p.slot).collect();
    match slots.first() {
        Some(&Some(slot)) if slots.iter().all(|s| *s == Some(slot)) => {
            format!("hw slot {slot}")
        }
        _ if slots.iter().all(Option::is_none) => "hw, in no slot".to_owned(),
        _ => {
            let each: Vec<String> = bp
                .vcpus
                .iter()
                .map(|p| match p.slot {
                    Some(slot) => format!("vCPU {} slot {slot}", p.vcpu),
                    None => format!("vCPU {} waiting", p.vcpu),
                })
                .collect();
            format!("hw ({})", each.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drvisor_api::rest::{Owner, VcpuPlacement};
    use drvisor_api::HitAction;

    fn placed(vcpu: u32, slot: Option<u8>) -> VcpuPlacement {
        VcpuPlacement {
            vcpu,
            state: if slot.is_some() { "armed" } else { "pending" }.into(),
            slot,
            reason: slot.is_none().then(|| "no free slot".into()),
        }
    }

    fn exec(id: u32, vcpus: Vec<VcpuPlacement>, state: &str, hits: u64) -> Breakpoint {
        Breakpoint {
            id,
            kind: BreakpointKind::Exec,
            location: format!("drv_target_{id}"),
            addr: 0x1000,
            len: 1,
            access: None,
            vcpu: None,
            action: HitAction::Continue,
            engine: Engine::Hw,
            owner: Owner::Cli,
            state: state.into(),
            vcpus,
            pages: Vec::new(),
            hits,
            condition: None,
            matched: None,
            condition_faults: None,
        }
    }

    #[test]
    fn a_condition_shows_how_often_it_held_and_faulted() {
        let bp = Breakpoint {
            condition: Some("hits % 10 == 0".into()),
            matched: Some(10),
            condition_faults: Some(0),
            ..exec(1, vec![placed(0, Some(3))], "armed", 100)
        };
        assert_eq!(
            breakpoint(&bp),
            "#1 drv_target_1 (exec): hw slot 3, armed, 100 hits, 10 where `hits % 10 == 0` held"
        );
        let bp = Breakpoint {
            condition: Some("*(u8 *)0 == 1".into()),
            matched: Some(0),
            condition_faults: Some(4),
            ..exec(1, vec![placed(0, Some(3))], "armed", 4)
        };
        assert!(breakpoint(&bp)
            .ends_with("4 hits, 0 where `*(u8 *)0 == 1` held, 4 where it could not be evaluated"));
    }

    #[test]
    fn every_breakpoint_its_place_state_and_hits_then_traps_and_status() {
        let watch = Breakpoint {
            kind: BreakpointKind::Watch,
            location: "drv_watch_u64".into(),
            len: 8,
            access: Some(WatchAccess::Write),
            engine: Engine::Page,
            pages: vec![0x10f000],
            ..exec(3, Vec::new(), "armed", 12)
        };
        let bps = [
            exec(
                1,
                vec![placed(0, Some(3)), placed(1, Some(3))],
                "armed",
                100,
            ),
            exec(
                2,
                vec![placed(0, Some(2)), placed(1, None)],
                "partly-armed",
                1,
            ),
            watch,
        ];
        let got = lines(&bps, Some((664, 613)), &Outcome::GuestExit { status: 0 });
        assert_eq!(
            got,
            [
                "summary: #1 drv_target_1 (exec): hw slot 3, armed, 100 hits",
                "summary: #2 drv_target_2 (exec): hw (vCPU 0 slot 2, vCPU 1 waiting), partly-armed, 1 hit",
                "summary: #3 drv_watch_u64 (write watch, 8 bytes): page engine on 1 page, armed, 12 hits",
                "summary: page traps: 664, of which 613 touched no watched byte",
                "summary: the guest's status: 0",
            ]
        );
    }

    #[test]
    fn no_status_line_when_the_run_ended_otherwise() {
        let bps = [exec(1, vec![placed(0, Some(3))], "armed", 0)];
        let got = lines(
            &bps,
            None,
            &Outcome::TripleFault {
                vcpu: 0,
                rip: 0x1000,
                was_reset: false,
                previous_exit: None,
            },
        );
        assert_eq!(
            got,
            ["summary: #1 drv_target_1 (exec): hw slot 3, armed, 0 hits"]
        );
    }

    #[test]
    fn nothing_without_breakpoints_or_after_the_users_mistake() {
        assert!(lines(&[], Some((1, 1)), &Outcome::GuestExit { status: 0 }).is_empty());
        let bps = [exec(1, vec![placed(0, Some(3))], "armed", 0)];
        let mistake = Outcome::CpuStructureWatched {
            vcpu: 0,
            rip: 0x1000,
            page: 0x10f000,
            what: "the GDT".into(),
            watch: (1, "drv_gdt".into()),
            triple_fault: false,
            written: false,
        };
        assert!(lines(&bps, None, &mistake).is_empty());
    }
}
