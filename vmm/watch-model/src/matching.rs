//! Matching a trapped guest access against the watches.

use serde::Serialize;

use crate::page::page_of;
use crate::{Layout, WatchId};

/// What one guest access (one `KVM_EXIT_MMIO` on a trapped page) means for the watches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccessMatch {
    /// The watches sharing a byte with the access and catching its kind, ascending by id.
    pub hits: Vec<WatchId>,
    /// The access touched a trapped page but hit no watch: it exited only because it shares a
    /// page with watched bytes (or is a write to a page trapped for reads). The VMM still
    /// performs it, and counts it as the cost of page protection.
    pub false_trap: bool,
}

impl Layout {
    /// Matches the guest access of `len` bytes at `gpa` (`is_write` as in `KVM_EXIT_MMIO`'s
    /// `is_write`) against the watches: a watch is hit when it shares a byte with the access and
    /// catches its kind ([`Access::catches`](crate::Access::catches)).
    ///
    /// An access touching no trapped page hits nothing and is not a false trap: it is not the
    /// watch engine's exit. A zero length touches nothing; a range past the top of the address
    /// space is cut there. Cost: proportional to the watches on the one or two pages an
    /// access touches, whatever the total number of watches.
    pub fn match_access(&self, gpa: u64, len: u64, is_write: bool) -> AccessMatch {
        let end = gpa.saturating_add(len);
        let mut hits = Vec::new();
        let mut trapped = false;
        for (&page, trap) in self.trapped_pages(gpa, end) {
            trapped = true;
            for id in &trap.watches {
                let Some(watch) = self.watches.get(id) else {
                    continue;
                };
                // A watch on several touched pages is listed on each; count it only on the
                // first page where it meets the access, so `hits` needs no dedup.
                let first_shared = page_of(watch.gpa().max(gpa));
                if first_shared == page
                    && watch.access().catches(is_write)
                    && watch.overlaps(gpa, end)
                {
                    hits.push(*id);
                }
            }
        }
        hits.sort_unstable();
        AccessMatch {
            false_trap: trapped && hits.is_empty(),
            hits,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{plan_layout, Access, AccessMatch, Layout, RamRegion, Watch, WatchId};

    const MIB: u64 = 1 << 20;

    fn layout(watches: &[(u32, u64, u64, Access)]) -> Layout {
        let ram = [RamRegion::new(0, MIB).expect("valid")];
        let watches: Vec<Watch> = watches
            .iter()
            .map(|&(id, gpa, len, access)| {
                Watch::new(WatchId(id), gpa, len, access).expect("valid")
            })
            .collect();
        plan_layout(&ram, &watches, 64).expect("fits")
    }

    fn hits(ids: &[u32]) -> AccessMatch {
        AccessMatch {
            hits: ids.iter().copied().map(WatchId).collect(),
            false_trap: false,
        }
    }

    const FALSE_TRAP: AccessMatch = AccessMatch {
        hits: Vec::new(),
        false_trap: true,
    };

    const NOT_OURS: AccessMatch = AccessMatch {
        hits: Vec::new(),
        false_trap: false,
    };

    #[test]
    fn table() {
        use Access::*;
        let l = layout(&[
            (1, 0x1000, 8, Write),
            (2, 0x1004, 8, Read),
            (3, 0x1100, 1, ReadWrite),
            (4, 0x2ffe, 4, Write),
            (5, 0x8000, 0x3000, Read),
        ]);
        let table = [
            // (gpa, len, is_write, expected)
            (0x1000, 4, true, hits(&[1])),
            (0x1000, 4, false, FALSE_TRAP),
            (0x1004, 4, true, hits(&[1])),
            (0x1004, 4, false, hits(&[2])),
            (0x1000, 16, false, hits(&[2])),
            (0x1008, 8, true, FALSE_TRAP),
            (0x0ffc, 8, true, hits(&[1])),
            (0x10fc, 8, true, hits(&[3])),
            (0x10fc, 8, false, hits(&[3])),
            (0x1101, 8, false, FALSE_TRAP),
            (0x1800, 8, true, FALSE_TRAP),
            // Byte-exact edges: touching the watch's last byte hits, the next byte does not.
            (0x1007, 1, true, hits(&[1])),
            (0x100c, 4, false, FALSE_TRAP),
            // An access straddling two trapped pages, and a watch spanning them.
            (0x2ffc, 8, true, hits(&[4])),
            (0x3001, 2, true, hits(&[4])),
            (0x3002, 2, true, FALSE_TRAP),
            // One long watch over three pages is reported once.
            (0x8ff8, 0x2010, false, hits(&[5])),
            (0xa000, 8, true, FALSE_TRAP),
            // Nothing trapped here.
            (0x5000, 8, true, NOT_OURS),
            (0x1000, 0, true, NOT_OURS),
            (u64::MAX - 3, 8, true, NOT_OURS),
        ];
        for (gpa, len, is_write, expect) in table {
            assert_eq!(
                l.match_access(gpa, len, is_write),
                expect,
                "{gpa:#x}+{len} write={is_write}"
            );
        }
    }

    #[test]
    fn many_watches_on_one_page_all_hit_in_id_order() {
        let l = layout(&[
            (9, 0x4000, 2, Access::Write),
            (3, 0x4001, 2, Access::ReadWrite),
            (5, 0x4000, 1, Access::Write),
            (7, 0x4002, 1, Access::Read),
        ]);
        assert_eq!(l.match_access(0x4000, 4, true), hits(&[3, 5, 9]));
        assert_eq!(l.match_access(0x4000, 4, false), hits(&[3, 7]));
    }
}
