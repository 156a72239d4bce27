//! The stream's client of the event bus: one thread that moves each event from its own bounded
//! view of the bus into the ring `GET /events` replays from. A loss on the bus becomes a `lost`
//! event in the ring, so no reader ever sees a silent gap.

use std::sync::Arc;
use std::thread::JoinHandle;

use drvisor_api::rest::LostEvent;
use drvisor_api::ring::{EventKind, EventRing};

use crate::events::{line_json, Event, EventBus, Record, DEFAULT_CAPACITY};

/// Starts the feeder; it ends when the bus closes.
pub fn spawn(bus: &EventBus<Event>, ring: Arc<EventRing>) -> std::io::Result<JoinHandle<()>> {
    let mut view = bus.subscribe(DEFAULT_CAPACITY);
    std::thread::Builder::new()
        .name("drvisor-stream".into())
        .spawn(move || {
            crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Helper);
            while let Some(record) = view.recv() {
                match record {
                    Record::Event(e) => {
                        let kind = match &*e.event {
                            Event::Hit(_) => EventKind::Hit,
                            Event::Plan(_) => EventKind::Plan,
                            Event::State(_) => EventKind::State,
                            // The end-of-run page counts are a file record only.
                            Event::PageTraps(_) => continue,
                            Event::GuestDrLate(_) => EventKind::GuestDrLate,
                        };
                        if let Ok(json) = line_json(&e) {
                            ring.push(kind, json);
                        }
                    }
                    Record::Lost(count) => {
                        let lost = LostEvent {
                            event: drvisor_api::EventName::Lost,
                            count,
                        };
                        if let Ok(json) = serde_json::to_string(&lost) {
                            ring.push(EventKind::Lost, json);
                        }
                    }
                }
            }
        })
}
