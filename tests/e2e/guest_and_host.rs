//! Host and guest breakpoints at once, on real KVM: the guest's `guest-dr` scenario programs its
//! own DR0-3 and counts its #DBs; drvisor adds host breakpoints. Each side must see exactly its
//! own hits, the guest with DR6 in its own numbering, whether they share functions or not.

use drvisor::probe::Mechanism;

use crate::common::{drvisor_with_events, ensure, guest_number, Context, Failed, Run, Trial};

/// The guest's hit count and DR6 for its slot `slot`.
fn guest_slot(run: &Run, slot: u8) -> Result<(u64, String), Failed> {
    let hits = guest_number(run, &["scenario=guest-dr", &format!("slot={slot}")], "hits")?;
    let line = run.guest_lines(&["scenario=guest-dr", &format!("slot={slot}")])[0];
    let dr6 = crate::common::field(line, "dr6")
        .unwrap_or_default()
        .to_owned();
    Ok((hits, dr6))
}

fn host_hits(events: &[serde_json::Value], label: &str) -> usize {
    events.iter().filter(|e| e["label"] == label).count()
}

fn sharing_functions() -> Result<(), Failed> {
    // The guest breaks on all four targets; the host on two of the same.
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "guest-dr",
        "--cmdline",
        "count=25",
        "--break",
        "drv_target_0",
        "--break",
        "drv_target_2",
    ]);
    run.expect_code(0)?;
    for slot in 0..4u8 {
        let (hits, dr6) = guest_slot(&run, slot)?;
        ensure(hits == 25, || {
            format!("guest slot {slot}: {hits} hits\n{run}")
        })?;
        ensure(dr6 == format!("{:#x}", 0xffff_0ff0u64 | 1 << slot), || {
            format!("guest slot {slot} saw DR6 {dr6}: not in its own numbering")
        })?;
    }
    ensure(
        guest_number(&run, &["scenario=guest-dr", "other_db=0"], "other_db")? == 0,
        || "the guest saw #DBs that were not its own".into(),
    )?;
    for t in ["drv_target_0", "drv_target_2"] {
        ensure(host_hits(&events, t) == 25, || {
            format!("host {t}: {}", host_hits(&events, t))
        })?;
    }
    ensure(events.len() == 50, || {
        format!("{} host events", events.len())
    })
}

fn disjoint_functions() -> Result<(), Failed> {
    // The guest uses its DR0/DR1 on targets 0 and 1; the host breaks on 2 and 3.
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "guest-dr",
        "--cmdline",
        "count=25 slots=0,1",
        "--break",
        "drv_target_2",
        "--break",
        "drv_target_3",
    ]);
    run.expect_code(0)?;
    for slot in 0..2u8 {
        let (hits, _) = guest_slot(&run, slot)?;
        ensure(hits == 25, || format!("guest slot {slot}: {hits} hits"))?;
    }
    ensure(
        run.guest_lines(&["scenario=guest-dr", "slot=2"]).is_empty(),
        || "slot 2 in use?".into(),
    )?;
    for t in ["drv_target_2", "drv_target_3"] {
        ensure(host_hits(&events, t) == 25, || {
            format!("host {t}: {}", host_hits(&events, t))
        })?;
    }
    Ok(())
}

fn guest_renumbered_slots() -> Result<(), Failed> {
    // The guest's DR2 watches target 1 and its DR3 target 0, while the host takes DR3 and DR2
    // physically: each owner keeps its own numbering.
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "guest-dr",
        "--cmdline",
        "count=15 slots=2:1,3:0",
        "--break",
        "drv_target_0",
        "--break",
        "drv_target_1",
    ]);
    run.expect_code(0)?;
    for slot in [2u8, 3] {
        let (hits, dr6) = guest_slot(&run, slot)?;
        ensure(
            hits == 15 && dr6 == format!("{:#x}", 0xffff_0ff0u64 | 1 << slot),
            || format!("guest slot {slot}: {hits} hits, dr6 {dr6}"),
        )?;
    }
    ensure(events.len() == 30, || {
        format!("{} host events", events.len())
    })
}

/// The guest uses all four DRs, the host wants two: each policy's outcome, in the visible
/// states (`--show-plan`) and in the hit counts.
fn conflict(policy: &'static str, native: bool) -> Trial {
    Trial::test(format!("guest_and_host::conflict_{policy}"), move || {
        let (run, events) = drvisor_with_events(&[
            "run",
            "--scenario",
            "guest-dr",
            "--cmdline",
            "count=20",
            "--policy",
            policy,
            "--show-plan",
            "--break",
            "drv_target_1",
            "--break",
            "drv_target_3",
        ]);
        let plan = busiest_plan(&run);
        if native {
            // This host checks the guest's DR7 apart from the host's: the guest's slots cost
            // no physical slot, so under every policy both owners get everything.
            run.expect_code(0)?;
            ensure(
                plan.matches("armed by the guest's own DR7").count() == 4,
                || plan.clone(),
            )?;
            ensure(
                plan.contains("host #1 drv_target_1: armed [vcpu0:DR3]"),
                || plan.clone(),
            )?;
            ensure(
                plan.contains("host #2 drv_target_3: armed [vcpu0:DR2]"),
                || plan.clone(),
            )?;
            for slot in 0..4 {
                ensure(guest_slot(&run, slot)?.0 == 20, || {
                    format!("guest slot {slot}")
                })?;
            }
            return ensure(events.len() == 40, || format!("{} host hits", events.len()));
        }
        // VMX/SVM: both owners compete for the four physical slots.
        match policy {
            "host-first" => {
                ensure(plan.contains("host #1 drv_target_1: armed"), || {
                    plan.clone()
                })?;
                ensure(plan.matches("pending").count() >= 2, || plan.clone())?;
                ensure(events.len() == 40, || format!("{} host hits", events.len()))?;
                // The guest's DR2/DR3 were displaced: the guest sees no hits there.
                ensure(
                    guest_slot(&run, 3)?.0 == 0 && guest_slot(&run, 0)?.0 == 20,
                    || run.to_string(),
                )
            }
            _ => {
                ensure(plan.contains("pending"), || plan.clone())?;
                for slot in 0..4 {
                    ensure(guest_slot(&run, slot)?.0 == 20, || {
                        format!("guest slot {slot}")
                    })?;
                }
                ensure(events.is_empty(), || {
                    format!("{} host hits while evicted", events.len())
                })
            }
        }
    })
}

/// The `--show-plan` table printed while the guest had the most slots enabled (the scenario
/// clears its DR7 at the end, and the plan follows).
fn busiest_plan(run: &Run) -> String {
    let mut tables: Vec<String> = Vec::new();
    for line in run.stderr.lines() {
        if line.starts_with("drvisor: slot plan") {
            tables.push(String::new());
        }
        if let Some(t) = tables.last_mut() {
            if line.starts_with("drvisor: slot plan") || line.starts_with("  ") {
                t.push_str(line);
                t.push('\n');
            }
        }
    }
    tables
        .into_iter()
        .max_by_key(|t| t.matches("guest DR").count())
        .unwrap_or_default()
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let native = ctx
        .probe
        .delivers(Mechanism::GuestBreakpointLiveUnderHostDebug, 0);
    println!(
        "guest_and_host: guest breakpoints are carried {} on this host (probe)",
        if native {
            "natively"
        } else {
            "in physical slots"
        }
    );
    vec![
        Trial::test("guest_and_host::sharing_functions", sharing_functions),
        Trial::test("guest_and_host::disjoint_functions", disjoint_functions),
        Trial::test(
            "guest_and_host::guest_renumbered_slots",
            guest_renumbered_slots,
        ),
        conflict("host-first", native),
        conflict("guest-first", native),
        conflict("deny", native),
    ]
}
