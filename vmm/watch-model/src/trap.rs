//! Trapped pages: how a page holding watched bytes is protected, and which watches it holds.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::page::pages_of;
use crate::{Access, Watch, WatchId};

/// How a trapped page is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageMode {
    /// In a `KVM_MEM_READONLY` memslot: reads run at full speed, a write exits as
    /// `KVM_EXIT_MMIO` and the VMM performs it.
    ReadOnly,
    /// In no memslot at all: every access exits as `KVM_EXIT_MMIO` and the VMM serves it from
    /// its own mapping. Instruction fetch from such a page cannot be emulated.
    Absent,
}

impl PageMode {
    /// The protection a watch needs on its pages. Only a hole makes reads exit, so any watch
    /// that reports reads needs [`PageMode::Absent`].
    pub const fn for_access(access: Access) -> PageMode {
        match access {
            Access::Write => PageMode::ReadOnly,
            Access::Read | Access::ReadWrite => PageMode::Absent,
        }
    }

    /// The protection that serves both modes' watches on one page: the stricter one.
    pub fn strictest(self, other: PageMode) -> PageMode {
        self.max(other)
    }
}

/// One trapped page: its protection and the watches holding at least one of its bytes, in
/// ascending id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trap {
    /// How the page is protected.
    pub mode: PageMode,
    /// The watches with a byte on the page; never empty, ascending, no duplicates.
    pub watches: Vec<WatchId>,
}

/// The trap on every page holding a byte of some watch, keyed by page start. Visiting the
/// watches in id order keeps each trap's list ascending without sorting.
pub(crate) fn trap_pages(watches: &BTreeMap<WatchId, Watch>) -> BTreeMap<u64, Trap> {
    let mut traps: BTreeMap<u64, Trap> = BTreeMap::new();
    for watch in watches.values() {
        let mode = PageMode::for_access(watch.access());
        for page in pages_of(watch.gpa(), watch.end()) {
            traps
                .entry(page)
                .and_modify(|trap| {
                    trap.mode = trap.mode.strictest(mode);
                    trap.watches.push(watch.id());
                })
                .or_insert_with(|| Trap {
                    mode,
                    watches: vec![watch.id()],
                });
        }
    }
    traps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_rule() {
        use PageMode::*;
        assert_eq!(PageMode::for_access(Access::Write), ReadOnly);
        assert_eq!(PageMode::for_access(Access::Read), Absent);
        assert_eq!(PageMode::for_access(Access::ReadWrite), Absent);
        let table = [
            (ReadOnly, ReadOnly, ReadOnly),
            (ReadOnly, Absent, Absent),
            (Absent, ReadOnly, Absent),
            (Absent, Absent, Absent),
        ];
        for (a, b, both) in table {
            assert_eq!(a.strictest(b), both, "{a:?} + {b:?}");
        }
    }
}

#[cfg(test)]
mod trap_pages_tests {
    use super::*;

    fn watches(list: &[(u32, u64, u64, Access)]) -> BTreeMap<WatchId, Watch> {
        list.iter()
            .map(|&(id, gpa, len, access)| {
                let watch = Watch::new(WatchId(id), gpa, len, access).expect("valid");
                (watch.id(), watch)
            })
            .collect()
    }

    #[test]
    fn pages_collect_their_watches_and_the_strictest_mode() {
        use Access::*;
        let traps = trap_pages(&watches(&[
            (3, 0x1ffc, 8, Write),
            (1, 0x1000, 1, Write),
            (2, 0x2800, 2, Read),
        ]));
        let got: Vec<_> = traps
            .iter()
            .map(|(page, trap)| (*page, trap.mode, trap.watches.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (0x1000, PageMode::ReadOnly, vec![WatchId(1), WatchId(3)]),
                (0x2000, PageMode::Absent, vec![WatchId(2), WatchId(3)]),
            ]
        );
    }
}
