//! The layout the planner produces for each situation the VMM meets, as tables of
//! `(gpa, size, readonly)` memslots and `(page, mode, watches)` traps.

use drvisor_watch::{
    diff, plan_layout, Access, Layout, LayoutError, PageMode, RamRegion, SlotOp, Watch, WatchId,
};

const P: u64 = 0x1000;
const MIB: u64 = 1 << 20;
const MAX: usize = 64;

use Access::{Read, ReadWrite, Write};
use PageMode::{Absent, ReadOnly};

fn ram(regions: &[(u64, u64)]) -> Vec<RamRegion> {
    regions
        .iter()
        .map(|&(gpa, size)| RamRegion::new(gpa, size).expect("valid region"))
        .collect()
}

fn watches(list: &[(u32, u64, u64, Access)]) -> Vec<Watch> {
    list.iter()
        .map(|&(id, gpa, len, access)| {
            Watch::new(WatchId(id), gpa, len, access).expect("valid watch")
        })
        .collect()
}

fn slots(layout: &Layout) -> Vec<(u64, u64, bool)> {
    layout
        .slots()
        .iter()
        .map(|s| (s.gpa, s.size, s.readonly))
        .collect()
}

fn traps(layout: &Layout) -> Vec<(u64, PageMode, Vec<u32>)> {
    layout
        .traps()
        .iter()
        .map(|(page, trap)| {
            (
                *page,
                trap.mode,
                trap.watches.iter().map(|id| id.0).collect(),
            )
        })
        .collect()
}

type Traps = &'static [(u64, PageMode, &'static [u32])];

struct Case {
    name: &'static str,
    ram: &'static [(u64, u64)],
    watches: &'static [(u32, u64, u64, Access)],
    slots: &'static [(u64, u64, bool)],
    traps: Traps,
}

const ONE_MIB: &[(u64, u64)] = &[(0, MIB)];

const CASES: &[Case] = &[
    Case {
        name: "no watches: one slot per region",
        ram: &[(0, MIB), (4 * MIB, 2 * MIB)],
        watches: &[],
        slots: &[(0, MIB, false), (4 * MIB, 2 * MIB, false)],
        traps: &[],
    },
    Case {
        name: "a write watch in the middle: RW, RO, RW",
        ram: ONE_MIB,
        watches: &[(1, 0x5010, 8, Write)],
        slots: &[
            (0, 5 * P, false),
            (5 * P, P, true),
            (6 * P, MIB - 6 * P, false),
        ],
        traps: &[(5 * P, ReadOnly, &[1])],
    },
    Case {
        name: "a watch on the first page",
        ram: ONE_MIB,
        watches: &[(1, 0, 1, Write)],
        slots: &[(0, P, true), (P, MIB - P, false)],
        traps: &[(0, ReadOnly, &[1])],
    },
    Case {
        name: "a watch on the last page",
        ram: ONE_MIB,
        watches: &[(1, MIB - 1, 1, Write)],
        slots: &[(0, MIB - P, false), (MIB - P, P, true)],
        traps: &[(MIB - P, ReadOnly, &[1])],
    },
    Case {
        name: "a read watch leaves a hole",
        ram: ONE_MIB,
        watches: &[(1, 0x5010, 8, Read)],
        slots: &[(0, 5 * P, false), (6 * P, MIB - 6 * P, false)],
        traps: &[(5 * P, Absent, &[1])],
    },
    Case {
        name: "a read/write watch leaves a hole",
        ram: ONE_MIB,
        watches: &[(1, 0x5010, 8, ReadWrite)],
        slots: &[(0, 5 * P, false), (6 * P, MIB - 6 * P, false)],
        traps: &[(5 * P, Absent, &[1])],
    },
    Case {
        name: "write and read on one page: a hole",
        ram: ONE_MIB,
        watches: &[(1, 0x5010, 8, Write), (2, 0x5f00, 4, Read)],
        slots: &[(0, 5 * P, false), (6 * P, MIB - 6 * P, false)],
        traps: &[(5 * P, Absent, &[1, 2])],
    },
    Case {
        name: "two watches on one page share one trap",
        ram: ONE_MIB,
        watches: &[(2, 0x5f00, 4, Write), (1, 0x5010, 8, Write)],
        slots: &[
            (0, 5 * P, false),
            (5 * P, P, true),
            (6 * P, MIB - 6 * P, false),
        ],
        traps: &[(5 * P, ReadOnly, &[1, 2])],
    },
    Case {
        name: "a watch spanning two pages traps both, merged into one slot",
        ram: ONE_MIB,
        watches: &[(1, 0x5ffc, 8, Write)],
        slots: &[
            (0, 5 * P, false),
            (5 * P, 2 * P, true),
            (7 * P, MIB - 7 * P, false),
        ],
        traps: &[(5 * P, ReadOnly, &[1]), (6 * P, ReadOnly, &[1])],
    },
    Case {
        name: "adjacent write-watched pages merge",
        ram: ONE_MIB,
        watches: &[
            (1, 0x5000, 4, Write),
            (2, 0x6000, 4, Write),
            (3, 0x7abc, 1, Write),
        ],
        slots: &[
            (0, 5 * P, false),
            (5 * P, 3 * P, true),
            (8 * P, MIB - 8 * P, false),
        ],
        traps: &[
            (5 * P, ReadOnly, &[1]),
            (6 * P, ReadOnly, &[2]),
            (7 * P, ReadOnly, &[3]),
        ],
    },
    Case {
        name: "adjacent holes make one hole",
        ram: ONE_MIB,
        watches: &[(1, 0x5000, 4, Read), (2, 0x6000, 4, ReadWrite)],
        slots: &[(0, 5 * P, false), (7 * P, MIB - 7 * P, false)],
        traps: &[(5 * P, Absent, &[1]), (6 * P, Absent, &[2])],
    },
    Case {
        name: "a hole between read-only pages splits them",
        ram: ONE_MIB,
        watches: &[
            (1, 0x5000, 4, Write),
            (2, 0x6000, 4, Read),
            (3, 0x7000, 4, Write),
        ],
        slots: &[
            (0, 5 * P, false),
            (5 * P, P, true),
            (7 * P, P, true),
            (8 * P, MIB - 8 * P, false),
        ],
        traps: &[
            (5 * P, ReadOnly, &[1]),
            (6 * P, Absent, &[2]),
            (7 * P, ReadOnly, &[3]),
        ],
    },
    Case {
        name: "a long write watch becomes one read-only slot",
        ram: ONE_MIB,
        watches: &[(1, 0x5800, 0x2000, Write)],
        slots: &[
            (0, 5 * P, false),
            (5 * P, 3 * P, true),
            (8 * P, MIB - 8 * P, false),
        ],
        traps: &[
            (5 * P, ReadOnly, &[1]),
            (6 * P, ReadOnly, &[1]),
            (7 * P, ReadOnly, &[1]),
        ],
    },
    Case {
        name: "the whole of a one-page RAM read-watched: no slot at all",
        ram: &[(0, P)],
        watches: &[(1, 0, 8, Read)],
        slots: &[],
        traps: &[(0, Absent, &[1])],
    },
    Case {
        name: "a watch across two touching regions: a slot per region",
        ram: &[(0, MIB), (MIB, MIB)],
        watches: &[(1, MIB - 4, 8, Write)],
        slots: &[
            (0, MIB - P, false),
            (MIB - P, P, true),
            (MIB, P, true),
            (MIB + P, MIB - P, false),
        ],
        traps: &[(MIB - P, ReadOnly, &[1]), (MIB, ReadOnly, &[1])],
    },
    Case {
        name: "regions given out of order come out by address",
        ram: &[(4 * MIB, MIB), (0, MIB)],
        watches: &[(1, 4 * MIB, 1, Read)],
        slots: &[(0, MIB, false), (4 * MIB + P, MIB - P, false)],
        traps: &[(4 * MIB, Absent, &[1])],
    },
];

#[test]
fn layouts() {
    for case in CASES {
        let layout = plan_layout(&ram(case.ram), &watches(case.watches), MAX)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(slots(&layout), case.slots, "{}: slots", case.name);
        let expect: Vec<_> = case
            .traps
            .iter()
            .map(|(page, mode, ids)| (*page, *mode, ids.to_vec()))
            .collect();
        assert_eq!(traps(&layout), expect, "{}: traps", case.name);
        // A fresh plan numbers its slots 0, 1, 2... by address.
        let numbers: Vec<u32> = layout.slots().iter().map(|s| s.slot).collect();
        assert_eq!(
            numbers,
            (0..numbers.len() as u32).collect::<Vec<_>>(),
            "{}",
            case.name
        );
    }
}

#[test]
fn slots_say_where_their_memory_is() {
    let regions = ram(&[(4 * MIB, MIB), (0, MIB)]);
    let layout =
        plan_layout(&regions, &watches(&[(1, 4 * MIB + 0x3000, 1, Write)]), MAX).expect("fits");
    let places: Vec<_> = layout
        .slots()
        .iter()
        .map(|s| (s.gpa, s.region, s.region_offset))
        .collect();
    assert_eq!(
        places,
        [
            (0, 1, 0),
            (4 * MIB, 0, 0),
            (4 * MIB + 0x3000, 0, 0x3000),
            (4 * MIB + 0x4000, 0, 0x4000),
        ]
    );
    for slot in layout.slots() {
        assert_eq!(regions[slot.region].gpa() + slot.region_offset, slot.gpa);
    }
}

#[test]
fn no_watches_is_the_plain_layout() {
    let regions = ram(&[(0, 3 * MIB), (4 * MIB, MIB)]);
    let plain = plan_layout(&regions, &[], MAX).expect("fits");
    let shape: Vec<_> = plain
        .slots()
        .iter()
        .map(|s| (s.slot, s.gpa, s.size, s.readonly))
        .collect();
    assert_eq!(shape, [(0, 0, 3 * MIB, false), (1, 4 * MIB, MIB, false)]);
    assert!(plain.traps().is_empty());
}

/// RAM, watches, `max_slots`, the error, and a piece of its message.
type Refusal = (Vec<RamRegion>, Vec<Watch>, usize, LayoutError, &'static str);

#[test]
fn refusals_name_the_problem() {
    let one = ram(ONE_MIB);
    let table: [Refusal; 7] = [
        (vec![], vec![], MAX, LayoutError::NoRam, "at least one"),
        (
            ram(&[(0, 2 * MIB), (MIB, MIB)]),
            vec![],
            MAX,
            LayoutError::OverlappingRam {
                first: RamRegion::new(0, 2 * MIB).expect("valid"),
                second: RamRegion::new(MIB, MIB).expect("valid"),
            },
            "0x0..0x200000 and 0x100000..0x200000 overlap",
        ),
        (
            one.clone(),
            watches(&[(1, 0x1000, 4, Write), (1, 0x2000, 4, Read)]),
            MAX,
            LayoutError::DuplicateWatch { id: WatchId(1) },
            "renumber",
        ),
        (
            one.clone(),
            watches(&[(7, MIB - 4, 8, Write)]),
            MAX,
            LayoutError::OutsideRam {
                id: WatchId(7),
                gpa: MIB - 4,
                end: MIB + 4,
                missing: MIB,
            },
            "watch #7 on 0xffffc..0x100004 is not all guest RAM: 0x100000",
        ),
        (
            ram(&[(0, MIB), (2 * MIB, MIB)]),
            watches(&[(3, MIB - 4, MIB + 8, Read)]),
            MAX,
            LayoutError::OutsideRam {
                id: WatchId(3),
                gpa: MIB - 4,
                end: 2 * MIB + 4,
                missing: MIB,
            },
            "shrink the range",
        ),
        (
            one.clone(),
            watches(&[(2, 0xfee0_0000, 4, Write)]),
            MAX,
            LayoutError::OutsideRam {
                id: WatchId(2),
                gpa: 0xfee0_0000,
                end: 0xfee0_0004,
                missing: 0xfee0_0000,
            },
            "page protection works only on RAM",
        ),
        (
            one,
            watches(&[(1, 0x5000, 4, Write), (2, 0x9000, 4, Write)]),
            4,
            LayoutError::TooManyMemslots { needed: 5, max: 4 },
            "need 5 memslots but only 4 are available",
        ),
    ];
    for (regions, list, max, err, text) in table {
        assert_eq!(plan_layout(&regions, &list, max), Err(err.clone()));
        let msg = err.to_string();
        assert!(msg.contains(text), "{msg}");
    }
    let msg = LayoutError::TooManyMemslots { needed: 5, max: 4 }.to_string();
    assert!(
        msg.contains("remove watches") && msg.contains("group them"),
        "{msg}"
    );
}

#[test]
fn exactly_max_slots_fits() {
    let list = watches(&[(1, 0x5000, 4, Write), (2, 0x9000, 4, Write)]);
    let layout = plan_layout(&ram(ONE_MIB), &list, 5).expect("5 slots fit in 5");
    assert!(layout.slots().iter().all(|s| s.slot < 5));
}

#[test]
fn removal_restores_the_original_layout_and_numbers() {
    let regions = ram(&[(0, MIB), (4 * MIB, MIB), (8 * MIB, MIB)]);
    let bare = plan_layout(&regions, &[], MAX).expect("fits");
    let steps = [
        watches(&[(1, 4 * MIB + 0x5000, 8, Write)]),
        watches(&[(1, 0x3000, 8, Read), (2, 8 * MIB + 0x10, 0x3000, ReadWrite)]),
        watches(&[
            (1, 0, 8, Write),
            (2, MIB - 8, 8, Write),
            (3, 9 * MIB - 1, 1, Read),
        ]),
    ];
    for list in steps {
        let armed = bare.replan(&list, MAX).expect("fits");
        let disarmed = armed.replan(&[], MAX).expect("fits");
        assert_eq!(disarmed, bare, "{list:?}");
        // The round trip's two diffs cancel out.
        assert_eq!(diff(&bare, &disarmed), []);
        let there = diff(&bare, &armed);
        let back = diff(&armed, &disarmed);
        assert_eq!(count_deletes(&there), count_creates(&back));
        assert_eq!(count_creates(&there), count_deletes(&back));
    }
}

#[test]
fn diffs_delete_first_and_leave_unchanged_slots_alone() {
    let regions = ram(&[(0, MIB), (4 * MIB, MIB)]);
    let first = plan_layout(&regions, &watches(&[(1, 0x5000, 4, Write)]), MAX).expect("fits");
    // Add a watch in the second region: the first region's three slots stay.
    let second = first
        .replan(
            &watches(&[(1, 0x5000, 4, Write), (2, 4 * MIB + 0x8000, 4, Write)]),
            MAX,
        )
        .expect("fits");
    let ops = diff(&first, &second);
    let unchanged: Vec<_> = first.slots().iter().filter(|s| s.gpa < MIB).collect();
    for op in &ops {
        let number = match op {
            SlotOp::Delete { slot } => *slot,
            SlotOp::Create(m) => m.slot,
        };
        assert!(
            unchanged.iter().all(|s| s.slot != number),
            "{op:?} touches an unchanged slot"
        );
    }
    let first_create = ops.iter().position(|op| matches!(op, SlotOp::Create(_)));
    let last_delete = ops
        .iter()
        .rposition(|op| matches!(op, SlotOp::Delete { .. }));
    assert!(last_delete < first_create, "{ops:?}");
    assert_eq!((count_deletes(&ops), count_creates(&ops)), (1, 3));
    // The freed number is reused first, then the lowest free ones.
    let created: Vec<u32> = ops
        .iter()
        .filter_map(|op| match op {
            SlotOp::Create(m) => Some(m.slot),
            SlotOp::Delete { .. } => None,
        })
        .collect();
    assert_eq!(created, [3, 4, 5]);
}

#[test]
fn lowering_max_slots_gives_up_numbers_above_it() {
    let regions = ram(&[(0, MIB), (4 * MIB, MIB)]);
    let wide = plan_layout(&regions, &watches(&[(1, 0x5000, 4, Write)]), MAX).expect("fits");
    // Second region's slot is number 3 (after the first region's 0, 1, 2).
    assert_eq!(wide.slot_at(4 * MIB).map(|s| s.slot), Some(3));
    let narrow = wide.replan(&watches(&[(1, 0x5000, 4, Write)]), 3);
    assert_eq!(
        narrow,
        Err(LayoutError::TooManyMemslots { needed: 4, max: 3 })
    );
    let narrow = wide.replan(&watches(&[]), 3).expect("fits");
    assert!(
        narrow.slots().iter().all(|s| s.slot < 3),
        "{:?}",
        narrow.slots()
    );
}

fn count_deletes(ops: &[SlotOp]) -> usize {
    ops.iter()
        .filter(|op| matches!(op, SlotOp::Delete { .. }))
        .count()
}

fn count_creates(ops: &[SlotOp]) -> usize {
    ops.iter()
        .filter(|op| matches!(op, SlotOp::Create(_)))
        .count()
}
