//! The planned layout: which memslots cover guest RAM and which pages trap.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use crate::page::page_of;
use crate::{Memslot, PageMode, RamRegion, Trap, Watch, WatchId};

/// Guest RAM split into KVM memslots around the trapped pages, plus the watches it was planned
/// for. Build one with [`plan_layout`](crate::plan_layout) and change it with
/// [`Layout::replan`].
///
/// Invariants, pinned by `tests/layout_props.rs`: every RAM page is either in exactly one
/// memslot or an [`PageMode::Absent`] trap; a page is in a read-only memslot exactly when it is
/// a [`PageMode::ReadOnly`] trap; a page is trapped exactly when a watch holds one of its
/// bytes; memslots never overlap, never span two RAM regions, are as few as the traps allow,
/// and have unique numbers below the `max_slots` they were planned with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub(crate) ram: Vec<RamRegion>,
    /// Ascending by `gpa`.
    pub(crate) slots: Vec<Memslot>,
    /// Keyed by page start.
    pub(crate) traps: BTreeMap<u64, Trap>,
    pub(crate) watches: BTreeMap<WatchId, Watch>,
}

impl Layout {
    /// The RAM regions, in the order the caller gave them ([`Memslot::region`] indexes this).
    pub fn ram(&self) -> &[RamRegion] {
        &self.ram
    }

    /// The memslots to install, ascending by guest-physical address.
    pub fn slots(&self) -> &[Memslot] {
        &self.slots
    }

    /// The trapped pages, keyed by the page's first guest-physical address.
    pub fn traps(&self) -> &BTreeMap<u64, Trap> {
        &self.traps
    }

    /// The watches, ascending by id.
    pub fn watches(&self) -> impl Iterator<Item = &Watch> + '_ {
        self.watches.values()
    }

    /// The watch with `id`, if the layout has one.
    pub fn watch(&self, id: WatchId) -> Option<&Watch> {
        self.watches.get(&id)
    }

    /// The trap on the page holding `gpa`, if that page traps.
    pub fn trap(&self, gpa: u64) -> Option<&Trap> {
        self.traps.get(&page_of(gpa))
    }

    /// How the page holding `gpa` is protected, or `None` when it is not trapped.
    pub fn is_trapped(&self, gpa: u64) -> Option<PageMode> {
        self.trap(gpa).map(|trap| trap.mode)
    }

    /// Whether the `len` bytes from `gpa` touch any trapped page. An MMIO exit that touches
    /// none is not the watch engine's: it belongs to a device, or to no one. A zero length
    /// touches nothing; a range past the top of the address space is cut there.
    pub fn touches_trap(&self, gpa: u64, len: u64) -> bool {
        self.trapped_pages(gpa, gpa.saturating_add(len))
            .next()
            .is_some()
    }

    /// The memslot holding `gpa`: `None` for holes and for addresses outside RAM.
    pub fn slot_at(&self, gpa: u64) -> Option<&Memslot> {
        // Slots are sorted and disjoint, so only the last one starting at or below `gpa` can
        // hold it.
        let after = self.slots.partition_point(|slot| slot.gpa <= gpa);
        after
            .checked_sub(1)
            .and_then(|index| self.slots.get(index))
            .filter(|slot| slot.contains(gpa))
    }

    /// The traps on the pages holding a byte of `[start, end)`, ascending.
    pub(crate) fn trapped_pages(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (&u64, &Trap)> + '_ {
        // Keys are page starts, so the pages touched are those starting in
        // [page_of(start), end).
        let range: Range<u64> = if start < end {
            page_of(start)..end
        } else {
            0..0
        };
        self.traps.range(range)
    }
}

#[cfg(test)]
mod tests {
    use crate::{plan_layout, Access, PageMode, RamRegion, Watch, WatchId};

    const MIB: u64 = 1 << 20;

    fn layout() -> crate::Layout {
        let ram = [RamRegion::new(0, MIB).expect("valid")];
        let watches = [
            Watch::new(WatchId(1), 0x3ff8, 16, Access::Write).expect("valid"),
            Watch::new(WatchId(2), 0x8000, 4, Access::Read).expect("valid"),
        ];
        plan_layout(&ram, &watches, 16).expect("fits")
    }

    #[test]
    fn page_queries() {
        let l = layout();
        let table = [
            (0x2fff, None),
            (0x3000, Some(PageMode::ReadOnly)),
            (0x4fff, Some(PageMode::ReadOnly)),
            (0x5000, None),
            (0x8abc, Some(PageMode::Absent)),
            (2 * MIB, None),
        ];
        for (gpa, mode) in table {
            assert_eq!(l.is_trapped(gpa), mode, "{gpa:#x}");
        }
        assert_eq!(
            l.trap(0x4000).map(|t| t.watches.clone()),
            Some(vec![WatchId(1)])
        );
    }

    #[test]
    fn touches_trap() {
        let l = layout();
        let table = [
            (0x2ff8, 8, false),
            (0x2ffc, 8, true),
            (0x5000, 0x3000, false),
            (0x5000, 0x3001, true),
            (0x8000, 0, false),
            (u64::MAX - 4, 100, false),
            (0, u64::MAX, true),
        ];
        for (gpa, len, expect) in table {
            assert_eq!(l.touches_trap(gpa, len), expect, "{gpa:#x}+{len:#x}");
        }
    }

    #[test]
    fn slot_at() {
        let l = layout();
        let table = [
            (0, Some((0, false))),
            (0x2fff, Some((0, false))),
            (0x3000, Some((0x3000, true))),
            (0x4fff, Some((0x3000, true))),
            (0x5000, Some((0x5000, false))),
            (0x8000, None),
            (0x9000, Some((0x9000, false))),
            (MIB, None),
        ];
        for (gpa, expect) in table {
            assert_eq!(
                l.slot_at(gpa).map(|s| (s.gpa, s.readonly)),
                expect,
                "{gpa:#x}"
            );
        }
    }
}
