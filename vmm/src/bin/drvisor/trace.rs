//! `drvisor trace EVENTS.jsonl [-o trace.json]`: a run's events as a Perfetto timeline
//! (`drvisor::trace_events`).

use std::io::Write;
use std::path::Path;

use drvisor::input_file::{self, Limit};
use drvisor::quote::cut;

use crate::Failure;

/// The largest events file read: a long run's record (a hit line is ~300 bytes).
const MAX_EVENTS: u64 = 4 << 30;

/// Converts `events` and writes the trace to `output` (stdout if `None`).
pub fn write(events: &Path, output: Option<&Path>) -> Result<u8, Failure> {
    let limit = Limit {
        bytes: MAX_EVENTS,
        why: "a sane maximum for an events file".into(),
    };
    let bytes = input_file::open("trace", events, limit)
        .and_then(|f| f.read())
        .map_err(|e| Failure::usage(e.to_string()))?;
    let path = events.display().to_string();
    let shown = cut(&path);
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Failure::usage(format!(
            "trace {shown}: not UTF-8 text ({e}); give the file `drvisor run --events FILE` wrote"
        ))
    })?;
    let doc = drvisor::trace_events::convert(text)
        .map_err(|e| Failure::usage(format!("trace {shown}: {e}")))?;
    let json = serde_json::to_vec(&doc).map_err(|e| Failure::vmm(format!("trace: {e}")))?;
    let count = doc["traceEvents"].as_array().map_or(0, Vec::len);
    match output {
        Some(path) => {
            std::fs::write(path, &json).map_err(|e| {
                Failure::usage(format!(
                    "trace -o {}: {e}",
                    cut(&path.display().to_string())
                ))
            })?;
            crate::announce::say(format!(
                "wrote {count} trace events to {}: open it in ui.perfetto.dev or chrome://tracing",
                path.display()
            ));
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) ends quietly, as other tools do.
            let _ = out.write_all(&json).and_then(|()| out.write_all(b"\n"));
        }
    }
    Ok(0)
}
