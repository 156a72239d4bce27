//! The event bus: every hit and state change leaves the vCPU thread once, here, with a sequence
//! number, and each client reads it through a bounded view of its own.
//!
//! - [`EventBus::publish`] never waits for a lossy view's reader: it numbers the event and
//!   offers it to every view with a send into that view's bounded queue (whose lock a reader
//!   holds only to take one event out). A full queue of a lossy view
//!   ([`EventBus::subscribe`], the REST stream) does not slow the publisher (a vCPU thread): the
//!   view counts the loss. A full queue of a lossless view ([`EventBus::subscribe_lossless`],
//!   the `--events` record) makes the publisher wait until its reader has taken one event: the
//!   record loses nothing, and a vCPU waits at most as long as its writer takes for that.
//! - A [`Subscription`] hands out the events in its queue and, before the next event after a
//!   loss, one [`Record::Lost`] with the number of events it missed. Nothing is dropped
//!   silently. The sequence numbers show where the gap was.
//! - [`EventBus::close`] ends every view: readers drain what is queued, then see the end.
//!
//! Several publishers (vCPU threads) may number events in one order and queue them in another,
//! by a few places at most; a reader that needs the order sorts by `seq`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub use std::sync::mpsc::RecvTimeoutError;
use std::sync::mpsc::{TryRecvError, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::queue::{self, Receiver, Sender};

/// One event as the bus numbered it.
#[derive(Debug)]
pub struct Sequenced<T> {
    /// The bus's sequence number, from 1, over all events of the bus.
    pub seq: u64,
    /// When it was published: nanoseconds since the bus was made (the run's start).
    pub ns: u64,
    /// The event, shared by every view.
    pub event: Arc<T>,
}

impl<T> Clone for Sequenced<T> {
    fn clone(&self) -> Self {
        Sequenced {
            seq: self.seq,
            ns: self.ns,
            event: self.event.clone(),
        }
    }
}

/// What a view reads.
#[derive(Debug)]
pub enum Record<T> {
    /// The next event.
    Event(Sequenced<T>),
    /// This view's queue was full and it missed this many events since the last `Lost`.
    Lost(u64),
}

struct View<T> {
    tx: Sender<Sequenced<T>>,
    loss: Arc<Loss>,
    /// A full queue makes the publisher wait instead of losing the event.
    lossless: bool,
}

/// What one view missed and has not reported yet.
#[derive(Default)]
struct Loss {
    count: AtomicU64,
    /// The highest sequence number missed: the `Lost` record goes before the first later event.
    last_seq: AtomicU64,
}

/// A bounded, numbered broadcast of events of type `T`.
pub struct EventBus<T> {
    /// What event times count from.
    start: Instant,
    next_seq: AtomicU64,
    /// Written only to subscribe and to close; every publish takes it for reading.
    views: RwLock<Vec<View<T>>>,
    closed: AtomicBool,
}

impl<T> Default for EventBus<T> {
    fn default() -> Self {
        EventBus {
            start: Instant::now(),
            next_seq: AtomicU64::new(0),
            views: RwLock::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }
}

impl<T: Send + Sync> EventBus<T> {
    /// A bus with no views yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new view that holds at most `capacity` unread events (at least 1). It sees the events
    /// published from now on. A view whose reader went away costs one failed non-blocking send
    /// per publish until the bus closes.
    pub fn subscribe(&self, capacity: usize) -> Subscription<T> {
        self.view(capacity, false)
    }

    /// A view that loses nothing: when its `capacity` unread events are queued, publishers wait
    /// for its reader. For the record of a run (the `--events` file), never for a client that
    /// may stop reading.
    pub fn subscribe_lossless(&self, capacity: usize) -> Subscription<T> {
        self.view(capacity, true)
    }

    fn view(&self, capacity: usize, lossless: bool) -> Subscription<T> {
        let (tx, rx) = queue::bounded(capacity);
        let loss = Arc::new(Loss::default());
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        // Publishes numbered before this are not offered to it.
        let first_seq = self.next_seq.load(Ordering::Relaxed) + 1;
        if !self.closed.load(Ordering::Acquire) {
            views.push(View {
                tx,
                loss: loss.clone(),
                lossless,
            });
        }
        Subscription {
            rx,
            loss,
            lost_total: 0,
            pending: None,
            first_seq,
        }
    }

    /// Numbers `event` and offers it to every view; returns its sequence number. A lossy view
    /// whose queue is full counts the event as lost; a lossless one makes this wait for its
    /// reader (which ends when the reader goes away).
    pub fn publish(&self, event: T) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = Arc::new(event);
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        for view in views.iter() {
            let item = Sequenced {
                seq,
                ns,
                event: event.clone(),
            };
            if view.lossless {
                // Fails only once the reader is gone: then nobody is left to tell.
                let _ = view.tx.send(item);
                continue;
            }
            match view.tx.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    // The sequence first, so a reader that sees the count sees this loss's place.
                    view.loss.last_seq.fetch_max(seq, Ordering::AcqRel);
                    view.loss.count.fetch_add(1, Ordering::AcqRel);
                }
                // The reader is gone: nobody is left to tell.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        seq
    }

    /// How many events were published.
    pub fn published(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Ends every view: each reader gets what is queued and its last `Lost`, then the end.
    /// Later publishes are numbered but reach nobody.
    pub fn close(&self) {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Release);
        views.clear();
    }
}

/// One client's bounded view of the bus.
pub struct Subscription<T> {
    rx: Receiver<Sequenced<T>>,
    loss: Arc<Loss>,
    lost_total: u64,
    /// An event held back behind the `Lost` record that precedes it.
    pending: Option<Sequenced<T>>,
    /// The first sequence number offered to this view.
    first_seq: u64,
}

impl<T> Subscription<T> {
    fn take_lost(&mut self) -> Option<Record<T>> {
        let n = self.loss.count.swap(0, Ordering::AcqRel);
        (n > 0).then(|| {
            self.lost_total += n;
            Record::Lost(n)
        })
    }

    /// The record for an event just taken from the queue: the event, or first the loss that
    /// happened before it.
    fn order(&mut self, ev: Sequenced<T>) -> Record<T> {
        if self.loss.count.load(Ordering::Acquire) > 0
            && ev.seq > self.loss.last_seq.load(Ordering::Acquire)
        {
            if let Some(lost) = self.take_lost() {
                self.pending = Some(ev);
                return lost;
            }
        }
        Record::Event(ev)
    }

    /// The next record, waiting for one; `None` once the bus is closed and everything was read.
    pub fn recv(&mut self) -> Option<Record<T>> {
        if let Some(ev) = self.pending.take() {
            return Some(Record::Event(ev));
        }
        match self.rx.try_recv() {
            Ok(ev) => return Some(self.order(ev)),
            // Everything queued was read: a loss is reported now rather than after the next
            // event, which may be long in coming.
            Err(_) => {
                if let Some(lost) = self.take_lost() {
                    return Some(lost);
                }
            }
        }
        match self.rx.recv() {
            Ok(ev) => Some(self.order(ev)),
            Err(_) => self.take_lost(),
        }
    }

    /// The next record if one is ready now; `None` if none is, or the bus is closed and drained.
    pub fn try_recv(&mut self) -> Option<Record<T>> {
        if let Some(ev) = self.pending.take() {
            return Some(Record::Event(ev));
        }
        match self.rx.try_recv() {
            Ok(ev) => Some(self.order(ev)),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => self.take_lost(),
        }
    }

    /// Like [`recv`](Self::recv), giving up after `timeout`: `Err(Closed)` once the bus is
    /// closed and drained, `Err(Timeout)` if nothing came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Record<T>, RecvTimeoutError> {
        if let Some(r) = self.try_recv() {
            return Ok(r);
        }
        match self.rx.recv_timeout(timeout) {
            Ok(ev) => Ok(self.order(ev)),
            Err(e) => self.take_lost().ok_or(e),
        }
    }

    /// The first sequence number this view was offered: every later one reaches a lossless
    /// view, though publishers racing each other may queue them a place or two apart.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Every event this view has reported lost so far.
    pub fn lost_total(&self) -> u64 {
        self.lost_total
    }
}
