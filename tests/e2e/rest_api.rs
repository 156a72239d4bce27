//! The REST control plane on a real VM: `drvisor run --api-sock` driven by the real client
//! library, `curl --unix-socket` and `drvisor ctl`, with the guest's own counts as the truth.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvisor_api::client::{Client, EventStream};
use drvisor_api::rest::{EngineChoice, NewBreakpoint, NewWatchpoint, VmState, WatchAccess};
use drvisor_api::HitAction;

use crate::common::{ensure, read_events, temp_path, Failed, Trial, DRVISOR};

pub fn trials() -> Vec<Trial> {
    let mut t = vec![
        Trial::test("rest::errors_and_socket_mode", errors_and_socket_mode),
        Trial::test("rest::ctl_and_curl_drive_a_paused_vm", ctl_and_curl),
        Trial::test("rest::delete_stops_the_hits", delete_stops_the_hits),
        Trial::test(
            "rest::watch_added_mid_run_sees_every_later_write",
            watch_added_mid_run,
        ),
        Trial::test("rest::pause_action_with_an_instant_resume", pause_and_resume),
    ];
    for vcpus in [1, 4] {
        t.push(Trial::test(
            format!("rest::paused_start_catches_the_first_call_{vcpus}_vcpus"),
            move || paused_start_catches_every_call(vcpus),
        ));
    }
    t
}

/// A `drvisor run` with the control plane on a fresh socket.
struct Served {
    child: Child,
    sock: PathBuf,
    events: PathBuf,
    client: Client,
}

impl Served {
    fn start(args: &[&str]) -> Result<Served, Failed> {
        let sock = temp_path("api.sock");
        let events = temp_path("api-events.jsonl");
        let child = Command::new(DRVISOR)
            .args(["run", "--api-sock"])
            .arg(&sock)
            .arg("--events")
            .arg(&events)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn drvisor: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err("the API socket never appeared".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let client = Client::unix(&sock).map_err(|e| format!("client: {e}"))?;
        Ok(Served {
            child,
            sock,
            events,
            client,
        })
    }

    /// Waits for the run to end: its exit code, stdout and stderr.
    fn finish(&mut self) -> Result<(i32, String, String), Failed> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(s) = self.child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("the run did not end".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        ensure(!self.sock.exists(), || {
            "the socket file is still there after exit".into()
        })?;
        Ok((status.code().unwrap_or(-1), out, err))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.events);
    }
}

/// Every event of a stream until it ends (the VM stopped): (kind, JSON).
fn drain(stream: EventStream) -> Vec<(String, serde_json::Value)> {
    stream
        .filter_map(Result::ok)
        .map(|e| {
            let v = serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null);
            (e.kind, v)
        })
        .collect()
}

fn guest_calls(out: &str, target: u32) -> Option<u64> {
    let needle = format!("scenario=exec target={target} calls=");
    out.lines()
        .find_map(|l| l.split(&needle).nth(1))
        .and_then(|n| n.trim().parse().ok())
}

fn hits_of(events: &[(String, serde_json::Value)], id: u32) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|(k, v)| k == "hit" && v["id"] == id)
        .map(|(_, v)| v)
        .collect()
}

/// `--paused`, a breakpoint set over the API, then resume: the stream reports every call the
/// guest counts, the very first one included, and exactly the hits `--events` wrote, in order.
fn paused_start_catches_every_call(vcpus: usize) -> Result<(), Failed> {
    let n = vcpus.to_string();
    let mut served = Served::start(&["--paused", "--scenario", "exec", "--vcpus", &n])?;
    let c = &served.client;
    ensure(c.vm()?.state == VmState::Paused, || "not paused at start".into())?;
    let bp = c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: None,
        action: HitAction::Continue,
    })?;
    let stream = c.events(Some(0), true)?;
    c.resume()?;
    let events = drain(stream);
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let calls = guest_calls(&out, 0).ok_or_else(|| format!("no calls line\n{out}"))?;
    let hits = hits_of(&events, bp.id);
    ensure(hits.len() as u64 == calls && calls > 0, || {
        format!("{} hits over the stream, the guest counted {calls} calls", hits.len())
    })?;
    ensure(hits[0]["count"] == 1, || "the first call was not caught".into())?;
    let written = read_events(&served.events)?;
    let file_hits: Vec<&serde_json::Value> =
        written.iter().filter(|e| e["event"] == "hit").collect();
    ensure(file_hits == hits, || {
        format!(
            "the stream's hits differ from --events ({} vs {})",
            hits.len(),
            file_hits.len()
        )
    })?;
    ensure(
        events
            .last()
            .is_some_and(|(k, v)| k == "state" && v["state"] == "stopped"),
        || format!("the stream did not end with the stop: {:?}", events.last()),
    )
}

/// After `DELETE` returns, the guest runs on and nothing more is reported.
fn delete_stops_the_hits() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "exec", "--cmdline", "count=20000"])?;
    let c = &served.client;
    let bp = c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_1".into(),
        vcpu: None,
        action: HitAction::Continue,
    })?;
    let mut stream = c.events(Some(0), true)?;
    c.resume()?;
    // Some hits, then the delete.
    let mut seen = 0;
    for e in stream.by_ref() {
        if e.map_err(|e| e.to_string())?.kind == "hit" {
            seen += 1;
            if seen == 20 {
                break;
            }
        }
    }
    c.remove_breakpoint(bp.id)?;
    let gone = c.breakpoint(bp.id);
    ensure(gone.as_ref().err().and_then(|e| e.status()) == Some(404), || {
        format!("GET after DELETE: {gone:?}")
    })?;
    let events = drain(stream);
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let calls = guest_calls(&out, 1).ok_or_else(|| format!("no calls line\n{out}"))?;
    let total = seen + hits_of(&events, bp.id).len() as u64;
    ensure(total < calls / 2, || {
        format!("{total} hits of {calls} calls: the hits did not stop at the delete")
    })?;
    let removed = events
        .iter()
        .position(|(k, v)| k == "plan" && v["change"] == "removed");
    ensure(removed.is_some(), || "no plan event for the removal".into())
}

/// A page watch added while the guest writes: its hits are exactly the writes after it was
/// armed, with no gap, up to the last.
fn watch_added_mid_run() -> Result<(), Failed> {
    let count = 30_000u64;
    let mut served = Served::start(&[
        "--paused",
        "--scenario",
        "write",
        "--cmdline",
        &format!("count={count}"),
    ])?;
    let c = &served.client;
    c.resume()?;
    // Wait until the guest is surely writing, reading its variable through the API.
    let read = || -> Result<u64, Failed> {
        let m = c.memory(&drvisor_api::rest::MemoryQuery {
            gpa: None,
            gva: Some("drv_watch_u32".into()),
            len: 4,
        })?;
        let bytes: Vec<u8> = (0..4)
            .map(|i| u8::from_str_radix(&m.hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        Ok(u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while read()? < 10 {
        ensure(Instant::now() < deadline, || "the guest never wrote".into())?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let stream = c.events(Some(0), true)?;
    let w = c.add_watchpoint(&NewWatchpoint {
        location: "drv_watch_u32".into(),
        access: WatchAccess::Write,
        len: Some(4),
        vcpu: None,
        action: HitAction::Continue,
        engine: EngineChoice::Page,
    })?;
    let events = drain(stream);
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let values: Vec<u64> = hits_of(&events, w.id)
        .iter()
        .filter_map(|h| h["access"]["value"].as_u64())
        .collect();
    ensure(!values.is_empty(), || {
        format!("no hits: the guest finished before the watch was armed\n{out}")
    })?;
    let first = values[0];
    let expected: Vec<u64> = (first..=count).collect();
    ensure(values == expected, || {
        format!(
            "hits {}..{} ({} of them), wanted every write from {first} to {count}",
            values[0],
            values[values.len() - 1],
            values.len()
        )
    })
}

/// The `pause` action, answered by a resume the moment the stream shows the pause: every hit
/// pauses, and no resume is lost (a lost one would leave the VM paused until the timeout).
fn pause_and_resume() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "exec", "--cmdline", "count=30"])?;
    let c = &served.client;
    let bp = c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_2".into(),
        vcpu: None,
        action: HitAction::Pause,
    })?;
    let stream = c.events(Some(0), true)?;
    c.resume()?;
    let mut pauses = 0;
    for e in stream {
        let e = e.map_err(|e| e.to_string())?;
        if e.kind == "state" && e.data.contains("\"paused\"") {
            pauses += 1;
            c.resume()?;
        }
        if e.kind == "state" && e.data.contains("\"stopped\"") {
            break;
        }
    }
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let calls = guest_calls(&out, 2).unwrap_or(0);
    ensure(pauses == calls && calls == 30, || {
        format!("{pauses} pauses for {calls} calls of #{}", bp.id)
    })
}

fn curl(sock: &Path, args: &[&str]) -> Result<(u16, String), Failed> {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .args(args)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

fn has_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

/// Every client mistake has its status and code, and the socket is the owner's only.
fn errors_and_socket_mode() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "exec"])?;
    let mode = std::fs::metadata(&served.sock)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    ensure(mode & 0o777 == 0o600, || format!("socket mode {:o}", mode & 0o777))?;
    let c = &served.client;
    let status = |r: Result<drvisor_api::rest::Breakpoint, drvisor_api::client::ClientError>| {
        r.err().map(|e| (e.status(), e.code().map(str::to_owned)))
    };
    let unknown = status(c.add_breakpoint(&NewBreakpoint {
        location: "no_such_symbol".into(),
        vcpu: None,
        action: HitAction::Continue,
    }));
    ensure(
        unknown == Some((Some(422), Some("unknown-symbol".into()))),
        || format!("unknown symbol: {unknown:?}"),
    )?;
    let no_vcpu = status(c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: Some(7),
        action: HitAction::Continue,
    }));
    ensure(no_vcpu.as_ref().and_then(|s| s.0) == Some(422), || {
        format!("vCPU 7 of 1: {no_vcpu:?}")
    })?;
    let missing = c.breakpoint(99).err().and_then(|e| e.status());
    ensure(missing == Some(404), || format!("unknown id: {missing:?}"))?;
    if has_curl() {
        let (code, body) = curl(&served.sock, &["-XPOST", "-d", "{\"location\":", "http://x/breakpoints"])?;
        ensure(code == 400 && body.contains("\"code\""), || {
            format!("malformed JSON: {code} {body}")
        })?;
        let (code, _) = curl(
            &served.sock,
            &["-XPOST", "-H", "content-type: application/json", "-d", "{\"location\":\"drv_target_0\",\"colour\":1}", "http://x/breakpoints"],
        )?;
        ensure(code == 400, || format!("unknown field: {code}"))?;
        let (code, body) = curl(&served.sock, &["http://x/vm"])?;
        ensure(code == 200 && body.contains("\"vcpus\":1"), || {
            format!("GET /vm: {code} {body}")
        })?;
    } else {
        println!("  rest::errors_and_socket_mode: no curl here; the client checks ran");
    }
    c.resume()?;
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))
}

/// `drvisor ctl` drives a paused VM: a breakpoint added and listed, registers read while
/// paused and refused while running, the run resumed.
fn ctl_and_curl() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "exec", "--cmdline", "count=5"])?;
    let sock = served.sock.to_str().unwrap_or_default().to_owned();
    let ctl = |args: &[&str]| -> Result<(i32, String, String), Failed> {
        let out = Command::new(DRVISOR)
            .args(["ctl", "--sock", &sock])
            .args(args)
            .output()
            .map_err(|e| format!("ctl: {e}"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, out, err) = ctl(&["break", "add", "drv_target_3"])?;
    ensure(code == 0 && out.contains("\"owner\": \"api\""), || {
        format!("break add: {code} {out} {err}")
    })?;
    let (code, out, _) = ctl(&["break", "list"])?;
    ensure(code == 0 && out.contains("drv_target_3"), || {
        format!("break list: {code} {out}")
    })?;
    let (code, out, err) = ctl(&["regs", "0"])?;
    ensure(code == 0 && out.contains("\"rip\""), || {
        format!("regs while paused: {code} {out} {err}")
    })?;
    let (code, _, err) = ctl(&["break", "add", "no_such_symbol"])?;
    ensure(code != 0 && err.contains("unknown-symbol"), || {
        format!("unknown symbol: {code} {err}")
    })?;
    let (code, _, err) = ctl(&["resume"])?;
    ensure(code == 0, || format!("resume: {code} {err}"))?;
    let (code, out, err) = served.finish()?;
    ensure(code == 0 && guest_calls(&out, 3) == Some(5), || {
        format!("exit {code}\n{out}{err}")
    })
}
