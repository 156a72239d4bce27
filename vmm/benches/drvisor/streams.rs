//! `GET /vm` beside 1000 open `GET /events` streams, on the real `drvisor` binary: p50 and p99
//! with no stream and with 1000, their ratio, and the server's thread count in both states
//! (`/proc/PID/status`). The VM is `--paused`, so no event flows: what is measured is the
//! cost of streams that wait.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::measure::{ratio, us};
use crate::rest::{percentile, Res, Served};

/// Open event streams.
const STREAMS: usize = 1000;
/// `GET /vm` requests timed in each state.
const REQUESTS: usize = 1000;

fn threads(pid: u32) -> Res<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "no Threads: line".into())
}

fn open_stream(sock: &std::path::Path) -> Res<BufReader<UnixStream>> {
    let mut c = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    c.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("GET /events: {line:?}"));
    }
    Ok(r)
}

/// Sorted `GET /vm` latencies.
fn vm_latencies(s: &Served) -> Res<Vec<Duration>> {
    let mut v = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        s.client.vm().map_err(|e| format!("GET /vm: {e}"))?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v)
}

fn measure() -> Res<()> {
    let s = Served::start(&["--paused"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.client.vm().is_err() {
        if Instant::now() > deadline {
            return Err("the API never answered".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = s.child.id();
    let idle = vm_latencies(&s)?;
    let threads_idle = threads(pid)?;
    let streams = (0..STREAMS)
        .map(|_| open_stream(&s.sock))
        .collect::<Res<Vec<_>>>()?;
    std::thread::sleep(Duration::from_secs(1));
    let busy = vm_latencies(&s)?;
    let threads_busy = threads(pid)?;
    drop(streams);
    let (p50a, p99a) = (percentile(&idle, 50.0), percentile(&idle, 99.0));
    let (p50b, p99b) = (percentile(&busy, 50.0), percentile(&busy, 99.0));
    println!("streams: GET /vm over the Unix socket, {REQUESTS} requests, VM paused");
    println!("  | open /events streams | p50 | p99 | drvisor threads |");
    println!("  |---|---|---|---|");
    println!(
        "  | 0 | {:.0} µs | {:.0} µs | {threads_idle} |",
        us(p50a),
        us(p99a)
    );
    println!(
        "  | {STREAMS} | {:.0} µs | {:.0} µs | {threads_busy} |",
        us(p50b),
        us(p99b)
    );
    println!(
        "  | ratio | {:.2} | {:.2} | +{} |",
        ratio(p50b, p50a),
        ratio(p99b, p99a),
        threads_busy.saturating_sub(threads_idle)
    );
    let _ = s.client.stop();
    Ok(())
}

/// Prints the figures (errors are printed, not asserted).
pub fn run() {
    if let Err(e) = measure() {
        println!("streams: {e}");
    }
}
