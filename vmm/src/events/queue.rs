//! One view's bounded queue: one sender (the bus), one receiver (the view's reader).
//!
//! `std::sync::mpsc::sync_channel(n)` allocates and touches its `n` slots when it is made:
//! half a megabyte for the `--events` writer's view of 16 Ki events, made at every start (about
//! 130 page faults before the guest runs). This queue holds what is queued and no more, and
//! answers with `std::sync::mpsc`'s error types so the bus reads as it did with a channel.
//!
//! The lock is held only to push or pop one event, never while a reader writes one out, so a
//! slow reader never slows a lossy publisher.

use std::collections::VecDeque;
use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct State<T> {
    items: VecDeque<T>,
    sender_alive: bool,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item is queued or the sender goes.
    filled: Condvar,
    /// Signalled when an item is taken or the receiver goes.
    drained: Condvar,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving half.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue that holds at most `capacity` items (at least 1).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
        }),
        filled: Condvar::new(),
        drained: Condvar::new(),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while the queue is full; fails once the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut state = self.0.lock();
        loop {
            if !state.receiver_alive {
                return Err(SendError(item));
            }
            if state.items.len() < self.0.capacity {
                state.items.push_back(item);
                self.0.filled.notify_one();
                return Ok(());
            }
            state = self
                .0
                .drained
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Queues `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.0.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Disconnected(item));
        }
        if state.items.len() >= self.0.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        self.0.filled.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_alive = false;
        self.0.filled.notify_all();
    }
}

impl<T> Receiver<T> {
    /// The next item if one is queued; `Disconnected` once the sender is gone and the queue is
    /// empty.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = self.0.lock();
        match state.items.pop_front() {
            Some(item) => {
                self.0.drained.notify_one();
                Ok(item)
            }
            None if state.sender_alive => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Disconnected),
        }
    }

    /// The next item, waiting for one; an error once the sender is gone and the queue is empty.
    pub fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.0.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                self.0.drained.notify_one();
                return Ok(item);
            }
            if !state.sender_alive {
                return Err(RecvError);
            }
            state = self.0.filled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`recv`](Self::recv), giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.0.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                self.0.drained.notify_one();
                return Ok(item);
            }
            if !state.sender_alive {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                // A timeout too long to represent: wait as `recv` does.
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            state = match deadline {
                Some(_) => {
                    self.0
                        .filled
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.0.filled.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_alive = false;
        // What was queued goes now, as a dropped channel's would.
        state.items.clear();
        drop(state);
        self.0.drained.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_keeps_the_order() {
        let (tx, rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn a_full_send_waits_for_the_reader() {
        let (tx, rx) = bounded(1);
        tx.send(1).unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            (rx.recv(), rx.recv())
        });
        tx.send(2).unwrap();
        assert_eq!(reader.join().unwrap(), (Ok(1), Ok(2)));
    }

    #[test]
    fn the_receiver_drains_then_sees_the_sender_gone() {
        let (tx, rx) = bounded(4);
        tx.send(1).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_sender_waiting_on_a_full_queue_fails_when_the_receiver_goes() {
        let (tx, rx) = bounded(1);
        tx.send(1).unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(rx);
        });
        assert_eq!(tx.send(2), Err(SendError(2)));
        assert!(matches!(tx.try_send(3), Err(TrySendError::Disconnected(3))));
        dropper.join().unwrap();
    }
}
