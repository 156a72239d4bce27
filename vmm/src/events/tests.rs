//! The bus and its writer, driven by plain threads: nothing lost while readers keep up, every
//! loss counted and reported in place, and a failing sink reported once with what came before
//! it intact.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::writer::InOrder;
use super::*;

fn drain<T>(view: &mut Subscription<T>) -> (Vec<u64>, Vec<u64>) {
    let (mut seqs, mut lost) = (Vec::new(), Vec::new());
    while let Some(r) = view.recv() {
        match r {
            Record::Event(ev) => seqs.push(ev.seq),
            Record::Lost(n) => lost.push(n),
        }
    }
    (seqs, lost)
}

#[test]
fn four_publishers_and_a_reader_see_every_number_once() {
    // Publishers in a tight loop outrun any reader, so the view holds everything: this pins the
    // numbering and the hand-over between threads. The rate the real hit path reaches is the
    // end-to-end test's business (tests/e2e/events.rs).
    const PER_THREAD: u64 = 50_000;
    let bus = Arc::new(EventBus::<u64>::new());
    let mut view = bus.subscribe(4 * PER_THREAD as usize);
    let reader = std::thread::spawn(move || drain(&mut view));
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    bus.publish(t * PER_THREAD + i);
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    bus.close();
    let (mut seqs, lost) = reader.join().unwrap();
    assert!(lost.is_empty(), "lost {lost:?}");
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=4 * PER_THREAD).collect::<Vec<_>>());
}

#[test]
fn a_full_view_counts_what_it_missed_and_reports_it_before_later_events() {
    let bus = EventBus::<&str>::new();
    let mut view = bus.subscribe(3);
    for _ in 0..10 {
        bus.publish("x");
    }
    // 1-3 were queued, 4-10 missed; then the reader catches up and 11 arrives.
    assert!(matches!(view.recv(), Some(Record::Event(e)) if e.seq == 1));
    assert!(matches!(view.recv(), Some(Record::Event(e)) if e.seq == 2));
    bus.publish("y");
    assert!(matches!(view.recv(), Some(Record::Event(e)) if e.seq == 3));
    assert!(matches!(view.recv(), Some(Record::Lost(7))));
    assert!(matches!(view.recv(), Some(Record::Event(e)) if e.seq == 11 && *e.event == "y"));
    bus.close();
    assert!(view.recv().is_none());
    assert_eq!(view.lost_total(), 7);
}

#[test]
fn publish_never_waits_for_a_stalled_reader() {
    let bus = EventBus::<u32>::new();
    let _stalled = bus.subscribe(1);
    let start = std::time::Instant::now();
    for i in 0..100_000 {
        bus.publish(i);
    }
    // Nothing reads: a blocking publish would never get here.
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(bus.published(), 100_000);
}

#[test]
fn each_view_is_bounded_on_its_own() {
    let bus = EventBus::<u32>::new();
    let mut slow = bus.subscribe(2);
    let mut fast = bus.subscribe(100);
    for i in 0..50 {
        bus.publish(i);
    }
    bus.close();
    let (seqs, lost) = drain(&mut fast);
    assert_eq!((seqs.len(), lost.len()), (50, 0));
    let (seqs, lost) = drain(&mut slow);
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(lost, vec![48]);
}

#[test]
fn a_view_subscribed_after_close_ends_at_once() {
    let bus = EventBus::<u32>::new();
    bus.close();
    let mut view = bus.subscribe(4);
    bus.publish(1);
    assert!(view.recv().is_none());
}

#[test]
fn recv_timeout_tells_a_quiet_bus_from_a_closed_one() {
    let bus = EventBus::<u32>::new();
    let mut view = bus.subscribe(4);
    assert_eq!(
        view.recv_timeout(Duration::from_millis(1)).err(),
        Some(RecvTimeoutError::Timeout)
    );
    bus.close();
    assert_eq!(
        view.recv_timeout(Duration::from_millis(1)).err(),
        Some(RecvTimeoutError::Disconnected)
    );
}

/// A sink that stores what it gets, and fails every write after `limit` bytes.
#[derive(Clone)]
struct Sink {
    bytes: Arc<Mutex<Vec<u8>>>,
    limit: usize,
    writes: Arc<AtomicUsize>,
}

impl Sink {
    fn new(limit: usize) -> Sink {
        Sink {
            bytes: Arc::default(),
            limit,
            writes: Arc::default(),
        }
    }
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.bytes.lock().unwrap();
        String::from_utf8(bytes.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut bytes = self.bytes.lock().unwrap();
        if bytes.len() + buf.len() > self.limit {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_writer_writes_numbered_lines_and_the_loss() {
    let bus = EventBus::new();
    let view = bus.subscribe(2);
    for i in 0..5u32 {
        bus.publish(Event::PageTraps(PageTraps::new(u64::from(i), 0)));
    }
    bus.close();
    let sink = Sink::new(usize::MAX);
    let writer = spawn_writer(
        view,
        Box::new(sink.clone()),
        WriterOptions::default(),
        |e| panic!("{e}"),
    )
    .unwrap();
    let report = writer.join().unwrap();
    assert_eq!((report.written, report.lost), (2, 3));
    let lines = sink.lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["event"], "page-traps");
    assert_eq!(lines[1]["seq"], 2);
    assert_eq!(lines[2], serde_json::json!({"event": "lost", "count": 3}));
}

#[test]
fn a_writer_batches_what_is_queued_into_one_write() {
    let bus = EventBus::new();
    let view = bus.subscribe(1000);
    for i in 0..500u64 {
        bus.publish(Event::PageTraps(PageTraps::new(i, i)));
    }
    bus.close();
    let sink = Sink::new(usize::MAX);
    let report = spawn_writer(
        view,
        Box::new(sink.clone()),
        WriterOptions::default(),
        |_| {},
    )
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(report.written, 500);
    // 500 short lines fit the 64 KiB buffer: one write for the whole batch.
    assert_eq!(sink.writes.load(Ordering::Relaxed), 1);
}

#[test]
fn a_failing_sink_is_reported_once_and_keeps_what_was_written() {
    let bus = Arc::new(EventBus::new());
    let view = bus.subscribe(4);
    let sink = Sink::new(200);
    let errors = Arc::new(AtomicUsize::new(0));
    let counted = errors.clone();
    let writer = spawn_writer(
        view,
        Box::new(sink.clone()),
        WriterOptions::default(),
        move |e| {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
            counted.fetch_add(1, Ordering::Relaxed);
        },
    )
    .unwrap();
    // One event at a time, each flushed on its own, until the sink is full.
    for i in 0..20u64 {
        bus.publish(Event::PageTraps(PageTraps::new(i, 0)));
        std::thread::sleep(Duration::from_millis(5));
    }
    bus.close();
    let report = writer.join().unwrap();
    assert_eq!(errors.load(Ordering::Relaxed), 1);
    assert_eq!(
        report.error.and_then(|e| e.raw_os_error()),
        Some(libc::ENOSPC)
    );
    let lines = sink.lines();
    assert!(!lines.is_empty() && lines.len() < 20);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["traps"], i as u64, "{line}");
    }
}

#[test]
fn a_lossless_view_makes_publishers_wait_and_loses_nothing() {
    let bus = Arc::new(EventBus::<u32>::new());
    let mut view = bus.subscribe_lossless(4);
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    bus.publish(p * 10_000 + i);
                }
            })
        })
        .collect();
    // A slow reader: the queue of 4 is full most of the time.
    let mut seqs = Vec::new();
    while seqs.len() < 20_000 {
        match view.recv() {
            Some(Record::Event(e)) => seqs.push(e.seq),
            other => panic!("{:?}", other.map(|_| "a loss")),
        }
        if seqs.len() % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for p in publishers {
        p.join().unwrap();
    }
    bus.close();
    assert!(view.recv().is_none());
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20_000).collect::<Vec<u64>>());
    assert_eq!(view.lost_total(), 0);
}

#[test]
fn a_lossless_view_whose_reader_is_gone_does_not_hold_publishers() {
    let bus = EventBus::<u32>::new();
    drop(bus.subscribe_lossless(1));
    for i in 0..1000 {
        bus.publish(i);
    }
    assert_eq!(bus.published(), 1000);
}

#[test]
fn in_order_holds_an_event_until_every_earlier_number_came() {
    let ev = |seq| Sequenced {
        ns: 0,
        seq,
        event: Arc::new(()),
    };
    let seqs = |v: Vec<Sequenced<()>>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let mut order = InOrder::new(5);
    assert_eq!(seqs(order.push(ev(6))), Vec::<u64>::new());
    assert_eq!(seqs(order.push(ev(8))), Vec::<u64>::new());
    assert_eq!(seqs(order.push(ev(5))), vec![5, 6]);
    assert_eq!(seqs(order.push(ev(7))), vec![7, 8]);
    // Late, or from before the view: out at once.
    assert_eq!(seqs(order.push(ev(3))), vec![3]);
    assert_eq!(seqs(order.push(ev(11))), Vec::<u64>::new());
    // A number that never comes is given up at release: the rest go out in order.
    assert_eq!(seqs(order.release_all()), vec![11]);
    assert_eq!(seqs(order.push(ev(12))), vec![12]);
}

#[test]
fn the_writer_writes_racing_publishers_in_seq_order() {
    let bus = Arc::new(EventBus::new());
    let view = bus.subscribe_lossless(8);
    let sink = Sink::new(usize::MAX);
    let writer = spawn_writer(
        view,
        Box::new(sink.clone()),
        WriterOptions::default(),
        |e| panic!("{e}"),
    )
    .unwrap();
    let publishers: Vec<_> = (0..4u64)
        .map(|p| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..2_000u64 {
                    bus.publish(Event::PageTraps(PageTraps::new(p, i)));
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    bus.close();
    let report = writer.join().unwrap();
    assert_eq!((report.written, report.lost), (8_000, 0));
    let seqs: Vec<u64> = sink
        .lines()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=8_000).collect::<Vec<u64>>());
}
