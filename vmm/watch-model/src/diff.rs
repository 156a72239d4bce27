//! What the VMM must change in KVM to go from one layout to the next.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Layout, Memslot};

/// One `KVM_SET_USER_MEMORY_REGION` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum SlotOp {
    /// Remove the memslot: the ioctl with `memory_size = 0`.
    Delete {
        /// The slot number.
        slot: u32,
    },
    /// Install the memslot under its number, which no installed memslot uses any more.
    Create(Memslot),
}

/// The memslot changes that turn `old` into `new`: every delete first, then every create, each
/// group in ascending slot order. A memslot present in both under the same number and with the
/// same contents is in no op.
///
/// A slot that changed is deleted and created again, never modified in place: KVM refuses to
/// move or resize a memslot, and to change its `KVM_MEM_READONLY` flag (only
/// `KVM_MEM_LOG_DIRTY_PAGES` may change in place). Deletes go first because KVM refuses a new
/// memslot that overlaps an installed one, and a slot number can only be reused once free.
///
/// **Apply the whole diff with every vCPU paused** (out of `KVM_RUN`). Between a delete and
/// the matching create the range has no memslot, so a vCPU touching it would exit as MMIO on a
/// page the layout says is plain RAM; and the VMM must not match exits against `new` before
/// all of it is installed. The guest's memory is untouched: memslots are views of the VMM's
/// own mapping, which stays.
pub fn diff(old: &Layout, new: &Layout) -> Vec<SlotOp> {
    let before = by_number(old);
    let after = by_number(new);
    let deletes = before
        .iter()
        .filter(|(number, slot)| after.get(number) != Some(slot))
        .map(|(&slot, _)| SlotOp::Delete { slot });
    let creates = after
        .iter()
        .filter(|(number, slot)| before.get(number) != Some(slot))
        .map(|(_, slot)| SlotOp::Create(**slot));
    deletes.chain(creates).collect()
}

fn by_number(layout: &Layout) -> BTreeMap<u32, &Memslot> {
    layout
        .slots()
        .iter()
        .map(|slot| (slot.slot, slot))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan_layout, Access, RamRegion, Watch, WatchId};

    const MIB: u64 = 1 << 20;

    fn watch(id: u32, gpa: u64, access: Access) -> Watch {
        Watch::new(WatchId(id), gpa, 8, access).expect("valid")
    }

    fn two_regions() -> [RamRegion; 2] {
        [
            RamRegion::new(0, MIB).expect("valid"),
            RamRegion::new(4 * MIB, MIB).expect("valid"),
        ]
    }

    #[test]
    fn same_layout_needs_nothing() {
        let l = plan_layout(&two_regions(), &[watch(1, 0x5000, Access::Write)], 32).expect("fits");
        assert_eq!(diff(&l, &l), []);
    }

    #[test]
    fn deletes_come_first_and_unchanged_slots_are_untouched() {
        let ram = two_regions();
        let bare = plan_layout(&ram, &[], 32).expect("fits");
        let armed = bare
            .replan(&[watch(1, 0x5000, Access::Write)], 32)
            .expect("fits");
        // The second region's slot did not change: it keeps number 1 and appears in no op.
        let ops = diff(&bare, &armed);
        let rw = |slot, gpa, size| {
            SlotOp::Create(Memslot {
                slot,
                gpa,
                size,
                readonly: false,
                region: 0,
                region_offset: gpa,
            })
        };
        assert_eq!(
            ops,
            [
                SlotOp::Delete { slot: 0 },
                rw(0, 0, 0x5000),
                SlotOp::Create(Memslot {
                    slot: 2,
                    gpa: 0x5000,
                    size: 0x1000,
                    readonly: true,
                    region: 0,
                    region_offset: 0x5000,
                }),
                rw(3, 0x6000, MIB - 0x6000),
            ]
        );
        assert!(armed
            .slots()
            .iter()
            .any(|s| s.slot == 1 && s.gpa == 4 * MIB));
    }

    #[test]
    fn a_mode_change_recreates_the_slot() {
        let ram = two_regions();
        let write = plan_layout(&ram, &[watch(1, 0x5000, Access::Write)], 32).expect("fits");
        let read = write
            .replan(&[watch(1, 0x5000, Access::Read)], 32)
            .expect("fits");
        // Write-only: slot 1 is the read-only page. Read: the page is a hole, and the two
        // writable slots around it are unchanged.
        assert_eq!(diff(&write, &read), [SlotOp::Delete { slot: 1 }]);
        let back = read
            .replan(&[watch(1, 0x5000, Access::Write)], 32)
            .expect("fits");
        assert_eq!(
            diff(&read, &back),
            write
                .slots()
                .iter()
                .filter(|s| s.readonly)
                .map(|s| SlotOp::Create(*s))
                .collect::<Vec<_>>()
        );
        assert_eq!(back, write);
    }

    #[test]
    fn ops_serialize_with_an_op_tag() {
        let json = serde_json::to_value(SlotOp::Delete { slot: 4 }).expect("serializable");
        assert_eq!(json, serde_json::json!({"op": "delete", "slot": 4}));
    }
}
