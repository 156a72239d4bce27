//! `GET /events`: order, replay from `since` and `Last-Event-ID`, the end of the stream, and
//! a stalled reader that learns exactly how much it lost without slowing the producer.

mod common;

use std::time::{Duration, Instant};

use common::serve_unix;
use drvisor_api::client::{EventStream, SseEvent};
use drvisor_api::ring::EventKind;

fn push_mixed(s: &common::Served) {
    s.stub.ring.push(EventKind::Hit, r#"{"event":"hit","n":1}"#);
    s.stub
        .ring
        .push(EventKind::Plan, r#"{"event":"plan","n":2}"#);
    s.stub
        .ring
        .push(EventKind::State, r#"{"event":"state","n":3}"#);
    s.stub.ring.push(EventKind::Hit, r#"{"event":"hit","n":4}"#);
    s.stub.ring.push(EventKind::Hit, r#"{"event":"hit","n":5}"#);
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id.unwrap()).collect()
}

fn take(stream: &mut EventStream, n: usize) -> Vec<SseEvent> {
    stream.by_ref().take(n).map(Result::unwrap).collect()
}

#[test]
fn events_come_in_order_with_id_kind_and_data() {
    let s = serve_unix(16);
    push_mixed(&s);
    let all: Vec<SseEvent> = s
        .client
        .events(Some(0), false)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids(&all), [1, 2, 3, 4, 5]);
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["hit", "plan", "state", "hit", "hit"]);
    assert_eq!(all[2].data, r#"{"event":"state","n":3}"#);
}

#[test]
fn without_a_start_only_new_events_come() {
    let s = serve_unix(16);
    push_mixed(&s);
    let mut stream = s.client.events(None, true).unwrap();
    s.stub.ring.push(EventKind::Hit, r#"{"n":6}"#);
    s.stub.ring.push(EventKind::Plan, r#"{"n":7}"#);
    assert_eq!(ids(&take(&mut stream, 2)), [6, 7]);
}

#[test]
fn since_replays_what_the_ring_still_has() {
    let s = serve_unix(16);
    push_mixed(&s);
    let mut stream = s.client.events(Some(3), true).unwrap();
    assert_eq!(ids(&take(&mut stream, 2)), [4, 5]);
    s.stub.ring.push(EventKind::Hit, "{}");
    assert_eq!(ids(&take(&mut stream, 1)), [6]);
    // A start beyond the newest event means only new ones.
    let mut ahead = s.client.events(Some(1000), true).unwrap();
    s.stub.ring.push(EventKind::Hit, "{}");
    assert_eq!(ids(&take(&mut ahead, 1)), [7]);
}

#[test]
fn last_event_id_replays_and_wins_over_since() {
    let s = serve_unix(16);
    push_mixed(&s);
    let mut stream = s
        .client
        .events_at("/events?since=4", &[("Last-Event-ID", "2")])
        .unwrap();
    assert_eq!(ids(&take(&mut stream, 3)), [3, 4, 5]);
}

#[test]
fn the_stream_ends_when_the_vm_stops() {
    let s = serve_unix(16);
    let stream = s.client.events(None, true).unwrap();
    s.stub.ring.push(EventKind::Hit, "{}");
    s.client.stop().unwrap();
    let rest: Vec<SseEvent> = stream.map(Result::unwrap).collect();
    assert_eq!(ids(&rest), [1, 2]);
    assert_eq!(rest[1].kind, "state");
}

/// Reads `stream` to its end, checking that ids have no gaps except where a `lost` event
/// accounts for them exactly; returns (events lost, lost events, the next id expected).
fn follow_to_end(stream: EventStream, pushes: u64) -> (u64, u32, u64) {
    let (mut next, mut lost, mut losses) = (1u64, 0u64, 0);
    for ev in stream {
        let ev = ev.unwrap();
        let id = ev.id.expect("every event has an id");
        if ev.kind == "lost" {
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(v["event"], "lost");
            let count = v["count"].as_u64().unwrap();
            assert!(count > 0);
            assert_eq!(
                id,
                next + count - 1,
                "a lost event's id is the last lost seq"
            );
            lost += count;
            losses += 1;
            next = id + 1;
        } else {
            assert_eq!(id, next, "events after a loss continue without gaps");
            if id <= pushes {
                assert!(ev.data.starts_with(&format!(r#"{{"n":{id},"#)));
            }
            next += 1;
        }
    }
    (lost, losses, next)
}

#[test]
fn a_stalled_reader_is_told_what_it_lost_and_never_slows_the_producer() {
    const CAPACITY: usize = 32;
    const PUSHES: u64 = 10 * CAPACITY as u64;
    let s = serve_unix(CAPACITY);
    // Big events, so the socket's and hyper's buffers fill long before the pushes end.
    let pad = "x".repeat(8 * 1024);
    // One reader reads nothing while the producer pushes 10x the ring; another keeps up.
    let stalled = s.client.events(Some(0), true).unwrap();
    let live = s.client.events(Some(0), true).unwrap();
    let live = std::thread::spawn(move || follow_to_end(live, PUSHES));
    let mut slowest = Duration::ZERO;
    for n in 1..=PUSHES {
        let started = Instant::now();
        s.stub
            .ring
            .push(EventKind::Hit, format!(r#"{{"n":{n},"pad":"{pad}"}}"#));
        slowest = slowest.max(started.elapsed());
        // A pace a live reader keeps up with.
        if n % 2 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(
        slowest < Duration::from_millis(100),
        "a push took {slowest:?}"
    );
    s.client.stop().unwrap(); // one more event, then the ring closes
    let end = PUSHES + 2;

    let (lost, losses, next) = follow_to_end(stalled, PUSHES);
    println!(
        "the stalled reader lost {lost} of {PUSHES} in {losses} gap(s); slowest push {slowest:?}"
    );
    assert_eq!(next, end, "the stream ran to the end");
    assert!(
        lost > 0,
        "the stalled reader lost nothing: the test did not stall it"
    );
    assert!(
        lost <= PUSHES - CAPACITY as u64,
        "lost {lost}, more than left the ring"
    );
    let (lost, _, next) = live.join().unwrap();
    assert_eq!(
        (lost, next),
        (0, end),
        "the reader that kept up lost events"
    );
}

#[test]
fn shutdown_ends_open_streams() {
    let s = serve_unix(16);
    let stream = s.client.events(None, true).unwrap();
    let reader = std::thread::spawn(move || stream.count());
    let started = Instant::now();
    s.handle.shutdown();
    assert!(started.elapsed() < Duration::from_secs(3));
    reader.join().unwrap();
}
