//! Planning: RAM and watches in, a checked [`Layout`] out.

use std::collections::BTreeMap;

use crate::carve::carve;
use crate::numbering::number;
use crate::trap::trap_pages;
use crate::{Layout, Memslot, RamRegion, Watch, WatchId};

/// Why a layout cannot be planned. Every message says what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No RAM regions.
    #[error("no RAM regions given: a layout splits guest RAM into memslots, so pass the VM's RAM regions (at least one)")]
    NoRam,
    /// Two RAM regions share bytes.
    #[error(
        "RAM regions {first} and {second} overlap: KVM refuses overlapping memslots and a byte \
         cannot have two backings; pass disjoint regions"
    )]
    OverlappingRam {
        /// The region starting lower.
        first: RamRegion,
        /// The region starting inside it.
        second: RamRegion,
    },
    /// Two watches share an id.
    #[error(
        "watch id {id} is used by two watches: matches report watches by id, so ids must be \
         unique; renumber one of them or merge the two"
    )]
    DuplicateWatch {
        /// The id.
        id: WatchId,
    },
    /// A watch covers bytes that are not RAM.
    #[error(
        "watch {id} on {gpa:#x}..{end:#x} is not all guest RAM: {missing:#x} is in no RAM \
         region; page protection works only on RAM (a device's MMIO already exits to the VMM), \
         so shrink the range to RAM"
    )]
    OutsideRam {
        /// The watch.
        id: WatchId,
        /// Its first byte.
        gpa: u64,
        /// One past its last byte.
        end: u64,
        /// The lowest of its bytes that is not RAM.
        missing: u64,
    },
    /// The layout needs more memslots than KVM has left.
    #[error(
        "the watches need {needed} memslots but only {max} are available (KVM_CAP_NR_MEMSLOTS \
         minus the slots the VMM reserves): each watched page splits a RAM memslot unless it \
         sits next to a watched page of the same mode, or at the edge of RAM; remove watches, \
         or group them onto fewer, adjacent pages"
    )]
    TooManyMemslots {
        /// The memslots the layout needs.
        needed: usize,
        /// The memslots available.
        max: usize,
    },
}

/// Plans the memslots for `ram` with `watches` armed, numbering them 0, 1, 2... by address.
///
/// Refuses an empty or overlapping `ram`, duplicate watch ids, a watch with a byte outside
/// `ram`, and a layout needing more than `max_slots` memslots. Slot numbers stay below
/// `max_slots`: the VMM passes `KVM_CAP_NR_MEMSLOTS` minus the slots it reserves and keeps the
/// top numbers for itself. Numbers are `u32`, so a `max_slots` beyond `u32::MAX` counts as
/// `u32::MAX`.
///
/// Use [`Layout::replan`] for every later change, so unchanged memslots keep their numbers.
pub fn plan_layout(
    ram: &[RamRegion],
    watches: &[Watch],
    max_slots: usize,
) -> Result<Layout, LayoutError> {
    plan(ram, watches, max_slots, &[])
}

impl Layout {
    /// Plans the same RAM with `watches` (the complete new set, not a delta), keeping the number
    /// of every memslot that describes the same memory (address, size, read-only flag) as one
    /// of this layout's; new memslots take the lowest free numbers. Refuses what
    /// [`plan_layout`] refuses. Install the result with [`diff`](crate::diff()).
    ///
    /// Numbers depend on history: after several re-plans the same watch set may carry other
    /// numbers than a fresh plan would, but the memslots themselves (addresses, sizes, flags)
    /// depend on RAM and watches alone.
    pub fn replan(&self, watches: &[Watch], max_slots: usize) -> Result<Layout, LayoutError> {
        plan(&self.ram, watches, max_slots, &self.slots)
    }
}

fn plan(
    ram: &[RamRegion],
    watches: &[Watch],
    max_slots: usize,
    previous: &[Memslot],
) -> Result<Layout, LayoutError> {
    let sorted = sorted_disjoint(ram)?;
    let watches = by_id(watches)?;
    for watch in watches.values() {
        inside(&sorted, watch)?;
    }
    let traps = trap_pages(&watches);
    let mut slots = carve(ram, &traps);
    let max = u32::try_from(max_slots).unwrap_or(u32::MAX);
    if slots.len() > max as usize {
        return Err(LayoutError::TooManyMemslots {
            needed: slots.len(),
            max: max_slots,
        });
    }
    number(&mut slots, previous, max)?;
    Ok(Layout {
        ram: ram.to_vec(),
        slots,
        traps,
        watches,
    })
}

/// `ram` sorted by address, checked non-empty and disjoint.
fn sorted_disjoint(ram: &[RamRegion]) -> Result<Vec<RamRegion>, LayoutError> {
    let mut sorted = ram.to_vec();
    sorted.sort_by_key(RamRegion::gpa);
    if sorted.is_empty() {
        return Err(LayoutError::NoRam);
    }
    for pair in sorted.windows(2) {
        if let [first, second] = pair {
            if first.end() > second.gpa() {
                return Err(LayoutError::OverlappingRam {
                    first: *first,
                    second: *second,
                });
            }
        }
    }
    Ok(sorted)
}

fn by_id(watches: &[Watch]) -> Result<BTreeMap<WatchId, Watch>, LayoutError> {
    let mut map = BTreeMap::new();
    for watch in watches {
        if map.insert(watch.id(), *watch).is_some() {
            return Err(LayoutError::DuplicateWatch { id: watch.id() });
        }
    }
    Ok(map)
}

/// Checks every byte of `watch` is in some region of `sorted` (ascending, disjoint). A watch
/// may run from one region into another that starts exactly where the first ends.
fn inside(sorted: &[RamRegion], watch: &Watch) -> Result<(), LayoutError> {
    let mut cursor = watch.gpa();
    while cursor < watch.end() {
        // The only candidate is the first region ending above `cursor`.
        let holder = sorted
            .get(sorted.partition_point(|region| region.end() <= cursor))
            .filter(|region| region.contains(cursor));
        match holder {
            Some(region) => cursor = region.end(),
            None => {
                return Err(LayoutError::OutsideRam {
                    id: watch.id(),
                    gpa: watch.gpa(),
                    end: watch.end(),
                    missing: cursor,
                })
            }
        }
    }
    Ok(())
}
