//! One KVM memslot of the layout, as `KVM_SET_USER_MEMORY_REGION` wants it.

use std::fmt;

use serde::Serialize;

/// One memslot: guest-physical `[gpa, gpa + size)` backed by the VMM's mapping of RAM region
/// `region`, starting `region_offset` bytes into it.
///
/// The VMM registers it with `slot`, `guest_phys_addr = gpa`, `memory_size = size`,
/// `userspace_addr = host base of region + region_offset`, and `flags = KVM_MEM_READONLY` when
/// `readonly` (which needs `KVM_CAP_READONLY_MEM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Memslot {
    /// The KVM slot number: always below the `max_slots` the layout was planned with, so the
    /// VMM may keep the numbers from `max_slots` up for its own slots.
    pub slot: u32,
    /// The first guest-physical byte; page-aligned.
    pub gpa: u64,
    /// The size in bytes; a non-zero multiple of the page size.
    pub size: u64,
    /// Whether guest writes exit (`KVM_MEM_READONLY`): set exactly on runs of pages that hold
    /// write watches only.
    pub readonly: bool,
    /// The index, in the RAM slice given to the planner, of the region this slot lies in.
    pub region: usize,
    /// How far into that region the slot starts, in bytes.
    pub region_offset: u64,
}

impl Memslot {
    /// One past the last byte. Saturates, because the fields are public and a hand-built
    /// memslot may not fit; planned ones always do.
    pub const fn end(&self) -> u64 {
        self.gpa.saturating_add(self.size)
    }

    /// Whether `gpa` is one of its bytes.
    pub const fn contains(&self, gpa: u64) -> bool {
        self.gpa <= gpa && gpa < self.end()
    }

    /// Whether `other` describes the same guest memory the same way, whatever the slot
    /// numbers: such a slot can be left installed across a re-plan.
    pub(crate) fn same_mapping(&self, other: &Memslot) -> bool {
        self.gpa == other.gpa && self.size == other.size && self.readonly == other.readonly
    }
}

/// `slot 3 ro 0x1000..0x2000`.
impl fmt::Display for Memslot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.readonly { "ro" } else { "rw" };
        write!(
            f,
            "slot {} {mode} {:#x}..{:#x}",
            self.slot,
            self.gpa,
            self.end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_display() {
        let m = Memslot {
            slot: 3,
            gpa: 0x1000,
            size: 0x1000,
            readonly: true,
            region: 0,
            region_offset: 0x1000,
        };
        assert_eq!(m.end(), 0x2000);
        assert!(
            m.contains(0x1000) && m.contains(0x1fff) && !m.contains(0x2000) && !m.contains(0xfff)
        );
        assert_eq!(m.to_string(), "slot 3 ro 0x1000..0x2000");
        let renumbered = Memslot { slot: 9, ..m };
        assert!(m.same_mapping(&renumbered));
        assert!(!m.same_mapping(&Memslot {
            readonly: false,
            ..m
        }));
    }
}
