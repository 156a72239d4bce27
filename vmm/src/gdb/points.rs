//! gdb's breakpoints as drvisor keeps them: stable across gdb's remove-and-reinsert.
//!
//! In all-stop mode gdb removes every breakpoint at each stop and inserts them again before it
//! resumes (stepping the stopped vCPU over its own breakpoint in between). Taken literally,
//! every stop would remove and re-add each breakpoint: a new id, plan events and a re-plan of
//! every vCPU each time. Instead a removed breakpoint is only *retired*: it stays armed, its
//! hits are ignored, and an insert of the same point revives it as it was. Retired points are
//! really removed when the VM continues without them. A single-step keeps them armed: the
//! stepped vCPU is resumed past the breakpoint it stopped at, as after any paused hit, and the
//! other vCPUs stay parked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::target::Point;

/// Whether gdb has a point inserted now: shared with the point's hit callback.
#[derive(Clone, Debug, Default)]
pub struct Inserted(Arc<AtomicBool>);

impl Inserted {
    /// A flag that says inserted.
    pub fn new() -> Self {
        Inserted(Arc::new(AtomicBool::new(true)))
    }

    /// Whether gdb has the point inserted: a hit of a retired one is not gdb's.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, inserted: bool) {
        self.0.store(inserted, Ordering::SeqCst);
    }
}

/// One of gdb's points, armed as a session breakpoint.
#[derive(Debug)]
struct Kept {
    id: u32,
    inserted: Inserted,
}

/// gdb's points and the session breakpoints that serve them.
#[derive(Debug, Default)]
pub struct Points {
    kept: BTreeMap<Point, Kept>,
}

impl Points {
    /// Inserts `point` again if it is kept: its breakpoint's id if it was (nothing to arm).
    pub fn revive(&mut self, point: Point) -> Option<u32> {
        let k = self.kept.get(&point)?;
        k.inserted.set(true);
        Some(k.id)
    }

    /// Forgets `point` (its breakpoint is removed by the caller).
    pub fn forget(&mut self, point: Point) {
        self.kept.remove(&point);
    }

    /// Whether any point is retired.
    pub fn has_retired(&self) -> bool {
        self.kept.values().any(|k| !k.inserted.get())
    }

    /// Records `point`, newly armed as breakpoint `id`.
    pub fn insert(&mut self, point: Point, id: u32, inserted: Inserted) {
        self.kept.insert(point, Kept { id, inserted });
    }

    /// gdb removed `point`: it is retired, still armed. `false` if gdb had no such point.
    pub fn retire(&mut self, point: Point) -> bool {
        match self.kept.get(&point) {
            Some(k) if k.inserted.get() => {
                k.inserted.set(false);
                true
            }
            _ => false,
        }
    }

    /// Whether gdb has `point` inserted now.
    pub fn is_inserted(&self, point: Point) -> bool {
        self.kept.get(&point).is_some_and(|k| k.inserted.get())
    }

    /// The retired points' breakpoint ids, forgotten here: the VM continues without them.
    pub fn take_retired(&mut self) -> Vec<u32> {
        let retired: Vec<Point> = self
            .kept
            .iter()
            .filter(|(_, k)| !k.inserted.get())
            .map(|(p, _)| *p)
            .collect();
        retired
            .iter()
            .filter_map(|p| self.kept.remove(p))
            .map(|k| k.id)
            .collect()
    }

    /// Every point's breakpoint id, inserted or retired, forgotten here.
    pub fn take_all(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.kept)
            .into_values()
            .map(|k| k.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reinserted_point_is_the_same_breakpoint() {
        let mut p = Points::default();
        assert_eq!(p.revive(Point::Hard(0x10)), None);
        let inserted = Inserted::new();
        p.insert(Point::Hard(0x10), 7, inserted.clone());
        assert!(p.retire(Point::Hard(0x10)));
        assert!(!inserted.get(), "its hits are not gdb's while retired");
        assert!(p.has_retired());
        assert_eq!(p.revive(Point::Hard(0x10)), Some(7));
        assert!(inserted.get());
        assert!(!p.has_retired());
        assert!(p.take_retired().is_empty(), "nothing to remove on continue");
        assert_eq!(p.take_all(), vec![7]);
    }

    #[test]
    fn a_point_still_retired_at_continue_is_removed_once() {
        let mut p = Points::default();
        p.insert(Point::Hard(0x10), 1, Inserted::new());
        p.insert(Point::Soft(0x20), 2, Inserted::new());
        assert!(p.retire(Point::Soft(0x20)));
        assert!(
            !p.retire(Point::Soft(0x20)),
            "removed twice: gdb had it once"
        );
        assert!(!p.retire(Point::Hard(0x30)), "never inserted");
        assert_eq!(p.take_retired(), vec![2]);
        assert!(p.take_retired().is_empty());
        assert_eq!(
            p.revive(Point::Soft(0x20)),
            None,
            "gone: it must be armed anew"
        );
        p.forget(Point::Hard(0x10));
        assert!(p.take_all().is_empty());
        p.insert(Point::Hard(0x10), 1, Inserted::new());
        assert_eq!(p.take_all(), vec![1]);
    }
}
