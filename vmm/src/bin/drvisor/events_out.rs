//! The command line's client of the event bus: one writer thread for `--events FILE` (or
//! stderr), fed by the hit callbacks, which only publish.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use drvisor::events::{
    spawn_writer, Event, EventBus, PageTraps, WriterOptions, WriterReport, DEFAULT_CAPACITY,
};
use drvisor::run_control::RunControl;
use drvisor::Outcome;

use crate::Failure;

/// Test-only: the capacity of the writer's view (to force an overflow).
const CAPACITY_VAR: &str = "DRVISOR_EVENT_QUEUE";
/// Test-only: milliseconds the writer sleeps before each batch (to force an overflow).
const STALL_VAR: &str = "DRVISOR_EVENT_STALL_MS";

/// Where the events go, opened before the VM is built so a bad path is a usage error.
pub struct Sink {
    name: String,
    out: Box<dyn Write + Send>,
}

/// Opens `--events FILE`, or stderr.
pub fn open(path: Option<&std::path::Path>) -> Result<Sink, Failure> {
    Ok(match path {
        None => Sink {
            name: "stderr".into(),
            out: Box::new(std::io::stderr()),
        },
        Some(path) => Sink {
            name: path.display().to_string(),
            out: Box::new(std::fs::File::create(path).map_err(|e| {
                Failure::usage(format!(
                    "--events {}: cannot create it: {e}",
                    drvisor::quote::cut(&path.display().to_string())
                ))
            })?),
        },
    })
}

/// The running writer and the bus it reads.
pub struct EventsOut {
    bus: Arc<EventBus<Event>>,
    writer: JoinHandle<WriterReport>,
    sink: String,
}

impl EventsOut {
    /// Starts the writer on `sink`, reading its own view of `bus`. A write error ends the run
    /// through `control`.
    pub fn start(
        sink: Sink,
        bus: Arc<EventBus<Event>>,
        control: Arc<RunControl>,
    ) -> Result<EventsOut, Failure> {
        let capacity = knob(CAPACITY_VAR).unwrap_or(DEFAULT_CAPACITY as u64) as usize;
        let options = WriterOptions {
            stall: Duration::from_millis(knob(STALL_VAR).unwrap_or(0)),
        };
        let name = sink.name.clone();
        let writer = spawn_writer(
            bus.subscribe_lossless(capacity),
            sink.out,
            options,
            move |e| {
                control.finish(Outcome::EventsUnwritable {
                    sink: name,
                    message: e.to_string(),
                })
            },
        )
        .map_err(|e| Failure::vmm(format!("cannot start the event writer: {e}")))?;
        Ok(EventsOut {
            bus,
            writer,
            sink: sink.name,
        })
    }

    /// Publishes the page engine's trap counts.
    pub fn page_traps(&self, traps: u64, false_traps: u64) {
        self.bus
            .publish(Event::PageTraps(PageTraps::new(traps, false_traps)));
    }

    /// Closes the bus and waits until everything queued is written. A write error (during the
    /// run or now) turns `outcome` into `EventsUnwritable`, unless the run already ended so.
    pub fn finish(self, outcome: Outcome) -> Outcome {
        self.bus.close();
        let report = self.writer.join().unwrap_or_else(|_| WriterReport {
            error: Some(std::io::Error::other("the event writer panicked")),
            ..Default::default()
        });
        tracing::debug!(
            "events: {} written, {} reported lost",
            report.written,
            report.lost
        );
        match report.error {
            Some(e) if !matches!(outcome, Outcome::EventsUnwritable { .. }) => {
                Outcome::EventsUnwritable {
                    sink: self.sink,
                    message: e.to_string(),
                }
            }
            _ => outcome,
        }
    }
}

fn knob(var: &str) -> Option<u64> {
    std::env::var(var).ok()?.parse().ok()
}
