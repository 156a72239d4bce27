//! The event ring `GET /events` serves: the last N events with their sequence numbers, so a
//! client can replay from `Last-Event-ID` or `?since=`. The VMM pushes (its feeder, which reads
//! the event bus, and the session's plan and state changes, under one short lock); any number
//! of readers follow with a cursor of their own. A reader that falls more than N behind learns
//! how many it missed (a `lost` record); it never slows a producer, which never waits for a
//! reader.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
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
    /// Async readers waiting for an event: woken (and removed) by the next push or the close.
    waiting: Vec<(u64, Waker)>,
    /// The id the next waiting [`Grown`] gets.
    next_waiter: u64,
}

impl State {
    fn has_after(&self, cursor: u64) -> bool {
        self.next_seq - 1 > cursor || self.closed
    }

    fn wake_all(&mut self) {
        for (_, w) in self.waiting.drain(..) {
            w.wake();
        }
    }
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
                waiting: Vec::new(),
                next_waiter: 0,
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
        s.wake_all();
        drop(s);
        self.grew.notify_all();
        seq
    }

    /// No more events: readers get `closed` once they have read everything.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.wake_all();
        drop(s);
        self.grew.notify_all();
    }

    /// Resolves once there is an event after `cursor` or the ring is closed: the async way to
    /// wait, holding no thread (a push wakes the task). Dropping it unregisters it.
    pub fn grown(&self, cursor: u64) -> Grown<'_> {
        Grown {
            ring: self,
            cursor,
            id: None,
        }
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

/// The future of [`EventRing::grown`].
pub struct Grown<'a> {
    ring: &'a EventRing,
    cursor: u64,
    /// Its place among the ring's waiting readers, while it has one.
    id: Option<u64>,
}

impl Future for Grown<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.ring.lock();
        if s.has_after(self.cursor) {
            return Poll::Ready(());
        }
        // A push drains the list: an id no longer there has to register again.
        if let Some(slot) = self
            .id
            .and_then(|id| s.waiting.iter_mut().find(|(i, _)| *i == id))
        {
            slot.1.clone_from(cx.waker());
        } else {
            let id = s.next_waiter;
            s.next_waiter += 1;
            s.waiting.push((id, cx.waker().clone()));
            drop(s);
            self.id = Some(id);
        }
        Poll::Pending
    }
}

impl Drop for Grown<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.ring.lock().waiting.retain(|(i, _)| *i != id);
        }
    }
}

impl std::fmt::Debug for Grown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grown")
            .field("cursor", &self.cursor)
            .finish()
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

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn an_async_reader_is_woken_by_a_push_and_leaves_nothing_behind() {
        let r = EventRing::new(4);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut g = Box::pin(r.grown(0));
        assert!(g.as_mut().poll(&mut cx).is_pending());
        assert!(g.as_mut().poll(&mut cx).is_pending(), "a second poll");
        assert_eq!(r.lock().waiting.len(), 1, "registered once");
        r.push(EventKind::Hit, "{}");
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(g.as_mut().poll(&mut cx).is_ready());
        // One waiting for more, then dropped: unregistered.
        let mut g = Box::pin(r.grown(1));
        assert!(g.as_mut().poll(&mut cx).is_pending());
        drop(g);
        assert!(r.lock().waiting.is_empty());
        // The close wakes too.
        let mut g = Box::pin(r.grown(1));
        assert!(g.as_mut().poll(&mut cx).is_pending());
        r.close();
        assert!(g.as_mut().poll(&mut cx).is_ready());
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
