//! The soak: every kind of client at once on a 4-vCPU guest, for `DRVISOR_SOAK_SECS` seconds
//! (default 60; a longer run is the benchmark, see BENCHMARKS.md). While the `soak` guest calls
//! its targets and writes its variables on every vCPU:
//! - four REST clients add and remove breakpoints and watches, at the kept addresses and
//!   elsewhere;
//! - gdb is attached with an `hbreak` that stops the VM at every call of `drv_target_3`;
//! - ten event-stream readers are connected, three of which never read.
//!
//! The four hardware slots are exactly taken: the kept breakpoint, the two churned ones (a slot
//! each, even at the kept address) and gdb's, which is refused rather than left pending when a
//! fifth would be needed. The watches are the page engine's.
//!
//! Then the kept breakpoint's and the kept watch's counts equal the guest's own counts exactly,
//! the `--events` file has every hit inside its breakpoint's `added` and `removed` and loses
//! nothing, every reading stream is numbered without a silent gap, and drvisor's resident memory
//! stays flat.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drvisor_api::client::Client;
use drvisor_api::rest::{EngineChoice, NewBreakpoint, NewWatchpoint, WatchAccess};
use drvisor_api::HitAction;

use crate::common::{ensure, read_events, skipped, temp_path, Failed, Trial};
use crate::one_door::check_brackets;
use crate::rest_api::Served;

pub fn trials() -> Vec<Trial> {
    let name = "live_changes::soak_every_client_at_once_4_vcpus";
    match Command::new("gdb").arg("--version").output() {
        Ok(out) if out.status.success() => vec![Trial::test(name, soak)],
        _ => vec![skipped(name, "no gdb here (apt-get install gdb)")],
    }
}

/// How long the guest runs under the load.
fn soak_time() -> Duration {
    let secs = std::env::var("DRVISOR_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// What one churning client adds and removes, over and over.
#[derive(Clone, Copy)]
enum Churn {
    Break(&'static str),
    PageWatch(&'static str),
}

fn churn(sock: std::path::PathBuf, what: Churn, stop: Arc<AtomicBool>, n: Arc<AtomicU64>) {
    let Ok(c) = Client::unix(&sock) else { return };
    while !stop.load(Ordering::Relaxed) {
        let added = match what {
            Churn::Break(at) => c.add_breakpoint(&NewBreakpoint {
                location: at.into(),
                vcpu: None,
                action: HitAction::Continue,
                capture: None,
                condition: None,
            }),
            Churn::PageWatch(at) => c.add_watchpoint(&NewWatchpoint {
                location: at.into(),
                access: WatchAccess::Write,
                len: None,
                vcpu: None,
                action: HitAction::Continue,
                engine: EngineChoice::Page,
                capture: None,
                condition: None,
            }),
        };
        // The VM ends under the churn: then any call may fail, and that is the end.
        let Ok(bp) = added else { return };
        if c.remove_breakpoint(bp.id).is_err() {
            return;
        }
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// A stream reader: (events read, lost reported), failing on a gap no `lost` explains or a
/// number out of order.
fn read_stream(sock: std::path::PathBuf) -> Result<(u64, u64), String> {
    let c = Client::unix(&sock).map_err(|e| e.to_string())?;
    let stream = c.events(None, true).map_err(|e| e.to_string())?;
    let (mut read, mut lost, mut last) = (0u64, 0u64, None::<u64>);
    let mut lost_since = false;
    for e in stream {
        let e = e.map_err(|e| e.to_string())?;
        if e.kind == "lost" {
            lost_since = true;
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
            lost += v["count"].as_u64().unwrap_or(0);
            continue;
        }
        let Some(seq) = e.id else { continue };
        if let Some(last) = last {
            if seq <= last || (seq != last + 1 && !lost_since) {
                return Err(format!(
                    "stream: seq {seq} after {last} with no lost event between"
                ));
            }
        }
        (last, lost_since) = (Some(seq), false);
        read += 1;
    }
    Ok((read, lost))
}

/// drvisor's resident set in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn guest_number(out: &str, key: &str) -> Result<u64, Failed> {
    out.lines()
        .find_map(|l| l.split(key).nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no `{key}` line from the guest\n{out}").into())
}

fn soak() -> Result<(), Failed> {
    let gdb_sock = temp_path("soak-gdb.sock");
    let gdb_at = format!("unix:{}", gdb_sock.display());
    // A small stream ring, full within seconds: after that, memory that still grows is a leak.
    let env = [("DRVISOR_STREAM_RING", "4096")];
    let mut served = Served::start_with(
        &[
            "--scenario",
            "soak",
            "--vcpus",
            "4",
            "--break",
            "drv_target_0",
            "--watch",
            "drv_watch_u64",
            "--engine",
            "page",
            "--gdb",
            &gdb_at,
            "--quiet",
        ],
        &env,
    )?;
    let pid = served.pid();
    let result = load_and_check(&mut served, &gdb_sock, pid);
    result.map_err(|e| served.explain(e))
}

fn load_and_check(served: &mut Served, gdb_sock: &std::path::Path, pid: u32) -> Result<(), Failed> {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut churns = Vec::new();
    let mut churners = Vec::new();
    for what in [
        Churn::Break("drv_target_0"),
        Churn::Break("drv_target_2"),
        Churn::PageWatch("drv_watch_u64"),
        Churn::PageWatch("drv_watch_u16"),
    ] {
        let n = Arc::new(AtomicU64::new(0));
        churns.push(n.clone());
        let (sock, stop) = (served.sock.clone(), stop.clone());
        churners.push(std::thread::spawn(move || churn(sock, what, stop, n)));
    }
    let readers: Vec<_> = (0..7)
        .map(|_| {
            let sock = served.sock.clone();
            std::thread::spawn(move || read_stream(sock))
        })
        .collect();
    // Three streams that never read: opened, then left alone until the end.
    let idle: Vec<_> = (0..3)
        .map(|_| served.client.events(None, true))
        .collect::<Result<_, _>>()?;
    let gdb = start_gdb(gdb_sock)?;

    let mut rss = Vec::new();
    while start.elapsed() < soak_time() {
        std::thread::sleep(Duration::from_secs(1));
        rss.extend(rss_kib(pid));
    }
    // The clients stop churning, then the guest is told to finish its iteration and report:
    // a guest that page-watch churn keeps out of the CPU most of the time on a loaded host
    // would otherwise take as long to end as the churn lets it.
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().map_err(|_| "a churner panicked")?;
    }
    let sent = send_signal(pid, "-USR2");
    ensure(sent, || "could not send SIGUSR2 to drvisor".into())?;
    if let Some(vm) = still_served(served, Duration::from_secs(240)) {
        let gdb_said = gdb.kill_and_tell();
        return Err(format!(
            "the VM did not end within 240 s of SIGUSR2; it says {vm}\n{gdb_said}"
        )
        .into());
    }
    let (code, out, err) = served.finish()?;
    let mut streamed = Vec::new();
    for r in readers {
        streamed.push(r.join().map_err(|_| "a reader panicked")??);
    }
    drop(idle);
    let gdb_out = gdb.finish()?;
    ensure(code == 0, || {
        format!("exit {code}: the guest's own counts disagree\n{out}{err}")
    })?;

    let calls = guest_number(&out, "scenario=soak target=0 calls=")?;
    let writes = guest_number(&out, "scenario=soak writes=")?;
    let events = read_events(&served.events)?;
    check_brackets(&events)?;
    let hits_of = |id: u64| {
        events
            .iter()
            .filter(|e| e["event"] == "hit" && e["id"] == id)
            .count() as u64
    };
    for (id, (what, want)) in [("drv_target_0", calls), ("drv_watch_u64", writes)]
        .into_iter()
        .enumerate()
    {
        let got = hits_of(id as u64 + 1);
        ensure(got == want, || {
            format!("kept #{} {what}: {got} hits for the guest's {want}", id + 1)
        })?;
    }
    let churned: Vec<u64> = churns.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    ensure(churned.iter().all(|&n| n >= 5), || {
        format!("a client hardly churned: {churned:?} add/remove pairs")
    })?;
    let gdb_stops = gdb_out.matches("soak-gdb-stop").count();
    ensure(gdb_stops >= 3, || {
        format!("gdb stopped {gdb_stops} times at its hbreak\n{gdb_out}")
    })?;
    ensure(streamed.iter().all(|(read, _)| *read > 0), || {
        format!("a stream reader read nothing: {streamed:?}")
    })?;
    // Flat: after the first quarter (the stream's ring and the bus fill up), the resident set
    // grows by at most a tenth and 16 MiB more.
    let settled = rss.get(rss.len() / 4).copied().unwrap_or(0);
    let last = rss.last().copied().unwrap_or(0);
    ensure(last <= settled + settled / 10 + 16 * 1024, || {
        format!(
            "drvisor's RSS grew from {settled} KiB to {last} KiB: {rss:?} ({} events)",
            events.len()
        )
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "soak {secs:.0} s: guest {} iterations ({:.0}/s), {} kept hits, {} hit events in all; \
         churns {churned:?} ({:.1}/s); gdb stops {gdb_stops} ({} bytes of gdb output); streams read {:?}; RSS {settled} \
         -> {last} KiB",
        calls,
        calls as f64 / secs,
        calls + writes,
        events.iter().filter(|e| e["event"] == "hit").count(),
        churned.iter().sum::<u64>() as f64 / secs,
        gdb_out.len(),
        streamed
    );
    Ok(())
}

/// What the VM says of itself if it still answers its API after `timeout`; `None` once the
/// API is gone (the VM ended).
fn still_served(served: &Served, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if served.client.vm().is_err() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    served.client.vm().ok().map(|vm| format!("{vm:?}"))
}

/// `kill SIGNAL pid`, through kill(1).
fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The real gdb, attached to the stub, with the packets it exchanges logged to a file. Its
/// output is read while it runs: it prints a line at each of its thousands of stops, and a gdb
/// blocked on a full pipe never sends the `continue` that the paused VM waits for.
struct Gdb {
    child: std::process::Child,
    output: crate::common::Drained,
    packets: std::path::PathBuf,
}

/// gdb attached to the stub, with an `hbreak` on `drv_target_3` that counts its stops and
/// continues at each, until the VM ends.
fn start_gdb(sock: &std::path::Path) -> Result<Gdb, Failed> {
    let elf = temp_path("soak-guest.elf");
    std::fs::write(&elf, drvisor::guest_image::ELF).map_err(|e| e.to_string())?;
    let script = temp_path("soak.gdb");
    let packets = temp_path("soak-gdb-packets.log");
    let text = format!(
        "set pagination off\nset confirm off\nset remotelogfile {}\ntarget remote {}\n\
         hbreak drv_target_3\ncommands\nsilent\necho soak-gdb-stop\\n\ncontinue\nend\n\
         continue\n",
        packets.display(),
        sock.display()
    );
    std::fs::write(&script, text).map_err(|e| e.to_string())?;
    let mut child = Command::new("gdb")
        .args(["-q", "-batch", "-nx", "-x"])
        .arg(&script)
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn gdb: {e}"))?;
    let output = crate::common::Drained::start(&mut child);
    Ok(Gdb {
        child,
        output,
        packets,
    })
}

impl Gdb {
    /// gdb's output once it has ended with the VM.
    fn finish(mut self) -> Result<String, Failed> {
        let run = self.output.wait(&mut self.child, Duration::from_secs(60))?;
        let _ = std::fs::remove_file(&self.packets);
        Ok(run.stdout + &run.stderr)
    }

    /// For a hung run: gdb's output and the last packets it exchanged, and gdb is killed.
    fn kill_and_tell(mut self) -> String {
        let threads = crate::common::thread_backtraces(self.child.id());
        let _ = self.child.kill();
        let said = match self.output.wait(&mut self.child, Duration::from_secs(10)) {
            Ok(run) => run.stdout + &run.stderr,
            Err(e) => format!("(gdb's output: {e:?})"),
        };
        let log = std::fs::read_to_string(&self.packets).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let last = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "gdb said:\n{}\ngdb's last packets ({} lines in all):\n{last}\ngdb's threads:\n{threads}",
            cut_tail(&said, 3000),
            lines.len()
        )
    }
}

/// The last `max` bytes of `text` (at a character boundary).
fn cut_tail(text: &str, max: usize) -> &str {
    let mut from = text.len().saturating_sub(max);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}
