//! Watchpoints beyond four slots, on real KVM: the page-protection engine with the test guest's
//! `write`, `mixed` and `ranges` scenarios, whose access counts are known exactly
//! (guest-image/README.md).

use drvisor::probe::Mechanism;
use drvisor::symbols::SymbolTable;
use drvisor::watch::{arm_watch, Engine, EngineChoice, Place, WatchRequest};
use drvisor::{guest_image, Vm, VmConfig};
use drvisor_debug::Scope;
use drvisor_watch::Access;

use crate::common::{
    drvisor, drvisor_with_events, ensure, guest_number, refused, skipped, Context, Failed, Run,
    Trial,
};

fn symbol(name: &str) -> u64 {
    SymbolTable::from_elf(guest_image::ELF)
        .resolve(name)
        .expect("test guest symbol")
}

fn hits<'a>(events: &'a [serde_json::Value], label: &str) -> Vec<&'a serde_json::Value> {
    events
        .iter()
        .filter(|e| e["event"] == "hit" && e["label"] == label)
        .collect()
}

fn traps(events: &[serde_json::Value]) -> (u64, u64) {
    events
        .iter()
        .find(|e| e["event"] == "page-traps")
        .map(|e| {
            (
                e["traps"].as_u64().unwrap_or(0),
                e["false_traps"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0))
}

fn checksum(run: &Run, scenario: &str) -> Result<String, Failed> {
    let lines = run.guest_lines(&[&format!("scenario={scenario}")]);
    lines
        .iter()
        .find_map(|l| crate::common::field(l, "checksum"))
        .map(str::to_owned)
        .ok_or_else(|| format!("no checksum line\n{run}").into())
}

/// Write watches of 1, 2, 4 and 8 bytes: one hit per guest write, with the old and new values.
fn write_widths() -> Result<(), Failed> {
    let vars = [
        "drv_watch_u8",
        "drv_watch_u16",
        "drv_watch_u32",
        "drv_watch_u64",
    ];
    let mut args = vec!["run", "--scenario", "write", "--cmdline", "count=23"];
    for v in vars {
        args.extend(["--watch", v, "--engine", "page"]);
    }
    let (run, events) = drvisor_with_events(&args)?;
    run.expect_code(0)?;
    for (width, var) in [(1u32, vars[0]), (2, vars[1]), (4, vars[2]), (8, vars[3])] {
        let got = hits(&events, var);
        ensure(got.len() == 23, || {
            format!("{var}: {} hits, wanted 23", got.len())
        })?;
        for (i, e) in got.iter().enumerate() {
            let n = i as u64 + 1;
            // The guest writes i (truncated) for u8..u32 and i * 0x0101010101010101 for u64.
            let value = |n: u64| {
                if width == 8 {
                    n.wrapping_mul(0x0101_0101_0101_0101)
                } else {
                    n & ((1u64 << (8 * width)) - 1)
                }
            };
            let a = &e["access"];
            ensure(
                a["len"] == width && a["write"] == true && a["phys_addr"] == symbol(var),
                || format!("{var}: {e}"),
            )?;
            ensure(a["value"] == value(n) && a["old"] == value(n - 1), || {
                format!("{var} write {n}: {a}")
            })?;
            ensure(e["engine"] == "page" && e["kind"] == "write", || {
                e.to_string()
            })?;
        }
    }
    Ok(())
}

/// Read and access watches on the `mixed` page, and the false traps of its unwatched bytes.
fn read_access_and_false_traps() -> Result<(), Failed> {
    let page = symbol("drv_mixed_page");
    // The guest (count=50) writes offset 0 and offset 2048 50 times each and reads offset 1024
    // 50 times; then it reads 0 and 2048 back once and checksums the page with 512 8-byte reads.
    let cases = [
        // watch, hits, traps, false traps
        (format!("{:#x}:w:8", page), 50, 100, 50), // a write watch: read-only page, reads don't trap
        (format!("{:#x}:r:8", page + 1024), 51, 664, 613), // a read watch: the page is a hole
        (format!("{:#x}:rw:8", page), 52, 664, 612), // an access watch
    ];
    for (watch, want_hits, want_traps, want_false) in cases {
        let (run, events) = drvisor_with_events(&[
            "run",
            "--scenario",
            "mixed",
            "--cmdline",
            "count=50",
            "--watch",
            &watch,
            "--engine",
            "page",
        ])?;
        run.expect_code(0)?;
        let got = hits(&events, &watch).len();
        ensure(got == want_hits, || {
            format!("{watch}: {got} hits, wanted {want_hits}")
        })?;
        let (t, f) = traps(&events);
        ensure((t, f) == (want_traps, want_false), || {
            format!("{watch}: traps {t} false {f}, wanted {want_traps}/{want_false}")
        })?;
    }
    Ok(())
}

/// 128 watches at once, one per 512-byte cell of `drv_range_buf` (eight share each page), plus
/// one spanning two pages. Cell k is written (k % 5) + 1 times per repetition.
fn hundred_watches_same_page_and_spanning() -> Result<(), Failed> {
    let buf = symbol("drv_range_buf");
    let watches: Vec<String> = (0..128u64)
        .map(|k| format!("{:#x}:w:512", buf + 512 * k))
        .collect();
    let straddle = format!("{:#x}:w:8", buf + 65532);
    let mut args = vec!["run", "--scenario", "ranges", "--cmdline", "count=2"];
    for w in &watches {
        args.extend(["--watch", w.as_str(), "--engine", "page"]);
    }
    args.extend(["--watch", straddle.as_str(), "--engine", "page"]);
    let (run, events) = drvisor_with_events(&args)?;
    run.expect_code(0)?;
    for (k, w) in watches.iter().enumerate() {
        // Cell 127 also holds the first half of each straddling write (offset 65532).
        let want = 2 * (k % 5 + 1) + if k == 127 { 6 } else { 0 };
        let got = hits(&events, w).len();
        ensure(got == want, || {
            format!("cell {k}: {got} hits, wanted {want}")
        })?;
    }
    // Each straddling write is one instruction, split by KVM into one exit per page: one hit.
    let got = hits(&events, &straddle);
    ensure(got.len() == 6, || {
        format!("straddle: {} hits, wanted 6", got.len())
    })?;
    ensure(
        got.iter()
            .all(|e| e["access"]["phys_addr"] == buf + 65532 && e["access"]["len"] == 4),
        || format!("straddle pieces: {got:?}"),
    )
}

/// Guest memory after a run with watches is byte-identical to a run without them.
fn memory_identical_with_and_without_watches() -> Result<(), Failed> {
    let buf = symbol("drv_range_buf");
    let with: Vec<String> = (0..17u64)
        .map(|p| format!("{:#x}:rw:100", buf + 4096 * p + 7))
        .collect();
    let mut args = vec!["run", "--scenario", "ranges", "--cmdline", "count=3"];
    let bare = drvisor(&args);
    bare.expect_code(0)?;
    for w in &with {
        args.extend(["--watch", w.as_str(), "--engine", "page"]);
    }
    let watched = drvisor(&args);
    watched.expect_code(0)?;
    ensure(
        checksum(&bare, "ranges")? == checksum(&watched, "ranges")?,
        || "checksums differ".into(),
    )?;
    let sum = |r: &Run| {
        r.guest_lines(&["scenario=ranges"])
            .iter()
            .find_map(|l| crate::common::field(l, "read_sum").map(str::to_owned))
    };
    ensure(sum(&bare) == sum(&watched) && sum(&bare).is_some(), || {
        "read sums differ: reads were not served from RAM".into()
    })?;
    let w = drvisor(&[
        "run",
        "--scenario",
        "write",
        "--watch",
        "drv_watch_u16",
        "--engine",
        "page",
    ]);
    w.expect_code(0)?;
    ensure(
        checksum(&w, "write")? == checksum(&drvisor(&["run", "--scenario", "write"]), "write")?,
        || "write checksums differ".into(),
    )
}

/// `--show-plan` says which engine carries each watch, and which pages it traps how.
fn show_plan_names_the_engine(hw: bool) -> Result<(), Failed> {
    let run = drvisor(&[
        "run",
        "--scenario",
        "write",
        "--cmdline",
        "count=2",
        "--show-plan",
        "--watch",
        "drv_watch_u32",
        "--watch",
        "drv_watch_u8:r",
        "--events",
        "/dev/null",
    ]);
    run.expect_code(0)?;
    let page = symbol("drv_watch_u32") & !0xfff;
    // The read watch can only be carried by pages; the write watch by pages unless hw works here.
    ensure(run.stderr.contains("page watches (engine page):"), || {
        run.stderr.clone()
    })?;
    ensure(
        run.stderr
            .contains("drv_watch_u8:r read: armed by page protection"),
        || run.stderr.clone(),
    )?;
    ensure(run.stderr.contains(&format!("{page:#x} Absent")), || {
        run.stderr.clone()
    })?;
    let u32_paged = run
        .stderr
        .contains("drv_watch_u32 write: armed by page protection");
    ensure(u32_paged != hw, || {
        format!(
            "drv_watch_u32 on the wrong engine (hw delivered: {hw})\n{}",
            run.stderr
        )
    })
}

fn refusals() -> Result<(), Failed> {
    for (args, needle) in [
        (vec!["--watch", "phys:0x40000000:w:8"], "not all guest ram"),
        (vec!["--watch", "drv_target_0:r:1"], "executes from"),
        (
            vec![
                "--watch",
                "drv_watch_u32",
                "--engine",
                "page",
                "--vcpu",
                "0",
            ],
            "cover every vcpu",
        ),
    ] {
        refused("write", &args, needle)?;
    }
    Ok(())
}

/// A watch on a guest-virtual address the guest does not map yet (as a kernel's own addresses
/// before it sets up paging) is pending with its reason, not refused; it arms itself once the
/// guest maps the address, and from then on sees every write. `late-map` maps an alias of low
/// memory, writes `drv_watch_u8` once (a page exit, where drvisor retries), then writes 1..=N
/// through the alias.
fn a_virtual_watch_waits_for_the_guest_to_map_it() -> Result<(), Failed> {
    const N: u64 = 40;
    let alias = format!(
        "{:#x}:w:8",
        0xffff_ff80_0000_0000u64 + symbol("drv_watch_u64")
    );
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "late-map",
        "--cmdline",
        &format!("count={N}"),
        "--watch",
        "phys:drv_watch_u8",
        "--engine",
        "page",
        "--watch",
        &alias,
        "--engine",
        "page",
    ])?;
    run.expect_code(0)?;
    ensure(
        run.stderr.contains(&format!(
            "watch #2 {alias} is pending: the guest's paging is off"
        )),
        || format!("no pending warning\n{run}"),
    )?;
    let plan = |change: &str| {
        events.iter().position(|e| {
            e["event"] == "plan" && e["change"] == change && e["breakpoint"]["id"] == 2
        })
    };
    let added = plan("added").ok_or("no plan event for the watch")?;
    ensure(
        events[added]["breakpoint"]["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("pending (")),
        || format!("added as {}", events[added]["breakpoint"]),
    )?;
    let armed = plan("armed").ok_or_else(|| format!("never armed\n{run}"))?;
    let writes: Vec<(usize, u64)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "hit" && e["id"] == 2)
        .map(|(i, e)| (i, e["access"]["value"].as_u64().unwrap_or(0)))
        .collect();
    ensure(
        writes.iter().map(|w| w.1).eq(1..=N) && writes.iter().all(|w| w.0 > armed),
        || format!("wanted the writes 1..={N} after the watch armed: {writes:?}"),
    )
}

/// Runs a re-map scenario (`count` writes) with a page watch on `drv_watch_u8` (its page exits
/// are where drvisor looks again) and an `access` watch on the scenario's alias of
/// `drv_watch_u64`; returns the alias, the run and its events.
fn remap_run(
    scenario: &str,
    count: u64,
    access: &str,
) -> Result<(u64, Run, Vec<serde_json::Value>), Failed> {
    let alias = 0xffff_ff00_0000_0000u64 + (symbol("drv_watch_u64") & 0xfff);
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        scenario,
        "--cmdline",
        &format!("count={count}"),
        "--watch",
        "phys:drv_watch_u8",
        "--engine",
        "page",
        "--watch",
        &format!("{alias:#x}:{access}:8"),
        "--engine",
        "page",
    ])?;
    Ok((alias, run, events))
}

/// The guest re-maps the page under a watched virtual address (`remap`: the alias moves from
/// `drv_watch_u64`'s page to `drv_remap_page`, then the guest writes through it again). The
/// watch follows it: a `plan` event says `remapped` with the new page, and every write through
/// the alias, before and after, is a hit. Without the follow, the second half would be lost.
fn a_virtual_watch_follows_the_guest_when_it_remaps() -> Result<(), Failed> {
    const N: u64 = 30;
    let (alias, run, events) = remap_run("remap", N, "w")?;
    run.expect_code(0)?;
    let line = ["scenario=remap", &format!("writes={N}")];
    ensure(
        guest_number(&run, &line, "first")? == N && guest_number(&run, &line, "second")? == 2 * N,
        || format!("the guest's writes did not land as the scenario says\n{run}"),
    )?;
    let plan = |change: &str| {
        events.iter().position(|e| {
            e["event"] == "plan" && e["change"] == change && e["breakpoint"]["id"] == 2
        })
    };
    let armed = plan("armed").ok_or_else(|| format!("never armed\n{run}"))?;
    let moved = plan("remapped").ok_or_else(|| format!("no remapped event\n{run}"))?;
    let pages = |at: usize| events[at]["breakpoint"]["pages"].clone();
    let (old, new) = (symbol("drv_watch_u64") & !0xfff, symbol("drv_remap_page"));
    ensure(
        pages(armed) == serde_json::json!([old]) && pages(moved) == serde_json::json!([new]),
        || {
            format!(
                "pages {} then {}, wanted [{old:#x}] then [{new:#x}]",
                pages(armed),
                pages(moved)
            )
        },
    )?;
    let writes: Vec<(usize, u64)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "hit" && e["id"] == 2)
        .map(|(i, e)| (i, e["access"]["value"].as_u64().unwrap_or(0)))
        .collect();
    ensure(
        writes.iter().map(|w| w.1).eq(1..=2 * N)
            && writes
                .iter()
                .all(|&(at, value)| (at > moved) == (value > N)),
        || {
            format!(
                "wanted the writes 1..={N}, then the move, then {}..={}: {writes:?}",
                N + 1,
                2 * N
            )
        },
    )?;
    ensure(
        run.stderr.contains(&format!(
            "#2 {alias:#x}:w:8 (write watch, 8 bytes): page engine on 1 page, armed, {} hits",
            2 * N
        )),
        || {
            format!(
                "the summary does not show the watch's {} hits\n{run}",
                2 * N
            )
        },
    )
}

/// The guest re-maps a watched virtual address onto a page of its code (`remap-to-code`), where
/// an access watch cannot go (it would hide the page from instruction fetch). The watch stays
/// where it was, a `plan` event says `left-behind`, and its state says why.
fn a_virtual_watch_the_guest_remaps_onto_code_is_left_behind() -> Result<(), Failed> {
    const N: u64 = 5;
    let (_, run, events) = remap_run("remap-to-code", N, "rw")?;
    run.expect_code(0)?;
    let left = events
        .iter()
        .find(|e| {
            e["event"] == "plan" && e["change"] == "left-behind" && e["breakpoint"]["id"] == 2
        })
        .ok_or_else(|| format!("no left-behind event\n{run}"))?;
    let state = left["breakpoint"]["state"].as_str().unwrap_or("");
    ensure(
        state.starts_with("armed, left behind (the guest maps its bytes at")
            && state.contains("the guest executes from"),
        || format!("state {state:?}"),
    )?;
    ensure(
        !events
            .iter()
            .any(|e| e["event"] == "plan" && e["change"] == "remapped"),
        || "a watch moved onto code".to_string(),
    )?;
    let hits = events
        .iter()
        .filter(|e| e["event"] == "hit" && e["id"] == 2)
        .count() as u64;
    ensure(hits == N, || {
        format!("{hits} hits, wanted the {N} writes before the re-map")
    })
}

/// `auto` picks what this host delivers: the page engine here, where hardware data
/// watchpoints never fire.
fn auto_routes_by_probe(hw: bool) -> Result<(), Failed> {
    let (run, events) = drvisor_with_events(&[
        "run",
        "--scenario",
        "write",
        "--cmdline",
        "count=4",
        "--watch",
        "drv_watch_u32",
    ])?;
    run.expect_code(0)?;
    let engine = if hw { "hw" } else { "page" };
    ensure(
        events
            .iter()
            .filter(|e| e["event"] == "hit")
            .all(|e| e["engine"] == engine)
            && !events.is_empty(),
        || format!("wanted every hit on the {engine} engine: {events:?}"),
    )?;
    ensure(
        guest_number(&run, &["var=drv_watch_u32"], "writes")? == 4,
        || "guest count".into(),
    )
}

fn test_vm(
    caps: Option<drvisor::debug::DebugCaps>,
    memslot_limit: Option<usize>,
) -> Result<Vm, Failed> {
    let mut config = VmConfig::new(guest_image::kernel(), "scenario=write");
    config.debug_caps = caps;
    config.memslot_limit = memslot_limit;
    Ok(Vm::try_from(config)?)
}

fn request(place: Place, len: u64, engine: EngineChoice) -> WatchRequest {
    WatchRequest {
        place,
        access: Access::Write,
        len,
        engine,
        scope: Scope::Vm,
        label: "w".into(),
        on_hit: drvisor::debug::always(drvisor_api::HitAction::Continue),
    }
}

/// The hardware route, with a faked probe answer (a VMX/SVM host), and its fallback to pages
/// when no slot is free.
fn hw_route_with_faked_probe() -> Result<(), Failed> {
    let vm = test_vm(Some(drvisor::debug::DebugCaps::vmx_like()), None)?;
    let (ctl, pages) = (vm.debug(), vm.watch());
    let u32_at = symbol("drv_watch_u32");
    let (id, engine) = arm_watch(
        request(Place::Virtual(u32_at), 4, EngineChoice::Auto),
        ctl,
        pages,
    )?;
    ensure(engine == Engine::Hw, || format!("auto chose {engine}"))?;
    let plan = ctl.plan();
    ensure(!plan.host_states[&id].armed.is_empty(), || {
        "not armed in a slot".into()
    })?;
    // Fill the other three slots: auto must fall back to the page engine, and say so.
    for t in 1..=3 {
        ctl.add(drvisor::debug::HostRequest {
            spec: drvisor_debug::BreakSpec::exec(symbol(&format!("drv_target_{t}")))?,
            scope: Scope::Vm,
            label: format!("t{t}"),
            on_hit: drvisor::debug::always(drvisor_api::HitAction::Continue),
        })?;
    }
    let (_, engine) = arm_watch(
        request(
            Place::Virtual(symbol("drv_watch_u64")),
            8,
            EngineChoice::Auto,
        ),
        ctl,
        pages,
    )?;
    ensure(engine == Engine::Page, || {
        format!("with no free slot auto chose {engine}")
    })?;
    let err = arm_watch(
        request(Place::Virtual(symbol("drv_watch_u16")), 2, EngineChoice::Hw),
        ctl,
        pages,
    );
    ensure(
        err.as_ref()
            .is_err_and(|e| e.to_string().contains("no hardware slot is free")),
        || format!("{:?}", err.err()),
    )?;
    // Unaligned or long ranges never fit a slot.
    let (_, engine) = arm_watch(
        request(Place::Virtual(u32_at + 1), 4, EngineChoice::Auto),
        ctl,
        pages,
    )?;
    ensure(engine == Engine::Page, || "unaligned went to hw".into())
}

/// Removing the last watch restores the original memslot layout, numbers included.
fn removal_restores_layout() -> Result<(), Failed> {
    let vm = test_vm(None, None)?;
    let pages = vm.watch();
    let before = pages.layout().slots().to_vec();
    ensure(before.len() == 1, || format!("{before:?}"))?;
    let a = pages.add(drvisor::watch::PageWatchRequest {
        range: drvisor::watch::WatchRange::Physical {
            gpa: symbol("drv_watch_u8"),
            len: 1,
        },
        access: Access::Write,
        label: "a".into(),
        on_hit: drvisor::debug::always(drvisor_api::HitAction::Continue),
    })?;
    let b = pages.add(drvisor::watch::PageWatchRequest {
        range: drvisor::watch::WatchRange::Physical {
            gpa: symbol("drv_range_buf") + 4000,
            len: 300,
        },
        access: Access::Read,
        label: "b".into(),
        on_hit: drvisor::debug::always(drvisor_api::HitAction::Continue),
    })?;
    // RAM below the u8's page, its read-only page, a hole over the read-watched pages, the rest.
    ensure(pages.layout().slots().len() == 3, || {
        format!("{:?}", pages.layout().slots())
    })?;
    ensure(
        pages.is_hole(symbol("drv_range_buf")) && pages.is_hole(symbol("drv_range_buf") + 4096),
        || "no hole".into(),
    )?;
    pages.remove(a)?;
    pages.remove(b)?;
    ensure(pages.layout().slots() == before.as_slice(), || {
        format!("{:?} != {before:?}", pages.layout().slots())
    })
}

/// Past the memslot limit, a watch is refused with the numbers.
fn too_many_memslots() -> Result<(), Failed> {
    let vm = test_vm(None, Some(4))?;
    let pages = vm.watch();
    let watch = |gpa: u64| drvisor::watch::PageWatchRequest {
        range: drvisor::watch::WatchRange::Physical { gpa, len: 8 },
        access: Access::Write,
        label: format!("{gpa:#x}"),
        on_hit: drvisor::debug::always(drvisor_api::HitAction::Continue),
    };
    pages.add(watch(0x30_0000))?; // 3 memslots
    let err = pages
        .add(watch(0x50_0000))
        .err()
        .ok_or("a 5-memslot layout was accepted")?;
    ensure(
        err.to_string().contains('5') && err.to_string().contains('4'),
        || err.to_string(),
    )?;
    ensure(pages.layout().slots().len() == 3, || {
        "the refused watch changed the layout".into()
    })
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let hw = ctx.probe.delivers(Mechanism::HostWriteWatchpoint, 0);
    vec![
        Trial::test("page::write_widths", write_widths),
        Trial::test(
            "page::read_access_and_false_traps",
            read_access_and_false_traps,
        ),
        Trial::test(
            "page::hundred_watches_same_page_and_spanning",
            hundred_watches_same_page_and_spanning,
        ),
        Trial::test(
            "page::memory_identical_with_and_without_watches",
            memory_identical_with_and_without_watches,
        ),
        Trial::test("page::refusals", refusals),
        Trial::test(
            "page::a_virtual_watch_waits_for_the_guest_to_map_it",
            a_virtual_watch_waits_for_the_guest_to_map_it,
        ),
        Trial::test(
            "page::a_virtual_watch_follows_the_guest_when_it_remaps",
            a_virtual_watch_follows_the_guest_when_it_remaps,
        ),
        Trial::test(
            "page::a_virtual_watch_the_guest_remaps_onto_code_is_left_behind",
            a_virtual_watch_the_guest_remaps_onto_code_is_left_behind,
        ),
        Trial::test("page::show_plan_names_the_engine", move || {
            show_plan_names_the_engine(hw)
        }),
        Trial::test("page::auto_routes_by_probe", move || {
            auto_routes_by_probe(hw)
        }),
        Trial::test("page::hw_route_with_faked_probe", hw_route_with_faked_probe),
        Trial::test("page::removal_restores_layout", removal_restores_layout),
        Trial::test("page::too_many_memslots", too_many_memslots),
        Trial::test("page::evict_and_migrate_page_phase", || {
            evict_and_migrate(Phases::Page)
        }),
        if hw {
            Trial::test("page::evict_and_migrate_hardware_phases", || {
                evict_and_migrate(Phases::Hardware)
            })
        } else {
            skipped(
                "page::evict_and_migrate_hardware_phases",
                "hardware data watchpoints never fire on this host (probe), so phases A and C \
                 (the watch in its slot) cannot be shown; the page phase runs in \
                 page::evict_and_migrate_page_phase, and this one on VMX/SVM \
                 (tests/nested-svm/run-e2e.sh)",
            )
        },
    ]
}

/// Evict and migrate, with a faked probe answer (a VMX/SVM host: hardware data watchpoints,
/// guest slots carried physically). Under guest-first, the guest's `evict` scenario takes all
/// four slots in its phase B: the host's hardware watch on drv_watch_u32 must move to the page
/// engine for that phase (its hits keep its id), and back to its slot for phase C.
/// Which phases of the evict scenario a trial checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phases {
    /// The moves, and phase B: the page shadow sees every write under the watch's id.
    Page,
    /// Phases A and C: the hardware slot sees every write (hosts whose data watchpoints fire).
    Hardware,
}

fn evict_and_migrate(phases: Phases) -> Result<(), Failed> {
    use drvisor::debug::{DebugCaps, HitContext};
    use std::sync::{Arc, Mutex};

    let caps = DebugCaps {
        data_watchpoints: true,
        guest_breakpoints_native: false,
        gd_trap: false,
        ..DebugCaps::from_probe(&drvisor::probe::run_for_routing(&kvm_ioctls::Kvm::new()?)?)
    };
    let count = 20u64;
    let mut config = VmConfig::new(
        guest_image::kernel(),
        format!("scenario=evict count={count} ncpus=1"),
    );
    config.debug_caps = Some(caps);
    config.policy = drvisor_debug::Policy::GuestFirst;
    let vm = Vm::try_from(config)?;
    let hits: Arc<Mutex<Vec<HitContext>>> = Arc::default();
    let record = hits.clone();
    let (id, engine) = arm_watch(
        WatchRequest {
            on_hit: Arc::new(move |h: &HitContext| {
                record.lock().unwrap().push(h.clone());
                drvisor_api::HitAction::Continue
            }),
            ..request(
                Place::Virtual(symbol("drv_watch_u32")),
                4,
                EngineChoice::Auto,
            )
        },
        vm.debug(),
        vm.watch(),
    )?;
    ensure(engine == Engine::Hw, || format!("auto chose {engine}"))?;
    // Watch the moves: (evicted in the plan, page shadow armed), after every plan change.
    let moves: Arc<Mutex<Vec<(bool, bool)>>> = Arc::default();
    let (m, pages) = (moves.clone(), Arc::downgrade(vm.watch()));
    vm.debug().on_change(Arc::new(move |plan| {
        let evicted = plan.host_state(id).is_some_and(|s| !s.pending.is_empty());
        let shadow = pages
            .upgrade()
            .and_then(|p| p.migrations.shadow_of(id))
            .is_some();
        m.lock().unwrap().push((evicted, shadow));
    }));
    let pages = vm.watch().clone();
    let outcome = vm.run()?;
    ensure(outcome.exit_code() == 0, || format!("{outcome}"))?;

    let moves = moves.lock().unwrap().clone();
    ensure(moves.contains(&(true, true)), || {
        format!("never moved to the page engine: {moves:?}")
    })?;
    ensure(moves.last() == Some(&(false, false)), || {
        format!("never moved back: {moves:?}")
    })?;
    ensure(
        moves.iter().all(|(evicted, shadow)| evicted == shadow),
        || format!("evicted without a shadow: {moves:?}"),
    )?;
    ensure(pages.states().is_empty(), || {
        "the shadow outlived the eviction".into()
    })?;

    let hits = hits.lock().unwrap().clone();
    if phases == Phases::Hardware {
        let in_slot = hits.iter().filter(|h| h.engine == Engine::Hw).count() as u64;
        return ensure(in_slot == 2 * count, || {
            format!(
                "{in_slot} hits from the hardware slot, wanted {}",
                2 * count
            )
        });
    }
    let paged: Vec<&HitContext> = hits.iter().filter(|h| h.engine == Engine::Page).collect();
    ensure(
        paged.len() as u64 == count && paged.iter().all(|h| h.id == id),
        || {
            format!(
                "{} page hits (wanted {count}, all under id {})",
                paged.len(),
                id.0
            )
        },
    )?;
    // Phase B wrote 1001..=1000+count: exactly those, in order.
    for (i, h) in paged.iter().enumerate() {
        let value = h.access.as_ref().map(|a| a.value);
        ensure(value == Some(1001 + i as u64), || {
            format!("page hit {i}: {value:?}")
        })?;
    }
    Ok(())
}
