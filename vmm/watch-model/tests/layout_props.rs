//! Property tests of the planner, the diff and the matcher against a page-by-page and
//! byte-by-byte reference that knows nothing about carving or numbering.
//!
//! The reference: a page is trapped exactly when some watch holds one of its bytes; it is a
//! hole when one of those watches reports reads, and read-only otherwise. A watch is hit by an
//! access when they share a byte and the watch reports that kind of access.

use std::collections::{BTreeMap, BTreeSet};

use drvisor_watch::{
    diff, plan_layout, Access, Layout, LayoutError, Memslot, PageMode, RamRegion, SlotOp, Watch,
    WatchId, PAGE_SIZE,
};
use proptest::prelude::*;
use proptest::sample::Index;

const P: u64 = PAGE_SIZE;
/// More than any generated layout needs, so only the dedicated property meets the limit.
const MAX: usize = 10_000;

/// 1-3 regions of 1-48 pages, 0-3 pages apart (0: touching), given in shuffled order.
fn ram() -> impl Strategy<Value = Vec<RamRegion>> {
    (0u64..16, prop::collection::vec((0u64..4, 1u64..48), 1..=3))
        .prop_map(|(base, shapes)| {
            let mut next = base * P;
            shapes
                .into_iter()
                .map(|(gap, pages)| {
                    let gpa = next + gap * P;
                    next = gpa + pages * P;
                    RamRegion::new(gpa, pages * P).expect("strategy builds valid regions")
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::Write),
        Just(Access::Read),
        Just(Access::ReadWrite)
    ]
}

/// How to place one watch inside RAM: which region, where, how long. Short watches crowd onto
/// a few "hot" pages so pages are shared; long ones span pages.
#[derive(Clone, Debug)]
struct Placement {
    region: Index,
    hot: bool,
    at: Index,
    len: u64,
    access: Access,
}

fn placement() -> impl Strategy<Value = Placement> {
    let len = prop_oneof![3 => 1u64..16, 1 => 1u64..10_000];
    (
        any::<Index>(),
        prop::bool::weighted(0.3),
        any::<Index>(),
        len,
        access(),
    )
        .prop_map(|(region, hot, at, len, access)| Placement {
            region,
            hot,
            at,
            len,
            access,
        })
}

/// Watches with ids 0.. placed inside `ram`, cut at the end of their region.
fn place(ram: &[RamRegion], placements: &[Placement]) -> Vec<Watch> {
    placements
        .iter()
        .zip(0u32..)
        .map(|(p, id)| {
            let region = ram[p.region.index(ram.len())];
            // Hot watches start in the first 2 pages of their region.
            let span = if p.hot {
                region.size().min(2 * P)
            } else {
                region.size()
            };
            let gpa = region.gpa() + p.at.index(span as usize) as u64;
            let len = p.len.min(region.end() - gpa);
            Watch::new(WatchId(id), gpa, len, p.access).expect("placed inside RAM")
        })
        .collect()
}

fn ram_and_watches() -> impl Strategy<Value = (Vec<RamRegion>, Vec<Watch>)> {
    (ram(), prop::collection::vec(placement(), 0..150)).prop_map(|(ram, placements)| {
        let watches = place(&ram, &placements);
        (ram, watches)
    })
}

/// Every page from 0 to two pages past the highest RAM byte.
fn pages(ram: &[RamRegion]) -> impl Iterator<Item = u64> {
    let top = ram.iter().map(RamRegion::end).max().unwrap_or(0) + 2 * P;
    (0..top / P).map(|n| n * P)
}

/// The reference trap of a page: its mode and watch ids, or `None`.
fn reference_trap(watches: &[Watch], page: u64) -> Option<(PageMode, Vec<WatchId>)> {
    let on_page: Vec<&Watch> = watches
        .iter()
        .filter(|w| w.gpa() < page + P && page < w.end())
        .collect();
    if on_page.is_empty() {
        return None;
    }
    let mode = if on_page.iter().any(|w| w.access() != Access::Write) {
        PageMode::Absent
    } else {
        PageMode::ReadOnly
    };
    let mut ids: Vec<WatchId> = on_page.iter().map(|w| w.id()).collect();
    ids.sort();
    Some((mode, ids))
}

fn check_pages(ram: &[RamRegion], watches: &[Watch], layout: &Layout) -> Result<(), TestCaseError> {
    let mut trapped = 0;
    for page in pages(ram) {
        let in_ram = ram.iter().any(|r| r.contains(page));
        let holders: Vec<&Memslot> = layout.slots().iter().filter(|s| s.contains(page)).collect();
        let expect = reference_trap(watches, page);
        let got = layout
            .traps()
            .get(&page)
            .map(|t| (t.mode, t.watches.clone()));
        prop_assert_eq!(&got, &expect, "trap on page {:#x}", page);
        prop_assert_eq!(
            layout.is_trapped(page + 7),
            expect.as_ref().map(|(mode, _)| *mode)
        );
        trapped += usize::from(got.is_some());
        match (in_ram, expect.map(|(mode, _)| mode)) {
            (false, mode) => {
                prop_assert!(
                    holders.is_empty() && mode.is_none(),
                    "non-RAM page {:#x}",
                    page
                )
            }
            (true, Some(PageMode::Absent)) => {
                prop_assert!(holders.is_empty(), "hole {:#x} is in {:?}", page, holders)
            }
            (true, mode) => {
                prop_assert_eq!(holders.len(), 1, "RAM page {:#x}", page);
                prop_assert_eq!(
                    holders[0].readonly,
                    mode == Some(PageMode::ReadOnly),
                    "page {:#x}",
                    page
                );
            }
        }
    }
    prop_assert_eq!(
        layout.traps().len(),
        trapped,
        "traps outside the scanned pages"
    );
    Ok(())
}

fn check_slots(ram: &[RamRegion], layout: &Layout, max: usize) -> Result<(), TestCaseError> {
    let slots = layout.slots();
    let numbers: BTreeSet<u32> = slots.iter().map(|s| s.slot).collect();
    prop_assert_eq!(numbers.len(), slots.len(), "duplicate slot numbers");
    prop_assert!(slots.iter().all(|s| (s.slot as usize) < max));
    for s in slots {
        let region = ram[s.region];
        prop_assert!(s.size > 0 && s.gpa % P == 0 && s.size % P == 0, "{}", s);
        prop_assert_eq!(region.gpa() + s.region_offset, s.gpa);
        prop_assert!(s.end() <= region.end(), "{} leaves region {}", s, region);
    }
    for pair in slots.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        prop_assert!(a.end() <= b.gpa, "{} and {} overlap or are unsorted", a, b);
        // As few slots as the traps allow: touching slots of one region differ in mode.
        if a.end() == b.gpa && a.region == b.region {
            prop_assert_ne!(a.readonly, b.readonly, "{} and {} should be one slot", a, b);
        }
    }
    Ok(())
}

/// Applies `ops` to `installed` as KVM would, refusing what KVM refuses.
fn apply(installed: &mut BTreeMap<u32, Memslot>, ops: &[SlotOp]) -> Result<(), TestCaseError> {
    for op in ops {
        match op {
            SlotOp::Delete { slot } => {
                prop_assert!(
                    installed.remove(slot).is_some(),
                    "delete of absent slot {}",
                    slot
                );
            }
            SlotOp::Create(new) => {
                prop_assert!(
                    !installed.contains_key(&new.slot),
                    "slot {} in use",
                    new.slot
                );
                for old in installed.values() {
                    prop_assert!(
                        old.end() <= new.gpa || new.end() <= old.gpa,
                        "{} overlaps {}",
                        new,
                        old
                    );
                }
                installed.insert(new.slot, *new);
            }
        }
    }
    Ok(())
}

fn by_number(layout: &Layout) -> BTreeMap<u32, Memslot> {
    layout.slots().iter().map(|s| (s.slot, *s)).collect()
}

fn shapes(layout: &Layout) -> Vec<(u64, u64, bool)> {
    layout
        .slots()
        .iter()
        .map(|s| (s.gpa, s.size, s.readonly))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn layouts_cover_ram_exactly((ram, watches) in ram_and_watches()) {
        let layout = plan_layout(&ram, &watches, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_pages(&ram, &watches, &layout)?;
        check_slots(&ram, &layout, MAX)?;
    }

    #[test]
    fn replans_are_stable_and_diffs_are_exact(
        (ram, first) in ram_and_watches(),
        placements in prop::collection::vec(placement(), 0..150),
        keep in prop::collection::vec(any::<bool>(), 150),
    ) {
        // The second set keeps some of the first and adds new ones.
        let mut second: Vec<Watch> = first.iter().zip(&keep).filter(|(_, k)| **k).map(|(w, _)| *w).collect();
        let offset = first.len() as u32;
        second.extend(place(&ram, &placements).into_iter().map(|w| {
            Watch::new(WatchId(w.id().0 + offset), w.gpa(), w.len(), w.access()).expect("valid")
        }));
        let a = plan_layout(&ram, &first, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let b = a.replan(&second, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_pages(&ram, &second, &b)?;
        check_slots(&ram, &b, MAX)?;

        // The memslots depend on RAM and watches only, not on history.
        let fresh = plan_layout(&ram, &second, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(shapes(&b), shapes(&fresh));

        // Every memslot that did not change kept its number.
        for new in b.slots() {
            if let Some(old) = a.slots().iter().find(|o| (o.gpa, o.size, o.readonly) == (new.gpa, new.size, new.readonly)) {
                prop_assert_eq!(old.slot, new.slot, "{} was renumbered", new);
            }
        }

        // Deletes first; unchanged slots untouched; applying turns a into b.
        let ops = diff(&a, &b);
        let first_create = ops.iter().position(|op| matches!(op, SlotOp::Create(_))).unwrap_or(ops.len());
        prop_assert!(ops[first_create..].iter().all(|op| matches!(op, SlotOp::Create(_))));
        let before = by_number(&a);
        let after = by_number(&b);
        for op in &ops {
            let number = match op {
                SlotOp::Delete { slot } => *slot,
                SlotOp::Create(m) => m.slot,
            };
            prop_assert!(before.get(&number) != after.get(&number), "{:?} touches an unchanged slot", op);
        }
        let mut installed = before.clone();
        apply(&mut installed, &ops)?;
        prop_assert_eq!(installed, after);
    }

    #[test]
    fn removing_every_watch_restores_the_plain_layout((ram, watches) in ram_and_watches()) {
        let plain = plan_layout(&ram, &[], MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let armed = plain.replan(&watches, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let disarmed = armed.replan(&[], MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&disarmed, &plain);
        prop_assert!(diff(&plain, &disarmed).is_empty());
        prop_assert_eq!(plain.slots().len(), ram.len());
    }

    #[test]
    fn matching_agrees_with_byte_overlap(
        (ram, watches) in ram_and_watches(),
        accesses in prop::collection::vec((any::<Index>(), prop_oneof![4 => 1u64..=16, 1 => 1u64..3 * P], any::<bool>()), 1..64),
    ) {
        let layout = plan_layout(&ram, &watches, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let top = pages(&ram).last().unwrap_or(0) + P;
        for (at, len, is_write) in accesses {
            let gpa = at.index(top as usize) as u64;
            let end = gpa + len;
            let mut hits: Vec<WatchId> = watches
                .iter()
                .filter(|w| w.gpa() < end && gpa < w.end())
                .filter(|w| match w.access() {
                    Access::Write => is_write,
                    Access::Read => !is_write,
                    Access::ReadWrite => true,
                })
                .map(|w| w.id())
                .collect();
            hits.sort();
            let first_page = gpa / P * P;
            let touched = (first_page..end).step_by(P as usize).any(|page| reference_trap(&watches, page).is_some());
            let got = layout.match_access(gpa, len, is_write);
            prop_assert_eq!(&got.hits, &hits, "{:#x}+{} write={}", gpa, len, is_write);
            prop_assert_eq!(got.false_trap, touched && hits.is_empty(), "{:#x}+{}", gpa, len);
            prop_assert_eq!(layout.touches_trap(gpa, len), touched, "{:#x}+{}", gpa, len);
        }
    }

    #[test]
    fn a_watch_is_refused_exactly_when_a_byte_is_not_ram(
        ram in ram(),
        at in any::<Index>(),
        len in 1u64..3 * P,
        access in access(),
    ) {
        let top = pages(&ram).last().unwrap_or(0) + P;
        let gpa = at.index(top as usize) as u64;
        let watch = Watch::new(WatchId(9), gpa, len, access).expect("valid");
        let missing = (gpa..gpa + len).find(|byte| !ram.iter().any(|r| r.contains(*byte)));
        match (plan_layout(&ram, &[watch], MAX), missing) {
            (Ok(_), None) => {}
            (Err(LayoutError::OutsideRam { id, missing: got, .. }), Some(byte)) => {
                prop_assert_eq!((id, got), (WatchId(9), byte));
            }
            (other, missing) => prop_assert!(false, "{:?} but first non-RAM byte {:?}", other, missing),
        }
    }

    #[test]
    fn the_slot_limit_is_exact((ram, watches) in ram_and_watches()) {
        let layout = plan_layout(&ram, &watches, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let needed = layout.slots().len();
        prop_assert!(plan_layout(&ram, &watches, needed).is_ok());
        if needed > 0 {
            prop_assert_eq!(
                plan_layout(&ram, &watches, needed - 1),
                Err(LayoutError::TooManyMemslots { needed, max: needed - 1 })
            );
        }
    }
}
