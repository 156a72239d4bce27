//! The one writer of a JSON-lines sink (the `--events` file or stderr): a thread that reads its
//! own view of the bus and writes in batches, in `seq` order.
//!
//! It reads a lossless view ([`super::EventBus::subscribe_lossless`]): the record loses
//! nothing, and when it falls [`super::DEFAULT_CAPACITY`] events behind, the vCPUs wait for it.
//! Publishers racing each other may queue events a place or two apart; the writer holds an
//! event back until every earlier number has come (see [`InOrder`]), so the lines are in `seq`
//! order.
//!
//! Each event becomes one line with its sequence number and time first:
//! `{"seq":7,"ns":1234567,"event":"hit",...}` (`ns`: nanoseconds since the run's start).
//! A loss becomes `{"event":"lost","count":N}`. The writer takes whatever is queued (up to
//! [`MAX_BATCH`] records), writes it through one buffer and flushes once, so a burst of hits
//! costs one `write` and the file is current whenever the queue is empty.
//!
//! A sink that fails (a full disk, `/dev/full`, a closed pipe) is an error, not a reason to
//! drop events quietly: the writer stops at the first failure, calls `on_error` once (which ends
//! the run), and returns the error. Whatever was written before stays intact.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::bus::{Record, RecvTimeoutError, Sequenced, Subscription};

/// How long an event waits for an earlier number that has not come (a publisher preempted
/// between numbering and queueing it) before it is written anyway.
const GAP_WAIT: Duration = Duration::from_millis(200);

/// The most events held back for an earlier number.
const MAX_HELD: usize = 64 * 1024;

/// The most records one batch writes before it flushes.
pub const MAX_BATCH: usize = 4096;

/// What the writer did.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Events written.
    pub written: u64,
    /// Events reported lost (the sum of the `lost` records written).
    pub lost: u64,
    /// The write error that stopped it, if one did.
    pub error: Option<io::Error>,
}

/// How the writer runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterOptions {
    /// Sleep this long before each batch: only to force overflows in tests.
    pub stall: Duration,
}

#[derive(Serialize)]
struct Line<'a, T> {
    seq: u64,
    ns: u64,
    #[serde(flatten)]
    event: &'a T,
}

/// One event as the JSON of its line (no newline): `{"seq":N,"ns":T,...}`, as every client
/// shows it.
pub fn line_json<T: Serialize>(event: &Sequenced<T>) -> serde_json::Result<String> {
    serde_json::to_string(&Line {
        seq: event.seq,
        ns: event.ns,
        event: &*event.event,
    })
}

/// Starts the writer thread on `view`, writing to `out`. It ends when the bus closes (after
/// writing everything queued) or at the first write error, after calling `on_error` with it.
pub fn spawn_writer<T, F>(
    view: Subscription<T>,
    out: Box<dyn Write + Send>,
    options: WriterOptions,
    on_error: F,
) -> io::Result<JoinHandle<WriterReport>>
where
    T: Serialize + Send + Sync + 'static,
    F: FnOnce(&io::Error) + Send + 'static,
{
    std::thread::Builder::new()
        .name("drvisor-events".into())
        .spawn(move || {
            crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Events);
            let mut report = WriterReport::default();
            if let Err(e) = write_all(view, out, options, &mut report) {
                on_error(&e);
                report.error = Some(e);
            }
            report
        })
}

fn write_all<T: Serialize>(
    mut view: Subscription<T>,
    out: Box<dyn Write + Send>,
    options: WriterOptions,
    report: &mut WriterReport,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut order = InOrder::new(view.first_seq());
    loop {
        let first = match view.recv_timeout(GAP_WAIT) {
            Ok(record) => record,
            // Nothing came: an earlier number that never comes must not hold the rest back.
            Err(RecvTimeoutError::Timeout) => {
                write_events(&mut out, order.release_all(), report)?;
                out.flush()?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if !options.stall.is_zero() {
            std::thread::sleep(options.stall);
        }
        let mut record = Some(first);
        let mut taken = 0;
        while let Some(r) = record.take() {
            match r {
                Record::Event(ev) => write_events(&mut out, order.push(ev), report)?,
                Record::Lost(count) => {
                    // The lost numbers will not come: what is held goes out before the record.
                    write_events(&mut out, order.release_all(), report)?;
                    write_record(&mut out, Record::<T>::Lost(count), report)?;
                }
            }
            taken += 1;
            if taken < MAX_BATCH {
                record = view.try_recv();
            }
        }
        out.flush()?;
    }
    write_events(&mut out, order.release_all(), report)?;
    out.flush()
}

fn write_events<T: Serialize>(
    out: &mut impl Write,
    events: Vec<Sequenced<T>>,
    report: &mut WriterReport,
) -> io::Result<()> {
    events
        .into_iter()
        .try_for_each(|ev| write_record(out, Record::Event(ev), report))
}

/// Puts events back in `seq` order: each is held until every earlier number has come.
pub(crate) struct InOrder<T> {
    next: u64,
    held: BTreeMap<u64, Sequenced<T>>,
}

impl<T> InOrder<T> {
    /// Expects `first` first.
    pub(crate) fn new(first: u64) -> Self {
        InOrder {
            next: first,
            held: BTreeMap::new(),
        }
    }

    /// Takes `ev`; returns the events now in order to write. One numbered before `next` (late,
    /// or from before the view existed) goes out at once.
    pub(crate) fn push(&mut self, ev: Sequenced<T>) -> Vec<Sequenced<T>> {
        if ev.seq < self.next {
            return vec![ev];
        }
        self.held.insert(ev.seq, ev);
        let mut ready = Vec::new();
        while let Some(ev) = self.held.remove(&self.next) {
            self.next += 1;
            ready.push(ev);
        }
        if self.held.len() > MAX_HELD {
            ready.extend(self.release_all());
        }
        ready
    }

    /// Everything held, in order, gaps and all.
    pub(crate) fn release_all(&mut self) -> Vec<Sequenced<T>> {
        let held = std::mem::take(&mut self.held);
        if let Some((&last, _)) = held.last_key_value() {
            self.next = self.next.max(last + 1);
        }
        held.into_values().collect()
    }
}

fn write_record<T: Serialize>(
    out: &mut impl Write,
    record: Record<T>,
    report: &mut WriterReport,
) -> io::Result<()> {
    match record {
        Record::Event(ev) => {
            let line = Line {
                seq: ev.seq,
                ns: ev.ns,
                event: &*ev.event,
            };
            serde_json::to_writer(&mut *out, &line)?;
            report.written += 1;
        }
        Record::Lost(count) => {
            serde_json::to_writer(
                &mut *out,
                &drvisor_api::rest::LostEvent {
                    event: drvisor_api::EventName::Lost,
                    count,
                },
            )?;
            report.lost += count;
        }
    }
    out.write_all(b"\n")
}
