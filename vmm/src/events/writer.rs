//! The one writer of a JSON-lines sink (the `--events` file or stderr): a thread that reads its
//! own view of the bus and writes in batches, so no vCPU ever waits for a file.
//!
//! Each event becomes one line with its sequence number first: `{"seq":7,"event":"hit",...}`.
//! A loss becomes `{"event":"lost","count":N}`. The writer takes whatever is queued (up to
//! [`MAX_BATCH`] records), writes it through one buffer and flushes once, so a burst of hits
//! costs one `write` and the file is current whenever the queue is empty.
//!
//! A sink that fails (a full disk, `/dev/full`, a closed pipe) is an error, not a reason to
//! drop events quietly: the writer stops at the first failure, calls `on_error` once (which ends
//! the run), and returns the error. Whatever was written before stays intact.

use std::io::{self, BufWriter, Write};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::bus::{Record, Subscription};

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
    #[serde(flatten)]
    event: &'a T,
}

/// One event as the JSON of its line (no newline): `{"seq":N,...}`, as every client shows it.
pub fn line_json<T: Serialize>(seq: u64, event: &T) -> serde_json::Result<String> {
    serde_json::to_string(&Line { seq, event })
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
    while let Some(first) = view.recv() {
        if !options.stall.is_zero() {
            std::thread::sleep(options.stall);
        }
        write_record(&mut out, first, report)?;
        for _ in 1..MAX_BATCH {
            let Some(next) = view.try_recv() else { break };
            write_record(&mut out, next, report)?;
        }
        out.flush()?;
    }
    out.flush()
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
