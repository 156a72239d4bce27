//! The REST control plane on a real VM: `drvisor run --api-sock` driven by the real client
//! library, `curl --unix-socket` and `drvisor ctl`, with the guest's own counts as the truth.

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
        Trial::test(
            "rest::pause_action_with_an_instant_resume",
            pause_and_resume,
        ),
        Trial::test(
            "rest::running_vm_states_and_stop",
            running_vm_states_and_stop,
        ),
        Trial::test("rest::tcp_needs_the_token", tcp_needs_the_token),
        Trial::test(
            "rest::second_server_on_a_live_socket_refused",
            second_server_refused,
        ),
        Trial::test("rest::stalled_reader_is_told_what_it_lost", stalled_reader),
        Trial::test(
            "rest::a_clean_end_is_no_listener_failure",
            a_clean_end_is_no_listener_failure,
        ),
    ];
    for vcpus in [1, 4] {
        t.push(Trial::test(
            format!("rest::paused_start_catches_the_first_call_{vcpus}_vcpus"),
            move || paused_start_catches_every_call(vcpus),
        ));
        t.push(Trial::test(
            format!("rest::delete_stops_the_hits_{vcpus}_vcpus"),
            move || delete_stops_the_hits(vcpus),
        ));
        t.push(Trial::test(
            format!("rest::watch_mid_run_sees_every_write_until_removed_{vcpus}_vcpus"),
            move || watch_added_mid_run(vcpus),
        ));
    }
    t
}

/// At the VM's end the listeners stop too, gracefully: that is no failure to report. Before the
/// biased select! in the server, about half of such runs (14 of 20 here) said `a listener
/// stopped serving before the VM's end: Ok(Ok(()))`; 20 runs of a short guest show it.
fn a_clean_end_is_no_listener_failure() -> Result<(), Failed> {
    for i in 0..20 {
        let sock = temp_path("clean-end.sock");
        let sock = sock.to_str().unwrap_or_default();
        let run = crate::common::drvisor(&["run", "--scenario", "hello", "--api-sock", sock]);
        run.expect_code(0)?;
        ensure(!run.stderr.contains("stopped serving"), || {
            format!("run {i} of 20: a clean end reported as a listener failure\n{run}")
        })?;
        ensure(!Path::new(sock).exists(), || {
            format!("run {i}: the socket {sock} is left behind")
        })?;
    }
    Ok(())
}

/// A `drvisor run` with the control plane on a fresh socket.
pub(crate) struct Served {
    child: Child,
    /// Its stdout and stderr, read as they come (taken at the end).
    output: Option<crate::common::Drained>,
    pub(crate) sock: PathBuf,
    pub(crate) events: PathBuf,
    pub(crate) client: Client,
}

impl Served {
    pub(crate) fn start(args: &[&str]) -> Result<Served, Failed> {
        Self::start_with(args, &[])
    }

    pub(crate) fn start_with(args: &[&str], env: &[(&str, &str)]) -> Result<Served, Failed> {
        let sock = temp_path("api.sock");
        let events = temp_path("api-events.jsonl");
        let mut child = Command::new(DRVISOR)
            .envs(env.iter().copied())
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
        let output = Some(crate::common::Drained::start(&mut child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err("the API socket never appeared".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let client = Client::unix(&sock).map_err(|e| format!("client: {e}"))?;
        // The file appears at bind, before the server listens (it sets the mode in between):
        // ready once a request is answered.
        while let Err(e) = client.vm() {
            if Instant::now() > deadline {
                return Err(format!("the API never answered: {e}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Served {
            child,
            output,
            sock,
            events,
            client,
        })
    }

    fn wait(&mut self, timeout: Duration) -> Result<crate::common::Run, Failed> {
        match self.output.take() {
            Some(output) => output.wait(&mut self.child, timeout),
            None => crate::common::wait_child(&mut self.child, timeout),
        }
    }

    /// drvisor's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `e`, with what became of drvisor: whether it still ran (then it is killed) or how it
    /// ended, and its output. For a failure in the middle of a conversation with the API.
    pub(crate) fn explain(&mut self, e: Failed) -> Failed {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("drvisor had ended: {status}"),
            _ => {
                let threads = crate::common::thread_backtraces(self.child.id());
                let _ = self.child.kill();
                format!("drvisor was still running (killed now); its threads:\n{threads}")
            }
        };
        let e = e.message().unwrap_or("failed").to_owned();
        match self.wait(Duration::from_secs(10)) {
            Ok(run) => format!("{e}\n{state}\n{run}").into(),
            Err(_) => format!("{e}\n{state}").into(),
        }
    }

    /// Waits for the run to end: its exit code, stdout and stderr.
    pub(crate) fn finish(&mut self) -> Result<(i32, String, String), Failed> {
        let run = self.wait(Duration::from_secs(300))?;
        ensure(!self.sock.exists(), || {
            "the socket file is still there after exit".into()
        })?;
        Ok((run.code, run.stdout, run.stderr))
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
    ensure(c.vm()?.state == VmState::Paused, || {
        "not paused at start".into()
    })?;
    let bp = c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: Some(16),
        condition: None,
    })?;
    let stream = c.events(Some(0), true)?;
    c.resume()?;
    let events = drain(stream);
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let calls = guest_calls(&out, 0).ok_or_else(|| format!("no calls line\n{out}"))?;
    let mut hits = hits_of(&events, bp.id);
    // In the bus's order: vCPUs publishing at once may queue a place or two apart.
    hits.sort_by_key(|h| h["seq"].as_u64());
    ensure(hits.len() as u64 == calls && calls > 0, || {
        format!(
            "{} hits over the stream, the guest counted {calls} calls",
            hits.len()
        )
    })?;
    ensure(hits[0]["count"] == 1, || {
        "the first call was not caught".into()
    })?;
    // `capture`: each hit carries 16 bytes of the stack from RSP, the first quadword the
    // return address into the caller.
    ensure(
        hits.iter().all(|h| {
            h["stack"]["addr"] == h["regs"]["rsp"]
                && h["stack"]["bytes"].as_str().is_some_and(|b| b.len() == 32)
        }),
        || format!("a hit without its 16 stack bytes: {}", hits[0]),
    )?;
    let written = read_events(&served.events)?;
    let mut file_hits: Vec<&serde_json::Value> =
        written.iter().filter(|e| e["event"] == "hit").collect();
    file_hits.sort_by_key(|h| h["seq"].as_u64());
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
fn delete_stops_the_hits(vcpus: usize) -> Result<(), Failed> {
    let n = vcpus.to_string();
    let mut served = Served::start(&[
        "--paused",
        "--scenario",
        "exec",
        "--cmdline",
        "count=20000",
        "--vcpus",
        &n,
    ])?;
    let c = &served.client;
    let bp = c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_1".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
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
    ensure(
        gone.as_ref().err().and_then(|e| e.status()) == Some(404),
        || format!("GET after DELETE: {gone:?}"),
    )?;
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

/// The step between two of `spin`'s writes to `drv_watch_u64` (write i stores i * STEP).
const SPIN_STEP: u64 = 0x0101_0101_0101_0101;

/// A page watch added while the guest writes, and removed while it still writes (`spin` writes
/// `drv_watch_u64` for ever): its hits are exactly the writes in between, with no gap, and
/// none from before it was armed or after its removal returned.
fn watch_added_mid_run(vcpus: usize) -> Result<(), Failed> {
    let n = vcpus.to_string();
    let mut served = Served::start(&["--paused", "--scenario", "spin", "--vcpus", &n])?;
    let c = &served.client;
    c.resume()?;
    // Which write the guest is at, read through the API (write i stores i * SPIN_STEP), through
    // the last vCPU's page tables.
    let read = || -> Result<u64, Failed> {
        let m = c.memory(&drvisor_api::rest::MemoryQuery {
            gpa: None,
            gva: Some("drv_watch_u64".into()),
            vcpu: Some(vcpus as u32 - 1),
            len: 8,
        })?;
        let bytes: Vec<u8> = (0..8)
            .map(|i| u8::from_str_radix(&m.hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        Ok(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let v = read()?;
        if v != 0 {
            break v;
        }
        ensure(Instant::now() < deadline, || "the guest never wrote".into())?;
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut stream = c.events(None, true)?;
    let w = c.add_watchpoint(&NewWatchpoint {
        location: "drv_watch_u64".into(),
        access: WatchAccess::Write,
        len: Some(8),
        vcpu: None,
        action: HitAction::Continue,
        engine: EngineChoice::Page,
        capture: None,
        condition: None,
    })?;
    let mut hits = 0;
    for e in stream.by_ref() {
        if e.map_err(|e| e.to_string())?.kind == "hit" {
            hits += 1;
            if hits == 2000 {
                break;
            }
        }
    }
    c.remove_breakpoint(w.id)?;
    let after = read()?;
    drop(stream);
    c.stop()?;
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    let values: Vec<u64> = read_events(&served.events)?
        .iter()
        .filter(|e| e["event"] == "hit" && e["id"] == w.id)
        .filter_map(|h| h["access"]["value"].as_u64())
        .collect();
    ensure(values.len() >= 2000, || format!("{} hits", values.len()))?;
    let gap = values
        .windows(2)
        .position(|p| p[1] != p[0].wrapping_add(SPIN_STEP));
    ensure(gap.is_none(), || {
        format!("a write was missed after hit {gap:?} of {}", values.len())
    })?;
    // In write numbers: the first hit after the write seen before the add, the last no later
    // than the one seen after the removal returned.
    let index = |v: u64| v.wrapping_mul(inverse(SPIN_STEP));
    let (first, last) = (index(values[0]), index(values[values.len() - 1]));
    ensure(first > index(before) && last <= index(after), || {
        format!(
            "hits of writes {first}..{last}; the guest was at write {} before the add and {} after the removal",
            index(before),
            index(after)
        )
    })
}

/// The inverse of an odd `a` modulo 2^64 (Newton's iteration).
fn inverse(a: u64) -> u64 {
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
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
        capture: None,
        condition: None,
    })?;
    let stream = c.events(Some(0), true)?;
    c.resume()?;
    let mut pauses = 0;
    for e in stream {
        let e = e.map_err(|e| e.to_string())?;
        // The hits' pauses, not the `--paused` start's.
        if e.kind == "state" && e.data.contains("\"paused\"") && e.data.contains("\"hit #") {
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
    ensure(mode & 0o777 == 0o600, || {
        format!("socket mode {:o}", mode & 0o777)
    })?;
    let c = &served.client;
    let status = |r: Result<drvisor_api::rest::Breakpoint, drvisor_api::client::ClientError>| {
        r.err().map(|e| (e.status(), e.code().map(str::to_owned)))
    };
    let unknown = status(c.add_breakpoint(&NewBreakpoint {
        location: "no_such_symbol".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
    }));
    ensure(
        unknown == Some((Some(422), Some("unknown-symbol".into()))),
        || format!("unknown symbol: {unknown:?}"),
    )?;
    // A variable is no place for an execution breakpoint; watching it is fine.
    let variable = status(c.add_breakpoint(&NewBreakpoint {
        location: "drv_watch_u64".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
    }));
    ensure(
        variable == Some((Some(422), Some("not-code".into()))),
        || format!("a variable as an exec breakpoint: {variable:?}"),
    )?;
    // Valid JSON whose location is not a valid address: unprocessable, as an unknown symbol.
    let bad_number = status(c.add_breakpoint(&NewBreakpoint {
        location: "0xZZ".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
    }));
    ensure(
        bad_number == Some((Some(422), Some("bad-location".into()))),
        || format!("0xZZ: {bad_number:?}"),
    )?;
    let no_vcpu = status(c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: Some(7),
        action: HitAction::Continue,
        capture: None,
        condition: None,
    }));
    ensure(no_vcpu.as_ref().and_then(|s| s.0) == Some(422), || {
        format!("vCPU 7 of 1: {no_vcpu:?}")
    })?;
    let too_much = status(c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: Some(drvisor_api::MAX_CAPTURE + 1),
        condition: None,
    }));
    ensure(
        too_much == Some((Some(422), Some("bad-capture".into()))),
        || format!("capture {}: {too_much:?}", drvisor_api::MAX_CAPTURE + 1),
    )?;
    // `capture: 0` is refused, as `--capture 0` and `drvisor ctl --capture 0` are.
    let zero = status(c.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: Some(0),
        condition: None,
    }));
    ensure(
        zero == Some((Some(422), Some("bad-capture".into()))),
        || format!("capture 0: {zero:?}"),
    )?;
    let missing = c.breakpoint(99).err().and_then(|e| e.status());
    ensure(missing == Some(404), || format!("unknown id: {missing:?}"))?;
    let no_tables = c
        .memory(&drvisor_api::rest::MemoryQuery {
            gpa: None,
            gva: Some("drv_watch_u64".into()),
            vcpu: Some(1),
            len: 8,
        })
        .err()
        .map(|e| (e.status(), e.code().map(str::to_owned)));
    ensure(
        no_tables == Some((Some(422), Some("no-such-vcpu".into()))),
        || format!("memory through vCPU 1 of 1: {no_tables:?}"),
    )?;
    if has_curl() {
        let (code, body) = curl(
            &served.sock,
            &["-XPOST", "-d", "{\"location\":", "http://x/breakpoints"],
        )?;
        ensure(code == 400 && body.contains("\"code\""), || {
            format!("malformed JSON: {code} {body}")
        })?;
        let (code, _) = curl(
            &served.sock,
            &[
                "-XPOST",
                "-H",
                "content-type: application/json",
                "-d",
                "{\"location\":\"drv_target_0\",\"colour\":1}",
                "http://x/breakpoints",
            ],
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

/// A VM that never ends by itself: registers are refused while it runs, readable once paused,
/// and `POST /vm/stop` ends the run (exit 0, the stream's last event says so).
fn running_vm_states_and_stop() -> Result<(), Failed> {
    let mut served = Served::start(&["--scenario", "spin", "--vcpus", "2"])?;
    let c = &served.client;
    let running = c
        .registers(0)
        .err()
        .map(|e| (e.status(), e.code().map(str::to_owned)));
    ensure(
        running == Some((Some(409), Some("vm-not-paused".into()))),
        || format!("registers while running: {running:?}"),
    )?;
    // The boot vCPU runs the guest in long mode, its RIP inside the kernel image. A pause that
    // comes before its first instruction (a loaded host may not have scheduled it yet) finds it
    // at the entry with EFER.LMA clear: resume and pause again, for up to 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let regs = loop {
        ensure(c.pause()?.state == VmState::Paused, || "not paused".into())?;
        let regs = c.registers(0)?;
        let in_long_mode = regs.efer & 0x400 != 0;
        if in_long_mode || Instant::now() > deadline {
            break regs;
        }
        c.resume()?;
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure(regs.efer & 0x400 != 0 && regs.regs.rip >= 0x100000, || {
        format!("vCPU 0 paused at {regs:?}")
    })?;
    for vcpu in 0..2 {
        let regs = c.registers(vcpu)?;
        ensure(regs.vcpu == vcpu, || format!("{regs:?}"))?;
    }
    let missing = c.registers(5).err().and_then(|e| e.status());
    ensure(missing == Some(404), || format!("vCPU 5 of 2: {missing:?}"))?;
    let dr = c.debugregs(1)?;
    ensure(dr.slots.len() == 4, || format!("{dr:?}"))?;
    ensure(c.resume()?.state == VmState::Running, || {
        "not running".into()
    })?;
    let stream = c.events(None, true)?;
    let stopped = c.stop()?;
    ensure(stopped.state == VmState::Stopped, || format!("{stopped:?}"))?;
    let again = c.stop().err().and_then(|e| e.status());
    ensure(again == Some(409) || again.is_none(), || {
        format!("a second stop: {again:?}")
    })?;
    let events = drain(stream);
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    ensure(
        events
            .last()
            .is_some_and(|(k, v)| k == "state" && v["exit"]["status"] == 0),
        || format!("the stream did not end with the stop: {:?}", events.last()),
    )
}

/// Loopback TCP: no token or a wrong one is 401, the right one is served. The in-tree client
/// sends the tokens; the request without any `Authorization` header is written by hand.
fn tcp_needs_the_token() -> Result<(), Failed> {
    let token = temp_path("api-token");
    std::fs::write(&token, "s3cret-token\n").map_err(|e| e.to_string())?;
    // A token file others can read is refused, as ssh refuses such a key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let tok = token.to_str().unwrap_or_default().to_owned();
    let mut served = Served::start(&[
        "--paused",
        "--scenario",
        "exec",
        "--api-tcp",
        &addr,
        "--api-token-file",
        &tok,
    ])?;
    let sock_addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let none = status_without_auth(sock_addr)?;
    let with = |t: &str| -> Result<Option<u16>, Failed> {
        let client = Client::tcp(sock_addr, t).map_err(|e| format!("client: {e}"))?;
        Ok(match client.vm() {
            Ok(_) => Some(200),
            Err(e) => e.status(),
        })
    };
    let (wrong, right) = (with("guess")?, with("s3cret-token")?);
    ensure(
        none == 401 && wrong == Some(401) && right == Some(200),
        || format!("no token {none}, wrong {wrong:?}, right {right:?}"),
    )?;
    served.client.stop()?;
    let _ = std::fs::remove_file(&token);
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))
}

/// `GET /vm` over TCP with no `Authorization` header at all: the response's status.
fn status_without_auth(addr: std::net::SocketAddr) -> Result<u16, Failed> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /vm HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 response: {response:?}").into())
}

/// A second drvisor on the socket a live one serves is refused before it boots anything, and
/// the first keeps its socket.
fn second_server_refused() -> Result<(), Failed> {
    let mut served = Served::start(&["--paused", "--scenario", "exec"])?;
    let sock = served.sock.to_str().unwrap_or_default().to_owned();
    let second = crate::common::drvisor(&["run", "--api-sock", &sock, "--scenario", "exec"]);
    ensure(
        second.code == 2 && second.stderr.contains("--api-sock"),
        || format!("second server: {second}"),
    )?;
    ensure(served.client.vm().is_ok(), || {
        "the first server lost its socket".into()
    })?;
    // A usable token file, so that the address is what gets refused.
    let token = temp_path("far-token");
    std::fs::write(&token, "t\n").map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let tok = token.to_str().unwrap_or_default().to_owned();
    let far = crate::common::drvisor(&[
        "run",
        "--api-tcp",
        "192.0.2.1:8080",
        "--api-token-file",
        &tok,
    ]);
    let _ = std::fs::remove_file(&token);
    ensure(
        far.code == 2 && far.to_string().contains("loopback"),
        || format!("a non-loopback address: {far}"),
    )?;
    served.client.stop()?;
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))
}

/// A client that opens the stream and reads nothing while more hits arrive than the ring holds:
/// the guest is not held up (the `--events` file has every hit), and when the client reads at
/// last it is told how many it lost, right where they are missing: no silent gap.
fn stalled_reader() -> Result<(), Failed> {
    // A small ring, so that a few thousand hits overrun it on any host.
    let ring = 1000usize;
    let mut served = Served::start_with(
        &["--paused", "--scenario", "spin"],
        &[(drvisor::control::RING_VAR, &ring.to_string())],
    )?;
    // Once failed here in the nested SVM guest with "Connection refused" from one of the
    // requests below: say what drvisor was doing if it happens again.
    stalled_reader_on(&mut served, ring).map_err(|e| served.explain(e))
}

fn stalled_reader_on(served: &mut Served, ring: usize) -> Result<(), Failed> {
    let bp = served.client.add_breakpoint(&NewBreakpoint {
        location: "drv_target_0".into(),
        vcpu: None,
        action: HitAction::Continue,
        capture: None,
        condition: None,
    })?;
    let stalled = served.client.events(Some(0), true)?;
    served.client.resume()?;
    // More hits than the ring holds, by the file's count.
    let wanted = ring + 2_000;
    let deadline = Instant::now() + Duration::from_secs(240);
    while crate::common::hits_so_far(&served.events)? < wanted {
        ensure(Instant::now() < deadline, || "too few hits in 240 s".into())?;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Read until the stream is past the loss.
    let mut ids = Vec::new();
    let mut lost = 0;
    for e in stalled {
        let e = e.map_err(|e| e.to_string())?;
        if e.kind == "lost" {
            let v: serde_json::Value = serde_json::from_str(&e.data).map_err(|e| e.to_string())?;
            lost += v["count"].as_u64().unwrap_or(0);
            ids.push((e.id.unwrap_or(0), true));
        } else {
            ids.push((e.id.unwrap_or(0), false));
        }
        if lost > 0 && ids.len() > 10 && !ids[ids.len() - 1].1 {
            break;
        }
    }
    served.client.stop()?;
    let (code, out, err) = served.finish()?;
    ensure(code == 0, || format!("exit {code}\n{out}{err}"))?;
    ensure(lost > 0, || "the stalled reader was told of no loss".into())?;
    // Every id follows the one before: a lost event's id is the last one it stands for.
    let gap = ids.windows(2).find(|w| w[1].0 != w[0].0 + 1 && !w[1].1);
    ensure(gap.is_none(), || {
        format!("a silent gap in the ids: {gap:?}")
    })?;
    let written = read_events(&served.events)?;
    let file_lost = written.iter().filter(|e| e["event"] == "lost").count();
    let file_hits = written
        .iter()
        .filter(|e| e["event"] == "hit" && e["id"] == bp.id)
        .count();
    ensure(file_lost == 0 && file_hits >= wanted, || {
        format!("--events has {file_hits} hits and {file_lost} losses while a reader stalled")
    })
}
