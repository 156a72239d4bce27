//! The event ring `GET /events` serves: the last N events with their sequence numbers, so a
//! client can replay from `Last-Event-ID` or `?since=`. The VMM pushes (its feeder, which reads
//! the event bus, and the session's plan and state changes, under one short lock); any number
//! of readers follow with a cursor of their own. A reader that falls more than N behind learns
//! how many it missed (a `lost` record); it never slows a producer, which never waits for a
//! reader.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An SSE event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A breakpoint or watch hit (the `--events` line).
    Hit,
    /// A breakpoint added or removed.
    Plan,
    /// The VM paused, resumed or stopped.
    State,
    /// Events this reader missed.
    Lost,
    /// A guest debug-register slot placed late (`guest-dr-late`).
    GuestDrLate,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Hit => "hit",
            EventKind::Plan => "plan",
            EventKind::State => "state",
            EventKind::Lost => "lost",
            EventKind::GuestDrLate => "guest-dr-late",
        }
    }
}

/// One event in the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingEvent {
    /// Its sequence number, from 1, without gaps (the SSE `id:`).
    pub seq: u64,
    /// Its type.
    pub kind: EventKind,
    /// Its JSON (the SSE `data:`), one line.
    pub data: Arc<str>,
}

/// What a reader gets after its cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Events it missed because they left the ring before it read them.
    pub lost: u64,
    /// The events after the cursor (and after the lost ones), oldest first.
    pub events: Vec<RingEvent>,
    /// No event will follow: the VM has stopped and the ring is closed.
    pub closed: bool,
}

struct State {
    events: VecDeque<RingEvent>,
    next_seq: u64,
    closed: bool,
}

/// The bounded ring of recent events.
pub struct EventRing {
    capacity: usize,
    state: Mutex<State>,
    grew: Condvar,
}

impl EventRing {
    /// A ring that keeps the last `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        EventRing {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                events: VecDeque::new(),
                next_seq: 1,
                closed: false,
            }),
            grew: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event, dropping the oldest if full; returns its sequence number.
    pub fn push(&self, kind: EventKind, data: impl Into<Arc<str>>) -> u64 {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        if s.events.len() == self.capacity {
            s.events.pop_front();
        }
        s.events.push_back(RingEvent {
            seq,
            kind,
            data: data.into(),
        });
        drop(s);
        self.grew.notify_all();
        seq
    }

    /// No more events: readers get `closed` once they have read everything.
    pub fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }

    /// Whether [`EventRing::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The sequence number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// The events after `cursor` (a sequence number; 0 for all the ring still has), up to
    /// `max`, waiting up to `timeout` for one if there is none yet.
    pub fn read_after(&self, cursor: u64, max: usize, timeout: Duration) -> Batch {
        let mut s = self.lock();
        if s.next_seq - 1 <= cursor && !s.closed {
            s = self
                .grew
                .wait_timeout_while(s, timeout, |s| s.next_seq - 1 <= cursor && !s.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let oldest = s.events.front().map_or(s.next_seq, |e| e.seq);
        let lost = oldest.saturating_sub(cursor + 1);
        let events: Vec<RingEvent> = s
            .events
            .iter()
            .filter(|e| e.seq > cursor)
            .take(max)
            .cloned()
            .collect();
        let closed = s.closed && events.last().is_none_or(|e| e.seq == s.next_seq - 1);
        Batch {
            lost,
            events,
            closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn a_reader_gets_every_event_in_order() {
        let r = EventRing::new(8);
        for i in 0..3 {
            r.push(EventKind::Hit, format!("{{\"n\":{i}}}"));
        }
        let b = r.read_after(0, 100, NOW);
        assert_eq!(b.lost, 0);
        assert_eq!(
            b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(r.read_after(3, 100, NOW).events.is_empty());
    }

    #[test]
    fn a_reader_that_fell_behind_learns_how_many_it_lost() {
        let r = EventRing::new(4);
        for _ in 0..10 {
            r.push(EventKind::Hit, "{}");
        }
        let b = r.read_after(2, 100, NOW);
        // 3..=6 left the ring; 7..=10 remain.
        assert_eq!(b.lost, 4);
        assert_eq!(b.events.first().map(|e| e.seq), Some(7));
    }

    #[test]
    fn closed_only_once_everything_was_read() {
        let r = EventRing::new(4);
        r.push(EventKind::State, "{}");
        r.push(EventKind::State, "{}");
        r.close();
        let b = r.read_after(0, 1, NOW);
        assert!(!b.closed);
        assert!(r.read_after(1, 1, NOW).closed);
    }
}
