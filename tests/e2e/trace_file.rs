//! `drvisor trace`: a run's events file as a Perfetto timeline, read back as JSON.

use crate::common::{drvisor, ensure, temp_path, Failed, Trial};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "trace::every_hit_is_an_instant_on_its_vcpus_track",
            every_hit_on_its_track,
        ),
        Trial::test(
            "trace::a_file_that_is_not_events_is_refused_by_line",
            bad_file,
        ),
    ]
}

fn every_hit_on_its_track() -> Result<(), Failed> {
    let (events, trace) = (temp_path("trace-events.jsonl"), temp_path("trace.json"));
    let (ev, tr) = (
        events.to_str().unwrap_or_default(),
        trace.to_str().unwrap_or_default(),
    );
    let run = drvisor(&[
        "run",
        "--scenario",
        "smp",
        "--vcpus",
        "2",
        "--break",
        "drv_target_0",
        "--events",
        ev,
    ]);
    run.expect_code(0)?;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let hits: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "hit").collect();
    ensure(hits.len() == 200, || {
        format!("{} hits, not 200", hits.len())
    })?;
    ensure(lines.iter().all(|l| l["ns"].is_u64()), || {
        "an event line without its time (`ns`)".into()
    })?;

    let converted = drvisor(&["trace", ev, "-o", tr]);
    converted.expect_code(0)?;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace)?)?;
    let all = doc["traceEvents"]
        .as_array()
        .ok_or("no traceEvents array")?;
    let instants: Vec<&serde_json::Value> = all.iter().filter(|e| e["cat"] == "hit").collect();
    ensure(instants.len() == hits.len(), || {
        format!("{} hit instants for {} hits", instants.len(), hits.len())
    })?;
    for (hit, instant) in hits.iter().zip(&instants) {
        let want_ts = hit["ns"].as_u64().unwrap_or(0) as f64 / 1000.0;
        ensure(
            instant["tid"] == hit["vcpu"]
                && instant["ph"] == "i"
                && instant["ts"].as_f64() == Some(want_ts)
                && instant["args"]["count"] == hit["count"],
            || format!("{instant} does not show {hit}"),
        )?;
    }
    for vcpu in 0..2 {
        ensure(
            all.iter().any(|e| {
                e["ph"] == "M" && e["tid"] == vcpu && e["args"]["name"] == format!("vCPU {vcpu}")
            }),
            || format!("no track named for vCPU {vcpu}"),
        )?;
    }
    ensure(all.iter().any(|e| e["cat"] == "plan"), || {
        "no plan marker".into()
    })?;
    let _ = std::fs::remove_file(&events);
    let _ = std::fs::remove_file(&trace);
    Ok(())
}

fn bad_file() -> Result<(), Failed> {
    let path = temp_path("not-events.jsonl");
    std::fs::write(&path, "{\"seq\":1,\"ns\":5,\"event\":\"hit\"}\n")?;
    let run = drvisor(&["trace", path.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&path);
    run.expect_code(2)?;
    ensure(
        run.stderr.contains("line 1: a `hit` event without `vcpu`"),
        || run.to_string(),
    )?;
    let run = drvisor(&["trace", "/dev/zero"]);
    run.expect_code(2)?;
    ensure(run.stderr.contains("not a regular file"), || {
        run.to_string()
    })
}
