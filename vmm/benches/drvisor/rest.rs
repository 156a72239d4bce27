//! The REST control plane (issue 8), on the real `drvisor` binary:
//!
//! - the latency of `POST /breakpoints` and `DELETE /breakpoints/{id}` while the `exec` guest
//!   runs on 1, 2 and 4 vCPUs, p50 and p99, as ratios to this run's bare `KVM_EXIT_IO`;
//! - hits per second delivered over `GET /events` (SSE), with the `lost` events counted, as a
//!   ratio to the hits per second of a plain `drvisor run --break --events FILE`.
//!
//! Errors are printed, never asserted: this is a measurement.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvisor_api::client::Client;
use drvisor_api::rest::{NewBreakpoint, VmState};
use drvisor_api::HitAction;

use crate::baseline::Baseline;
use crate::measure::{ratio, time, us};

const DRVISOR: &str = env!("CARGO_BIN_EXE_drvisor");

/// Add/delete pairs per vCPU count.
const CHANGES: usize = 200;
/// A guest loop long enough to outlast the changes; `POST /vm/stop` ends it.
const LONG_COUNT: u64 = 1_000_000_000;
/// Calls of each target in the hit-rate runs (each call of `drv_target_0` is one hit).
const HIT_COUNT: u64 = 10_000;
/// Never executed by the `exec` scenario: a change to the plan, and no hits.
const COLD_SYMBOL: &str = "drv_kfunc_1_nop5";

pub(crate) type Res<T> = Result<T, String>;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("drvisor-bench-{}-{name}", std::process::id()))
}

/// A `drvisor run --api-sock` child.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) sock: PathBuf,
    pub(crate) client: Client,
}

impl Served {
    pub(crate) fn start(args: &[&str]) -> Res<Served> {
        let sock = temp("api.sock");
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(DRVISOR)
            .args(["run", "--api-sock"])
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {DRVISOR}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err("the API socket never appeared".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let client = Client::unix(&sock).map_err(|e| format!("client: {e}"))?;
        Ok(Served {
            child,
            sock,
            client,
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Give a stopped VM a moment to exit by itself, then make sure.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// The `p`-th percentile (nearest rank) of sorted `v`.
pub(crate) fn percentile(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `CHANGES` add/delete pairs on a cold symbol while the `exec` guest runs on `vcpus` vCPUs:
/// (sorted add latencies, sorted delete latencies, whether the guest still ran at the end).
fn changes(vcpus: usize) -> Res<(Vec<Duration>, Vec<Duration>, bool)> {
    let n = vcpus.to_string();
    let count = format!("count={LONG_COUNT}");
    let served = Served::start(&[
        "--paused",
        "--scenario",
        "exec",
        "--cmdline",
        &count,
        "--vcpus",
        &n,
    ])?;
    let c = &served.client;
    c.resume().map_err(|e| format!("resume: {e}"))?;
    // Let every vCPU get into the guest.
    std::thread::sleep(Duration::from_millis(50));
    let req = NewBreakpoint {
        location: COLD_SYMBOL.into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
    };
    let mut adds = Vec::with_capacity(CHANGES);
    let mut deletes = Vec::with_capacity(CHANGES);
    for _ in 0..CHANGES {
        let t = Instant::now();
        let bp = c.add_breakpoint(&req).map_err(|e| format!("add: {e}"))?;
        adds.push(t.elapsed());
        let t = Instant::now();
        c.remove_breakpoint(bp.id)
            .map_err(|e| format!("delete: {e}"))?;
        deletes.push(t.elapsed());
    }
    let running = c.vm().is_ok_and(|v| v.state == VmState::Running);
    let _ = c.stop();
    adds.sort();
    deletes.sort();
    Ok((adds, deletes, running))
}

/// The `exec` guest under `--api-sock --paused`, optionally with a breakpoint on
/// `drv_target_0` set while paused, `/events` followed from `since=0`: (time from resume to the
/// stop event, hits, events lost).
fn sse_run(with_break: bool) -> Res<(Duration, u64, u64)> {
    let count = format!("count={HIT_COUNT}");
    let served = Served::start(&["--paused", "--scenario", "exec", "--cmdline", &count])?;
    let c = &served.client;
    if with_break {
        c.add_breakpoint(&NewBreakpoint {
            location: "drv_target_0".into(),
            vcpu: None,
            action: HitAction::Continue,
            capture: None,
            condition: None,
        })
        .map_err(|e| format!("add: {e}"))?;
    }
    let stream = c
        .events(Some(0), true)
        .map_err(|e| format!("events: {e}"))?;
    let start = Instant::now();
    c.resume().map_err(|e| format!("resume: {e}"))?;
    let (mut hits, mut lost) = (0u64, 0u64);
    let mut end = None;
    for e in stream {
        let e = e.map_err(|e| format!("stream: {e}"))?;
        match e.kind.as_str() {
            "hit" => hits += 1,
            "lost" => {
                lost += serde_json::from_str::<serde_json::Value>(&e.data)
                    .ok()
                    .and_then(|v| v["count"].as_u64())
                    .unwrap_or(1)
            }
            "state" if e.data.contains("\"stopped\"") => {
                end = Some(start.elapsed());
                break;
            }
            _ => {}
        }
    }
    let t = end.unwrap_or_else(|| start.elapsed());
    Ok((t, hits, lost))
}

/// A plain `drvisor run --scenario exec` (with `--break drv_target_0 --events FILE`, or
/// without): wall time of the process, and the hit lines written.
fn file_run(with_break: bool) -> Res<(Duration, u64)> {
    let file = temp("events.jsonl");
    let _ = std::fs::remove_file(&file);
    let count = format!("count={HIT_COUNT}");
    let mut cmd = Command::new(DRVISOR);
    cmd.args(["run", "--scenario", "exec", "--cmdline", &count])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if with_break {
        cmd.args(["--break", "drv_target_0", "--events"]).arg(&file);
    }
    let mut status = None;
    let t = time(|| status = Some(cmd.status()));
    match status {
        Some(Ok(s)) if s.success() => {}
        other => return Err(format!("drvisor run: {other:?}")),
    }
    let hits = std::fs::read_to_string(&file)
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("\"event\":\"hit\""))
                .count() as u64
        })
        .unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    Ok((t, hits))
}

/// Median of `runs` results of `f` by time, keeping that run's other figures.
fn median_run<T: Copy>(
    runs: usize,
    mut f: impl FnMut() -> Res<(Duration, T)>,
) -> Res<(Duration, T)> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(f()?);
    }
    v.sort_by_key(|r| r.0);
    Ok(v[v.len() / 2])
}

fn latencies(base: &Baseline) {
    println!(
        "REST breakpoint changes while the `exec` guest runs ({CHANGES} add/delete pairs of `{COLD_SYMBOL}`, never executed; ratios to the bare IO exit, {:.3} us)",
        us(base.io_exit)
    );
    for vcpus in [1usize, 2, 4] {
        match changes(vcpus) {
            Ok((adds, deletes, running)) => {
                let line = |what: &str, v: &[Duration]| {
                    let (p50, p99) = (percentile(v, 50.0), percentile(v, 99.0));
                    println!(
                        "  {vcpus} vCPU(s) {what:<26} p50 {:>8.1} us = {:>6.1} IO exits   p99 {:>8.1} us = {:>6.1} IO exits",
                        us(p50),
                        ratio(p50, base.io_exit),
                        us(p99),
                        ratio(p99, base.io_exit),
                    );
                };
                line("POST /breakpoints", &adds);
                line("DELETE /breakpoints/{id}", &deletes);
                if !running {
                    println!("  {vcpus} vCPU(s): the guest was no longer running at the end; the figures may not be mid-run");
                }
            }
            Err(e) => println!("  {vcpus} vCPU(s): skipped, {e}"),
        }
    }
}

fn hit_rates() {
    println!("hits per second, `exec` guest, breakpoint on drv_target_0 ({HIT_COUNT} calls), medians of 5 runs");
    let sse = median_run(5, || sse_run(true).map(|(t, h, l)| (t, (h, l))));
    let sse_bare = median_run(5, || sse_run(false).map(|(t, _, _)| (t, ())));
    let file = median_run(5, || file_run(true));
    let file_bare = median_run(5, || file_run(false).map(|(t, _)| (t, ())));
    let (sse, sse_bare, file, file_bare) = match (sse, sse_bare, file, file_bare) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (a, b, c, d) => {
            println!(
                "  skipped: {:?} {:?} {:?} {:?}",
                a.err(),
                b.err(),
                c.err(),
                d.err()
            );
            return;
        }
    };
    let (t_sse, (sse_hits, lost)) = sse;
    let (t_file, file_hits) = file;
    let rate = |hits: u64, t: Duration| hits as f64 / t.as_secs_f64();
    let net = |t: Duration, bare: Duration| t.saturating_sub(bare).max(Duration::from_micros(1));
    let (sse_gross, file_gross) = (rate(sse_hits, t_sse), rate(file_hits, t_file));
    let (sse_net, file_net) = (
        rate(sse_hits, net(t_sse, sse_bare.0)),
        rate(file_hits, net(t_file, file_bare.0)),
    );
    println!(
        "  SSE (/events from since=0), resume to stop event: {sse_hits} hits, {lost} lost, {:>7.1} ms ({:>7.1} ms without the breakpoint)",
        us(t_sse) / 1e3,
        us(sse_bare.0) / 1e3
    );
    println!(
        "  --events FILE, process start to exit:            {file_hits} hits,          {:>7.1} ms ({:>7.1} ms without the breakpoint)",
        us(t_file) / 1e3,
        us(file_bare.0) / 1e3
    );
    println!(
        "  gross (hits / time above; the file side also pays process start and boot): SSE {sse_gross:>7.0} hits/s, file {file_gross:>7.0} hits/s, SSE / file = {:.2}",
        sse_gross / file_gross
    );
    println!(
        "  net (hits / extra time over the same run without the breakpoint):          SSE {sse_net:>7.0} hits/s, file {file_net:>7.0} hits/s, SSE / file = {:.2}",
        sse_net / file_net
    );
    if lost > 0 {
        println!("  the SSE figure is NOT valid: the stream lost {lost} events");
    }
    if sse_hits != HIT_COUNT || file_hits != HIT_COUNT {
        println!("  note: expected {HIT_COUNT} hits on each path");
    }
}

/// Prints the REST figures.
pub fn run(base: &Baseline) {
    latencies(base);
    hit_rates();
}
