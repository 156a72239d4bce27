//! Stable slot numbers: a memslot that did not change keeps its number across re-plans.

use std::collections::BTreeSet;

use crate::{LayoutError, Memslot};

/// Numbers `slots` (ascending by address) below `max`. A slot describing the same memory as a
/// slot of `previous` (same address, size and read-only flag; `previous` ascending by address)
/// keeps that slot's number, so the VMM leaves it installed; every other slot takes the lowest
/// number still free, in address order. A plan with no previous layout therefore numbers its
/// slots 0, 1, 2... by address, and removing every watch restores exactly those numbers.
pub(crate) fn number(
    slots: &mut [Memslot],
    previous: &[Memslot],
    max: u32,
) -> Result<(), LayoutError> {
    let needed = slots.len();
    let mut used = BTreeSet::new();
    let mut fresh = Vec::new();
    for (index, slot) in slots.iter_mut().enumerate() {
        let kept = previous
            .binary_search_by_key(&slot.gpa, |old| old.gpa)
            .ok()
            .and_then(|at| previous.get(at))
            // A number at or above `max` belongs to the VMM now (it lowered `max_slots` to
            // reserve it), and a number already taken means `previous` was not a layout.
            .filter(|old| old.same_mapping(slot) && old.slot < max && !used.contains(&old.slot));
        match kept {
            Some(old) => {
                slot.slot = old.slot;
                used.insert(old.slot);
            }
            None => fresh.push(index),
        }
    }
    let mut free = (0..max).filter(|number| !used.contains(number));
    for index in fresh {
        let (Some(number), Some(slot)) = (free.next(), slots.get_mut(index)) else {
            return Err(LayoutError::TooManyMemslots {
                needed,
                max: max as usize,
            });
        };
        slot.slot = number;
    }
    Ok(())
}
