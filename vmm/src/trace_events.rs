//! A run's events file (`--events`, JSON lines) as the Trace Event Format that Perfetto
//! (ui.perfetto.dev) and chrome://tracing open: one track per vCPU with its hits as instants,
//! and a track for the VM with pauses as slices and plan changes, losses and late guest slots
//! as markers. `drvisor trace EVENTS.jsonl -o trace.json` writes it.
//!
//! Pure: lines in, one JSON document out. Times are the events' `ns` (since the run's start),
//! in the format's microseconds.

use serde_json::{json, Map, Value};

/// The process id every event is shown under (one VM per file).
const PID: u64 = 1;
/// The VM's own track, after any vCPU's.
const VM_TRACK: u64 = 100_000;

/// Why an events file cannot be converted. Each names the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A line is not a JSON object.
    #[error(
        "line {line}: not a JSON object ({why}); give the file `drvisor run --events FILE` wrote"
    )]
    NotJson {
        /// 1-based.
        line: usize,
        /// serde's reason.
        why: String,
    },
    /// A line has no `event` name, or an event lacks a field it always has.
    #[error("line {line}: a `{event}` event without `{field}`; give the file `drvisor run --events FILE` wrote")]
    Missing {
        /// 1-based.
        line: usize,
        /// The event's name (`?` if none).
        event: String,
        /// The field.
        field: &'static str,
    },
}

/// The trace document of `text`, an events file.
pub fn convert(text: &str) -> Result<Value, Error> {
    let mut out = vec![
        meta("process_name", None, "drvisor VM"),
        meta("thread_name", Some(VM_TRACK), "VM: pauses, plan, losses"),
    ];
    let mut vcpus = std::collections::BTreeSet::new();
    let mut paused = false;
    let mut last_us = 0.0f64;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let v: Map<String, Value> = serde_json::from_str(raw).map_err(|e| Error::NotJson {
            line,
            why: e.to_string(),
        })?;
        let event = v
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let missing = |field| Error::Missing {
            line,
            event: event.clone(),
            field,
        };
        // `lost` records carry no time: they sit where the loss was, so take the last time.
        let us = match v.get("ns").and_then(Value::as_u64) {
            Some(ns) => ns as f64 / 1000.0,
            None if event == "lost" => last_us,
            None => return Err(missing("ns")),
        };
        last_us = us;
        match event.as_str() {
            "hit" => {
                let vcpu = v
                    .get("vcpu")
                    .and_then(Value::as_u64)
                    .ok_or(missing("vcpu"))?;
                let label = v
                    .get("label")
                    .and_then(Value::as_str)
                    .ok_or(missing("label"))?;
                vcpus.insert(vcpu);
                let mut args = Map::new();
                for key in [
                    "id", "count", "kind", "engine", "slot", "action", "comm", "pid", "tgid",
                ] {
                    if let Some(x) = v.get(key) {
                        args.insert(key.into(), x.clone());
                    }
                }
                for key in ["rip", "addr"] {
                    if let Some(x) = v.get(key).and_then(Value::as_u64) {
                        args.insert(key.into(), json!(format!("{x:#x}")));
                    }
                }
                out.push(json!({
                    "name": label, "cat": "hit", "ph": "i", "s": "t",
                    "ts": us, "pid": PID, "tid": vcpu, "args": args,
                }));
            }
            "state" => {
                let state = v
                    .get("state")
                    .and_then(Value::as_str)
                    .ok_or(missing("state"))?;
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or("");
                match (state, paused) {
                    ("paused", false) => {
                        paused = true;
                        out.push(json!({
                            "name": format!("paused: {reason}"), "cat": "state", "ph": "B",
                            "ts": us, "pid": PID, "tid": VM_TRACK,
                        }));
                    }
                    ("running", true) => {
                        paused = false;
                        out.push(json!({
                            "name": "paused", "cat": "state", "ph": "E",
                            "ts": us, "pid": PID, "tid": VM_TRACK,
                            "args": {"resumed by": reason},
                        }));
                    }
                    _ => out.push(marker(us, format!("{state}: {reason}"), "state")),
                }
            }
            "plan" => {
                let change = v
                    .get("change")
                    .and_then(Value::as_str)
                    .ok_or(missing("change"))?;
                let bp = v.get("breakpoint").ok_or(missing("breakpoint"))?;
                let name = format!(
                    "{change} #{} {} ({})",
                    bp.get("id").and_then(Value::as_u64).unwrap_or(0),
                    bp.get("location").and_then(Value::as_str).unwrap_or("?"),
                    bp.get("state").and_then(Value::as_str).unwrap_or("?"),
                );
                out.push(marker(us, name, "plan"));
            }
            "lost" => {
                let count = v.get("count").and_then(Value::as_u64).unwrap_or(0);
                out.push(marker(us, format!("{count} events lost here"), "lost"));
            }
            "guest-dr-late" => {
                let vcpu = v.get("vcpu").and_then(Value::as_u64).unwrap_or(0);
                vcpus.insert(vcpu);
                out.push(json!({
                    "name": "guest debug slot placed late", "cat": "guest-dr-late", "ph": "i",
                    "s": "t", "ts": us, "pid": PID, "tid": vcpu, "args": v,
                }));
            }
            // Totals at the end (`page-traps`) and kinds this version does not know: in the
            // file, not on the timeline.
            _ => {}
        }
    }
    if paused {
        out.push(json!({
            "name": "paused", "cat": "state", "ph": "E", "ts": last_us, "pid": PID,
            "tid": VM_TRACK, "args": {"resumed by": "the run's end"},
        }));
    }
    for vcpu in vcpus {
        out.push(meta("thread_name", Some(vcpu), &format!("vCPU {vcpu}")));
    }
    Ok(json!({ "traceEvents": out, "displayTimeUnit": "ns" }))
}

fn meta(what: &str, tid: Option<u64>, name: &str) -> Value {
    let mut m = json!({ "name": what, "ph": "M", "pid": PID, "args": { "name": name } });
    if let Some(tid) = tid {
        m["tid"] = json!(tid);
    }
    m
}

fn marker(us: f64, name: String, cat: &str) -> Value {
    json!({ "name": name, "cat": cat, "ph": "i", "s": "p", "ts": us, "pid": PID, "tid": VM_TRACK })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"{"seq":1,"ns":1000,"event":"plan","change":"added","breakpoint":{"id":1,"location":"f","state":"armed"}}
{"seq":2,"ns":2500,"event":"hit","id":1,"label":"f","vcpu":1,"rip":4096,"addr":4096,"kind":"exec","action":"pause","count":1,"regs":{}}
{"seq":3,"ns":3000,"event":"state","state":"paused","reason":"hit #1 on vCPU 1"}
{"event":"lost","count":2}
{"seq":6,"ns":9000,"event":"state","state":"running","reason":"rest"}
{"seq":7,"ns":9500,"event":"page-traps","traps":0}
"#;

    fn events(doc: &Value) -> &Vec<Value> {
        doc["traceEvents"].as_array().unwrap()
    }

    #[test]
    fn hits_are_instants_on_their_vcpus_track_and_pauses_are_slices() {
        let doc = convert(RUN).unwrap();
        let ev = events(&doc);
        let hit = ev.iter().find(|e| e["cat"] == "hit").unwrap();
        assert_eq!(hit["tid"], 1);
        assert_eq!(hit["ts"], 2.5);
        assert_eq!(hit["args"]["rip"], "0x1000");
        let b = ev.iter().find(|e| e["ph"] == "B").unwrap();
        let e = ev.iter().find(|e| e["ph"] == "E").unwrap();
        assert_eq!((b["ts"].as_f64(), e["ts"].as_f64()), (Some(3.0), Some(9.0)));
        assert!(ev
            .iter()
            .any(|e| e["name"] == "2 events lost here" && e["ts"] == 3.0));
        assert!(ev
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == "vCPU 1"));
        assert!(ev
            .iter()
            .any(|e| e["cat"] == "plan" && e["name"] == "added #1 f (armed)"));
    }

    #[test]
    fn a_pause_left_open_is_closed_at_the_end() {
        let doc = convert(&RUN.replace(r#""state":"running""#, r#""state":"x""#)).unwrap();
        let ends = events(&doc).iter().filter(|e| e["ph"] == "E").count();
        assert_eq!(ends, 1);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(matches!(
            convert("{}\nnot json\n"),
            Err(Error::Missing { line: 1, .. })
        ));
        assert!(matches!(
            convert(r#"{"seq":1,"ns":1,"event":"hit"}"#),
            Err(Error::Missing {
                line: 1,
                field: "vcpu",
                ..
            })
        ));
        assert!(matches!(
            convert("[1]"),
            Err(Error::NotJson { line: 1, .. })
        ));
    }
}
