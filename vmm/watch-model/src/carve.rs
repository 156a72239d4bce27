//! Carving RAM into memslots around the trapped pages.

use std::collections::BTreeMap;

use crate::{Memslot, PageMode, RamRegion, Trap, PAGE_SIZE};

/// The memslots covering `ram` around `traps`, ascending by address, numbered 0 (the caller
/// numbers them). Per region: each untrapped stretch is one writable slot, each run of adjacent
/// [`PageMode::ReadOnly`] pages is one read-only slot, and [`PageMode::Absent`] pages get no
/// slot. A slot never spans two regions: each is a separate host mapping, and one memslot has
/// one `userspace_addr`.
pub(crate) fn carve(ram: &[RamRegion], traps: &BTreeMap<u64, Trap>) -> Vec<Memslot> {
    let mut order: Vec<usize> = (0..ram.len()).collect();
    order.sort_by_key(|&index| ram[index].gpa());
    let mut slots = Vec::with_capacity(ram.len() + 2 * traps.len());
    for index in order {
        carve_region(index, &ram[index], traps, &mut slots);
    }
    slots
}

fn carve_region(
    index: usize,
    region: &RamRegion,
    traps: &BTreeMap<u64, Trap>,
    slots: &mut Vec<Memslot>,
) {
    let mut push = |start: u64, end: u64, readonly: bool| {
        slots.push(Memslot {
            slot: 0,
            gpa: start,
            size: end - start,
            readonly,
            region: index,
            region_offset: start - region.gpa(),
        })
    };
    // `cursor` is the first byte not yet covered; `run` the read-only pages not yet emitted.
    let mut cursor = region.gpa();
    let mut run: Option<(u64, u64)> = None;
    for (&page, trap) in traps.range(region.gpa()..region.end()) {
        if page > cursor {
            if let Some((start, end)) = run.take() {
                push(start, end, true);
            }
            push(cursor, page, false);
        }
        let page_end = page + PAGE_SIZE;
        run = match (trap.mode, run) {
            (PageMode::ReadOnly, Some((start, end))) if end == page => Some((start, page_end)),
            (PageMode::ReadOnly, other) => {
                if let Some((start, end)) = other {
                    push(start, end, true);
                }
                Some((page, page_end))
            }
            (PageMode::Absent, other) => {
                if let Some((start, end)) = other {
                    push(start, end, true);
                }
                None
            }
        };
        cursor = page_end;
    }
    if let Some((start, end)) = run {
        push(start, end, true);
    }
    if cursor < region.end() {
        push(cursor, region.end(), false);
    }
}
