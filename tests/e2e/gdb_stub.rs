//! The gdb stub against the real gdb (Debian's, in batch mode): `drvisor run --gdb ...` with a
//! gdb script, the guest's own counts as the truth. Without gdb every trial is ignored with
//! the reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drvisor_api::client::Client;

use drvisor::probe::Mechanism;

use crate::common::{
    ensure, guest_number, skipped, temp_path, Context, Failed, Run, Trial, DRVISOR,
};

type Case = (&'static str, fn() -> Result<(), Failed>);

pub fn trials(ctx: &Context) -> Vec<Trial> {
    // Where the guest's own breakpoints are checked apart from the host's, they take no
    // physical slot, and nothing evicts gdb's.
    let native = ctx
        .probe
        .delivers(Mechanism::GuestBreakpointLiveUnderHostDebug, 0);
    let cases: Vec<Case> = vec![
        ("gdb::hbreak_counts_every_call", hbreak_counts_every_call),
        (
            "gdb::a_fifth_hbreak_is_refused_not_left_pending",
            fifth_hbreak_refused,
        ),
        (
            "gdb::gdb_is_told_when_its_hbreak_loses_its_slot_and_gets_it_back",
            evicted_hbreak_is_told,
        ),
        (
            "gdb::a_deleted_hbreak_gives_its_slot_to_a_new_one",
            deleted_hbreak_gives_its_slot,
        ),
        (
            "gdb::a_silent_connection_does_not_release_gdb_wait",
            silent_connection_keeps_the_vm_held,
        ),
        ("gdb::break_on_smp_names_the_vcpu", break_on_smp),
        ("gdb::watch_and_awatch_on_this_host", watch_and_awatch),
        (
            "gdb::guest_breakpoints_stay_exact",
            guest_breakpoints_stay_exact,
        ),
        ("gdb::registers_memory_stepi", registers_memory_stepi),
        (
            "gdb::system_registers_match_the_rest_plane",
            system_registers_match_rest,
        ),
        ("gdb::sse_registers_round_trip", sse_registers_round_trip),
        ("gdb::register_set_is_qemus", register_set_is_qemus),
        ("gdb::interrupt_detach_and_kill", interrupt_detach_and_kill),
        ("gdb::bad_packets_leave_the_vm_running", bad_packets),
        (
            "gdb::malformed_packets_get_a_nak_or_an_error_and_the_session_goes_on",
            malformed_packets,
        ),
        (
            "gdb::socket_is_0600_and_a_second_gdb_is_refused",
            second_gdb_refused,
        ),
        ("gdb::with_cli_and_rest_each_sees_its_own", three_clients),
        (
            "gdb::monitor_break_if_stops_only_where_it_holds",
            monitor_break_if,
        ),
    ];
    let gdb = Command::new("gdb").arg("--version").output();
    let qemu = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    cases
        .into_iter()
        .map(|(name, f)| match &gdb {
            Ok(out) if out.status.success() => {
                if name == "gdb::gdb_is_told_when_its_hbreak_loses_its_slot_and_gets_it_back"
                    && native
                {
                    skipped(
                        name,
                        "this host checks the guest's own breakpoints apart from the host's \
                         (probe: guest's own exec bp still live under host debug), so the guest \
                         takes no slot from gdb; it runs on VMX/SVM, as in \
                         tests/nested-svm/run-e2e.sh",
                    )
                } else if name == "gdb::register_set_is_qemus" && !qemu {
                    skipped(name, "no qemu-system-x86_64 here to compare with")
                } else {
                    Trial::test(name, f)
                }
            }
            _ => skipped(name, "no gdb here (apt-get install gdb)"),
        })
        .collect()
}

/// The longest a gdb script may take (TCG makes the nested SVM guest slow).
const GDB_TIMEOUT: Duration = Duration::from_secs(180);

/// The embedded test guest's ELF, for gdb's symbols.
fn guest_elf() -> Result<PathBuf, Failed> {
    let path = temp_path("guest.elf");
    std::fs::write(&path, drvisor::guest_image::ELF).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A `drvisor run --gdb unix:SOCK --gdb-wait ...` and the socket gdb connects to.
struct Stub {
    child: Child,
    sock: PathBuf,
    events: PathBuf,
}

impl Stub {
    fn start(args: &[&str]) -> Result<Stub, Failed> {
        let sock = temp_path("gdb.sock");
        // Hit events to a file: a pipe nobody reads while gdb works would fill up.
        let events = temp_path("gdb-events.jsonl");
        let child = Command::new(DRVISOR)
            .arg("run")
            .arg("--gdb")
            .arg(format!("unix:{}", sock.display()))
            .arg("--gdb-wait")
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
            ensure(Instant::now() < deadline, || {
                "the gdb socket never appeared".into()
            })?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Stub {
            child,
            sock,
            events,
        })
    }

    /// [`Stub::start`] with the REST plane too (`--api-sock`): the stub, the socket, and a
    /// client of it.
    fn with_api(args: &[&str]) -> Result<(Stub, PathBuf, Client), Failed> {
        let api = temp_path("gdb-api.sock");
        let mut all = args.to_vec();
        all.extend(["--api-sock", api.to_str().unwrap_or_default()]);
        let stub = Stub::start(&all)?;
        let client = Client::unix(&api).map_err(|e| e.to_string())?;
        Ok((stub, api, client))
    }

    /// Runs gdb with `script` (one command per line) against the stub: gdb's output.
    fn gdb(&self, script: &str) -> Result<String, Failed> {
        self.gdb_interrupted(script, None)
    }

    /// [`Stub::gdb`], sending gdb a SIGINT (Ctrl-C) once the REST plane on `api` shows the
    /// guest running (gdb is then inside its `continue`), if given. gdb is killed after
    /// [`GDB_TIMEOUT`]: a test never hangs on it.
    fn gdb_interrupted(&self, script: &str, api: Option<&Path>) -> Result<String, Failed> {
        let elf = guest_elf()?;
        let file = temp_path("script.gdb");
        let text = format!(
            "set pagination off\nset confirm off\ntarget remote {}\n{script}\n",
            self.sock.display()
        );
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        // gdb's output in these scripts is far below a pipe's capacity, so it is read once
        // gdb has exited.
        let mut child = Command::new("gdb")
            .args(["-q", "-batch", "-nx", "-x"])
            .arg(&file)
            .arg(&elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("gdb: {e}"))?;
        // Read while gdb runs: gdb blocked on a full pipe would never resume the VM.
        let output = crate::common::Drained::start(&mut child);
        let started = Instant::now();
        let mut interrupt = api.map(Client::unix).transpose()?;
        let running = |c: &Client| {
            c.vm()
                .is_ok_and(|vm| vm.state == drvisor_api::rest::VmState::Running)
        };
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break Some(status);
            }
            if interrupt.as_ref().is_some_and(running) {
                std::thread::sleep(Duration::from_millis(300));
                // SAFETY: kill(2) on gdb's pid: `child` is not reaped yet (try_wait above saw
                // it running), so the pid is still gdb's.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                interrupt = None;
            }
            if started.elapsed() > GDB_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = output.collect();
        let out = stdout + &stderr;
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&elf);
        match status {
            Some(_) => Ok(out),
            None => Err(format!("gdb did not finish in {GDB_TIMEOUT:?}\n{out}").into()),
        }
    }

    /// Waits for the run to end.
    fn finish(&mut self) -> Result<Run, Failed> {
        crate::common::wait_child(&mut self.child, Duration::from_secs(120))
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.events);
    }
}

fn number_after(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|n| n.trim().parse().ok())
}

const COUNTING: &str = "commands\nsilent\nset $hits = $hits + 1\ncontinue\nend\nset $hits = 0\ncontinue\nprintf \"HITS %d\\n\", $hits";

/// `hbreak` with `silent; continue` is hit exactly as often as the guest calls the function,
/// and stays one drvisor breakpoint although gdb removes and re-inserts it at every stop: one
/// id, one `added`, no other plan event until gdb goes; `monitor plan` at a stop shows it in
/// its slot.
fn hbreak_counts_every_call() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "exec", "--cmdline", "count=200"])?;
    let out = stub.gdb(&format!(
        "hbreak drv_target_1\ncontinue\nmonitor plan\n{COUNTING}"
    ))?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    let events = crate::common::read_events(&stub.events)?;
    let plans: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "plan")
        .map(|e| format!("{} #{}", e["change"], e["breakpoint"]["id"]))
        .collect();
    ensure(
        plans.first().map(String::as_str) == Some("\"added\" #1"),
        || format!("gdb's breakpoint was not added once as #1: {plans:?}"),
    )?;
    ensure(plans.len() <= 2, || {
        format!(
            "gdb's re-inserts changed the plan: {} plan events {plans:?}",
            plans.len()
        )
    })?;
    ensure(
        out.contains("host #1 gdb:") && out.contains("armed [vcpu0:"),
        || format!("`monitor plan` at a stop does not show gdb's breakpoint armed\n{out}"),
    )?;
    let hits = events.iter().filter(|e| e["event"] == "hit");
    ensure(
        hits.clone().all(|e| e["id"] == 1) && hits.count() == 200,
        || "gdb's hits are not 200 hits of #1".into(),
    )?;
    // The first stop, where `monitor plan` ran, comes before the counting starts.
    let calls = guest_number(&run, &["scenario=exec", "target=1"], "calls")?;
    let counted = number_after(&out, "HITS ").map(|h| h + 1);
    ensure(counted == Some(calls) && calls == 200, || {
        format!("gdb counted {counted:?} hits (with the first) for {calls} calls\n{out}")
    })?;
    ensure(out.contains("exited normally"), || {
        format!("gdb did not see the end\n{out}")
    })
}

/// Four `hbreak`s take the four slots; a fifth, which could never fire, is refused, so gdb says
/// it could not insert them and does not resume (instead of believing it inserted all five).
/// gdb's batch script ends at that error and gdb detaches: the guest then runs to its end with
/// none of gdb's breakpoints left behind.
fn fifth_hbreak_refused() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "exec", "--cmdline", "count=20"])?;
    let out = stub.gdb(
        "hbreak drv_target_0\nhbreak drv_target_1\nhbreak drv_target_2\nhbreak drv_target_3\n\
         hbreak *((char *)&drv_target_0 + 1)\ncontinue",
    )?;
    ensure(
        out.contains("Could not insert hardware breakpoints"),
        || format!("the fifth hbreak was not refused\n{out}"),
    )?;
    ensure(!out.contains("Breakpoint 1, "), || {
        format!("gdb resumed although it could not insert a breakpoint\n{out}")
    })?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    let calls = guest_number(&run, &["scenario=exec", "target=0"], "calls")?;
    ensure(calls == 20, || {
        format!("the guest made {calls} of 20 calls\n{run}")
    })
}

/// Under `guest-first`, the guest's `evict` scenario takes all four slots in its phase B and
/// gives them back in phase C. gdb's `hbreak`, armed when inserted, loses its slot in B: gdb
/// is told so while the guest runs (console output, printed by gdb at once), and told again
/// when it has its slot back; without the notes it would silently not fire in between.
fn evicted_hbreak_is_told() -> Result<(), Failed> {
    let mut stub = Stub::start(&[
        "--scenario",
        "evict",
        "--cmdline",
        "count=20",
        "--policy",
        "guest-first",
    ])?;
    let out = stub.gdb("hbreak drv_kfunc_0\ncontinue")?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    let lost = out.find("lost its debug-register slot and does not fire");
    let back = out.find("has its slot again and fires");
    ensure(lost.is_some(), || {
        format!("gdb was not told that its hbreak lost its slot\n{out}")
    })?;
    ensure(back > lost, || {
        format!("gdb was not told, after that, that its hbreak has its slot again\n{out}")
    })?;
    ensure(out.contains("your hbreak at 0x"), || {
        format!("the note does not name the breakpoint\n{out}")
    })
}

/// Four `hbreak`s in the four slots, a stop, one deleted and another one set: the new one gets
/// the deleted one's slot (which drvisor kept armed while gdb had it out), gdb resumes and
/// stops at the next of the remaining three.
fn deleted_hbreak_gives_its_slot() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "exec", "--cmdline", "count=20"])?;
    let out = stub.gdb(
        "hbreak drv_target_0\nhbreak drv_target_1\nhbreak drv_target_2\nhbreak drv_target_3\n\
         continue\ndelete 4\nhbreak *((char *)&drv_target_3 + 1)\ncontinue\nkill",
    )?;
    let _ = stub.finish();
    ensure(!out.contains("Could not insert"), || {
        format!("the new hbreak did not get the deleted one's slot\n{out}")
    })?;
    ensure(
        out.contains("Breakpoint 1, ") && out.contains("Breakpoint 2, "),
        || format!("gdb did not stop at #1 and then #2\n{out}"),
    )
}

/// A connection that closes without a byte (another drvisor probing whether the socket is live)
/// is no gdb: a VM held by `--gdb-wait` stays held, and the gdb that comes next gets it.
fn silent_connection_keeps_the_vm_held() -> Result<(), Failed> {
    let (mut stub, _api, client) = Stub::with_api(&["--scenario", "exec", "--cmdline", "count=5"])?;
    for _ in 0..3 {
        let probe = std::os::unix::net::UnixStream::connect(&stub.sock)
            .map_err(|e| format!("connect: {e}"))?;
        drop(probe);
    }
    std::thread::sleep(Duration::from_millis(500));
    let state = client.vm()?.state;
    ensure(state == drvisor_api::rest::VmState::Paused, || {
        format!("after silent connections the VM held by --gdb-wait is {state:?}")
    })?;
    let out = stub.gdb("hbreak drv_target_2\ncontinue\ndelete\ncontinue")?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    ensure(
        out.contains("Breakpoint 1, ") && out.contains("exited normally"),
        || format!("the gdb after the silent connections did not get the VM\n{out}"),
    )
}

/// On 4 vCPUs gdb lists every vCPU as a thread, and a hit names the vCPU that made it.
fn break_on_smp() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "smp", "--vcpus", "4"])?;
    let out = stub.gdb("hbreak drv_target_0\ncontinue\ninfo threads\nkill")?;
    let _ = stub.finish();
    for t in 1..=4 {
        ensure(out.contains(&format!("Thread 1.{t}")), || {
            format!("thread {t} missing\n{out}")
        })?;
    }
    ensure(
        out.contains("hit Breakpoint 1") || out.contains("Breakpoint 1,"),
        || format!("no hit\n{out}"),
    )
}

/// `watch` stops at every write with the old and new value, and `awatch` takes a range longer
/// than 8 bytes, on this host too, where hardware data watchpoints never fire.
fn watch_and_awatch() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "write", "--cmdline", "count=5"])?;
    let out = stub.gdb(
        "watch *(unsigned int *)&drv_watch_u32\ncontinue\ncontinue\ncontinue\ndelete\n\
         awatch *(char(*)[24])&drv_watch_u8\ncontinue\ndelete\ncontinue",
    )?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    for (old, new) in [(0, 1), (1, 2), (2, 3)] {
        ensure(
            out.contains(&format!("Old value = {old}\nNew value = {new}")),
            || format!("no stop for the write of {new}\n{out}"),
        )?;
    }
    ensure(out.contains("access (read/write) watchpoint 2"), || {
        format!("the 24-byte awatch did not stop\n{out}")
    })
}

/// With the guest's own four breakpoints armed, gdb's breakpoint and the guest's counts are
/// both exact.
fn guest_breakpoints_stay_exact() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "guest-dr", "--cmdline", "count=25"])?;
    let out = stub.gdb(&format!("hbreak drv_target_2\n{COUNTING}"))?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    for slot in 0..4u8 {
        let hits = guest_number(
            &run,
            &["scenario=guest-dr", &format!("slot={slot}")],
            "hits",
        )?;
        ensure(hits == 25, || {
            format!("guest slot {slot}: {hits} hits\n{run}")
        })?;
    }
    ensure(number_after(&out, "HITS ") == Some(25), || {
        format!("gdb counted {:?}\n{out}", number_after(&out, "HITS "))
    })
}

/// Registers and memory read and written, and `stepi` moves RIP by one instruction.
fn registers_memory_stepi() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "write", "--cmdline", "count=3"])?;
    let out = stub.gdb(
        "hbreak drv_target_0\nwatch *(unsigned int *)&drv_watch_u32\ncontinue\ndelete\n\
         printf \"RIP0 %lu\\n\", $rip\nprintf \"EFLAGS %lu\\n\", $eflags\nstepi\nprintf \"RIP1 %lu\\n\", $rip\n\
         set var *(unsigned int *)&drv_watch_u32 = 4242\n\
         printf \"MEM %u\\n\", *(unsigned int *)&drv_watch_u32\n\
         set $r15 = 77\nmaint flush register-cache\nprintf \"R15 %lu\\n\", $r15\ndetach",
    )?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    let (rip0, rip1) = (number_after(&out, "RIP0 "), number_after(&out, "RIP1 "));
    ensure(
        rip0.zip(rip1).is_some_and(|(a, b)| b > a && b - a <= 15),
        || format!("stepi went from {rip0:?} to {rip1:?}\n{out}"),
    )?;
    let eflags = number_after(&out, "EFLAGS ");
    ensure(eflags.is_some_and(|f| f & (1 << 16) == 0), || {
        format!("RFLAGS at the stop: {eflags:?}, with the VMM's RF showing\n{out}")
    })?;
    ensure(number_after(&out, "MEM ") == Some(4242), || {
        format!("memory write not read back\n{out}")
    })?;
    ensure(number_after(&out, "R15 ") == Some(77), || {
        format!("register write not read back\n{out}")
    })
}

/// gdb gets QEMU's system registers: CR0, CR3, EFER and the segment bases as the REST plane
/// reports them at the same stop (read while gdb holds the guest there), the kernel GS base
/// the guest booted with, CR2, CR4 and CR8, all in `info registers`; a write of one is refused,
/// not dropped. The test guest loads GS and FS selectors but sets no base (and never runs
/// `swapgs`): both bases are 0, and so is IA32_KERNEL_GS_BASE from the boot MSRs.
fn system_registers_match_rest() -> Result<(), Failed> {
    let (mut stub, _, client) = Stub::with_api(&["--scenario", "exec", "--cmdline", "count=3"])?;
    let stopped = temp_path("gdb-stopped");
    let read = temp_path("gdb-rest-read");
    let reader = {
        let (stopped, read) = (stopped.clone(), read.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + GDB_TIMEOUT;
            while !stopped.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let regs = client.registers(0).map_err(|e| e.to_string());
            let _ = std::fs::write(&read, b"");
            regs
        })
    };
    let out = stub.gdb(&format!(
        "hbreak drv_target_0\ncontinue\n\
         printf \"CR0 %lu\\n\", $cr0\nprintf \"CR3 %lu\\n\", $cr3\n\
         printf \"EFER %lu\\n\", $efer\nprintf \"CR4 %lu\\n\", $cr4\n\
         printf \"CR2 %lu\\n\", $cr2\nprintf \"CR8 %lu\\n\", $cr8\n\
         printf \"FSBASE %lu\\n\", $fs_base\nprintf \"GSBASE %lu\\n\", $gs_base\n\
         printf \"KGSBASE %lu\\n\", $k_gs_base\ninfo registers\n\
         shell touch {}\nshell while [ ! -e {} ]; do sleep 0.05; done\n\
         set $cr3 = $cr3 + 0x1000",
        stopped.display(),
        read.display()
    ))?;
    // A script that ended early (a register gdb does not know) leaves the reader no stop to
    // wait for.
    let _ = std::fs::write(&stopped, b"");
    let rest = reader
        .join()
        .map_err(|_| "the REST reader panicked".to_string())??;
    let _ = std::fs::remove_file(&stopped);
    let _ = std::fs::remove_file(&read);
    // gdb's batch script ends at the refused write and gdb detaches: the guest runs to its end.
    let run = stub.finish()?;
    run.expect_code(0)?;
    let expected = [
        ("CR0 ", rest.cr0),
        ("CR3 ", rest.cr3),
        ("EFER ", rest.efer),
        ("CR4 ", rest.cr4),
        ("CR2 ", rest.cr2),
        ("FSBASE ", rest.fs.base),
        ("GSBASE ", rest.gs.base),
        ("KGSBASE ", 0),
        ("CR8 ", 0),
    ];
    for (name, want) in expected {
        let got = number_after(&out, name);
        ensure(got == Some(want), || {
            format!("gdb's {name}is {got:?}, the REST plane's {want:#x}\n{out}")
        })?;
    }
    // Long mode with paging: none of these can be 0 at a stop in the guest's code.
    ensure(rest.cr0 & (1 << 31) != 0 && rest.cr3 != 0, || {
        format!(
            "paging off at the stop? CR0 {:#x} CR3 {:#x}",
            rest.cr0, rest.cr3
        )
    })?;
    ensure(rest.efer & (1 << 10) != 0, || {
        format!("EFER.LMA clear at the stop: {:#x}", rest.efer)
    })?;
    for reg in [
        "fs_base",
        "gs_base",
        "k_gs_base",
        "cr0",
        "cr3",
        "cr4",
        "efer",
    ] {
        ensure(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(reg)),
            || format!("`info registers` has no {reg}\n{out}"),
        )?;
    }
    ensure(out.contains("Could not write registers"), || {
        format!("a write of CR3 was not refused\n{out}")
    })
}

/// x87 and SSE registers are the vCPU's own: gdb writes XMM registers, reads them back from
/// the stub, and after a `stepi` (the vCPU loads them with KVM_SET_FPU, runs, and parks
/// reading them with KVM_GET_FPU) from KVM; `info all-registers` lists x87 and SSE registers
/// with the x87 control word KVM holds (the guest never uses SSE or x87: nothing else changes
/// them).
fn sse_registers_round_trip() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "exec", "--cmdline", "count=3"])?;
    let out = stub.gdb(
        "hbreak drv_target_0\ncontinue\ndelete\n\
         set $xmm0.v4_int32[0] = 0x1234\nmaint flush register-cache\n\
         printf \"XMM0 %d\\n\", $xmm0.v4_int32[0]\n\
         printf \"MXCSR0 %lu\\n\", $mxcsr\nset $mxcsr = 0x1fa0\n\
         set $xmm15.v2_int64[1] = 0x55aa\nstepi\nmaint flush register-cache\n\
         printf \"MXCSR1 %lu\\n\", $mxcsr\n\
         printf \"STEPPED0 %d\\n\", $xmm0.v4_int32[0]\n\
         printf \"STEPPED15 %ld\\n\", $xmm15.v2_int64[1]\n\
         printf \"FCTRL %lu\\n\", $fctrl\ninfo all-registers\ndetach",
    )?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    for (name, want) in [
        ("XMM0 ", 0x1234),
        ("STEPPED0 ", 0x1234),
        ("STEPPED15 ", 0x55aa),
        // MXCSR written, loaded by KVM and read back after a step (KVM_GET_FPU and
        // KVM_SET_FPU leave it out; it goes through the XSAVE area).
        ("MXCSR1 ", 0x1fa0),
        // The x87 control word at reset (FNINIT's), as KVM_GET_FPU reports it.
        ("FCTRL ", 0x37f),
    ] {
        let got = number_after(&out, name);
        ensure(got == Some(want), || {
            format!("{name}is {got:?}, not {want:#x}\n{out}")
        })?;
    }
    for reg in ["st7", "fctrl", "xmm15", "mxcsr", "k_gs_base", "efer"] {
        ensure(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(reg)),
            || format!("`info all-registers` has no {reg}\n{out}"),
        )?;
    }
    Ok(())
}

/// QEMU, the reference for gdb's view of a VM.
const QEMU: &str = "qemu-system-x86_64";

/// The same gdb script against QEMU's gdbstub (KVM, the same embedded guest and command line,
/// stopped at the same breakpoint) and against drvisor's: gdb sees the same registers, and
/// the same values of the system registers, the segment bases, the x87 control word and MXCSR.
/// (Not `ftag`: QEMU's is FXSAVE's abridged tag where drvisor gives gdb the full tag word.)
fn register_set_is_qemus() -> Result<(), Failed> {
    const REGS: [&str; 14] = [
        "rip",
        "cs",
        "ss",
        "fs_base",
        "gs_base",
        "k_gs_base",
        "cr0",
        "cr2",
        "cr3",
        "cr4",
        "cr8",
        "efer",
        "fctrl",
        "mxcsr",
    ];
    let script = REGS
        .iter()
        .fold(String::from("hbreak drv_target_0\ncontinue\n"), |s, r| {
            s + &format!("printf \"VAL {r} %lu\\n\", ${r}\n")
        })
        + "info all-registers\nkill";
    let cmdline = "scenario=exec count=3";
    let sock = temp_path("qemu-gdb.sock");
    let elf = guest_elf()?;
    let child = Command::new(QEMU)
        .args(["-enable-kvm", "-m", "64", "-kernel"])
        .arg(&elf)
        .args([
            "-append",
            cmdline,
            "-no-reboot",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-serial", "none", "-monitor", "none", "-S", "-gdb"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {QEMU}: {e}"))?;
    let qemu = Stub {
        child,
        sock: sock.clone(),
        events: temp_path("qemu-unused"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        ensure(Instant::now() < deadline, || {
            "QEMU's gdb socket never appeared".into()
        })?;
        std::thread::sleep(Duration::from_millis(10));
    }
    let theirs = qemu.gdb(&script)?;
    drop(qemu);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&elf);
    let mut stub = Stub::start(&["--scenario", "exec", "--cmdline", "count=3"])?;
    let ours = stub.gdb(&script)?;
    let _ = stub.finish();
    let names = |out: &str| {
        let mut v: Vec<String> = out
            .lines()
            .skip_while(|l| !l.starts_with("rax "))
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split_whitespace().next())
            // Register names only, not the end of the session (`Remote connection closed`).
            .filter(|w| {
                w.starts_with(|c: char| c.is_ascii_lowercase())
                    && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    let (q, d) = (names(&theirs), names(&ours));
    ensure(q.len() > 60 && q == d, || {
        format!("gdb's registers differ\nQEMU:    {q:?}\ndrvisor: {d:?}")
    })?;
    for r in REGS {
        let prefix = format!("VAL {r} ");
        let (q, d) = (number_after(&theirs, &prefix), number_after(&ours, &prefix));
        ensure(q.is_some() && q == d, || {
            format!("${r}: QEMU {q:?}, drvisor {d:?}\n{theirs}\n{ours}")
        })?;
    }
    Ok(())
}

/// Ctrl-C stops a running guest, detach lets it run on, and a second gdb's kill ends the run.
fn interrupt_detach_and_kill() -> Result<(), Failed> {
    let (mut stub, api, _) = Stub::with_api(&["--scenario", "spin"])?;
    // Ctrl-C while gdb waits in `continue`: gdb sends the interrupt, the guest stops, and the
    // script goes on.
    let out = stub.gdb_interrupted("continue\nprintf \"RIP %lu\\n\", $rip\ndetach", Some(&api))?;
    ensure(
        out.contains("SIGINT") && number_after(&out, "RIP ").is_some(),
        || format!("the interrupt did not stop the guest\n{out}"),
    )?;
    let out = stub.gdb("kill")?;
    let run = stub.finish()?;
    ensure(run.code == 0, || {
        format!("kill: exit {}\n{out}\n{run}", run.code)
    })
}

/// Garbage and a client that goes away mid-packet leave the VM running; a real gdb still
/// attaches afterwards.
fn bad_packets() -> Result<(), Failed> {
    let (mut stub, _, client) = Stub::with_api(&["--scenario", "spin"])?;
    for junk in [&b"$zzz#00"[..], b"$m0,#00garbage", b"\x03\x03$qSupported:"] {
        let mut s =
            std::os::unix::net::UnixStream::connect(&stub.sock).map_err(|e| e.to_string())?;
        let _ = s.write_all(junk);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each junk connection ended as a detach: the guest runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.vm()?.state != drvisor_api::rest::VmState::Running {
        ensure(Instant::now() < deadline, || {
            "the VM did not run on after the junk".into()
        })?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = stub.gdb("info threads\nkill")?;
    let run = stub.finish()?;
    ensure(out.contains("Thread 1.1"), || {
        format!("gdb could not attach after the junk\n{out}")
    })?;
    ensure(run.code == 0, || format!("exit {}\n{run}", run.code))
}

/// `$body#cs`.
fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{sum:02x}").as_bytes());
    p
}

/// Sends `raw` on an ack-mode connection and reads the answer: `-`, or `+` and one reply
/// packet (acked).
fn exchange(s: &mut std::os::unix::net::UnixStream, raw: &[u8]) -> Result<String, Failed> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.write_all(raw).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            Ok(_) => {
                return Err(format!(
                    "the stub closed the session after {:?} (had {:?})",
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(&got)
                )
                .into())
            }
            Err(e) => {
                return Err(format!(
                    "no answer to {:?}: {e} (had {:?})",
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(&got)
                )
                .into())
            }
        }
        if got == b"-" {
            return Ok("-".into());
        }
        let n = got.len();
        if n >= 4 && got[n - 3] == b'#' {
            s.write_all(b"+").map_err(|e| e.to_string())?;
            return Ok(String::from_utf8_lossy(&got).into_owned());
        }
    }
}

/// A bad checksum gets a NAK and its retransmission is served; each malformed packet, and an
/// `M` or `X` whose length disagrees with its data, gets `E16`; the session goes on through
/// all of them, to a normal stop reply, registers and a kill.
fn malformed_packets() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "spin"])?;
    let mut s = std::os::unix::net::UnixStream::connect(&stub.sock).map_err(|e| e.to_string())?;
    let got = exchange(&mut s, &packet(b"qSupported:multiprocess+"))?;
    ensure(got.starts_with("+$") && got.contains("PacketSize"), || {
        format!("qSupported: {got:?}")
    })?;
    let got = exchange(&mut s, b"$g#00")?;
    ensure(got == "-", || {
        format!("a bad checksum got {got:?}, not a NAK")
    })?;
    let got = exchange(&mut s, &packet(b"g"))?;
    ensure(
        got.starts_with("+$") && !got.starts_with("+$E") && got.len() > 20,
        || format!("the retransmitted g got {got:?}"),
    )?;
    let e16 = String::from_utf8(packet(b"E16")).map_err(|e| e.to_string())?;
    for bad in [
        &b"mzz,10"[..],
        b"vCont;x",
        b"Hc-5",
        b"Gzzzz",
        b"qXfer:features:read:foo.xml:0,fff",
        b"qRcmd,zz",
        b"Z1,zz,1",
        b"M1000,4:00",
        b"X1000,4:a",
    ] {
        let got = exchange(&mut s, &packet(bad))?;
        ensure(got == format!("+{e16}"), || {
            format!("{:?} got {got:?}, not E16", String::from_utf8_lossy(bad))
        })?;
    }
    let got = exchange(&mut s, &packet(b"?"))?;
    ensure(got.starts_with("+$T") || got.starts_with("+$S"), || {
        format!("? after the malformed packets: {got:?}")
    })?;
    let got = exchange(&mut s, &packet(b"g"))?;
    ensure(
        got.starts_with("+$") && !got.starts_with("+$E") && got.len() > 20,
        || format!("g after the malformed packets: {got:?}"),
    )?;
    s.write_all(&packet(b"vKill;1"))
        .map_err(|e| e.to_string())?;
    let run = stub.finish()?;
    ensure(run.code == 0, || format!("exit {}\n{run}", run.code))
}

/// The gdb socket is 0600 (the stub writes guest memory); a second client while a real gdb
/// is attached is answered with an `E.` message and closed, and the first gdb goes on.
fn second_gdb_refused() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let mut stub = Stub::start(&["--scenario", "spin"])?;
    let mode = std::fs::symlink_metadata(&stub.sock)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    ensure(mode & 0o777 == 0o600, || {
        format!("the gdb socket has mode {:o}, not 600", mode & 0o777)
    })?;
    let marker = temp_path("gdb-attached");
    let second_done = temp_path("gdb-second-done");
    // The first gdb stays attached until the second one is done (at most 60 s): on a slow
    // host (TCG) a fixed wait ran out before the second gdb had even started.
    let script = format!(
        "info threads\nshell touch {}\nshell i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\ninfo threads\nkill",
        marker.display(),
        second_done.display()
    );
    std::thread::scope(|scope| {
        let first = scope.spawn(|| stub.gdb(&script));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !marker.exists() {
            ensure(Instant::now() < deadline, || "gdb never attached".into())?;
            std::thread::sleep(Duration::from_millis(20));
        }
        // A raw client: each packet gets the refusal (gdb acks the first and sends more
        // before it gives up)...
        let refusal = String::from_utf8(packet(b"E.drvisor: another gdb is attached"))
            .map_err(|e| e.to_string())?;
        let mut second =
            std::os::unix::net::UnixStream::connect(&stub.sock).map_err(|e| e.to_string())?;
        for ask in [&b"qSupported"[..], b"?"] {
            let got = exchange(&mut second, &packet(ask))?;
            ensure(got == format!("+{refusal}"), || {
                format!("the second client's {ask:?} got {got:?}")
            })?;
        }
        drop(second);
        // ...and a real gdb shows it.
        let second_gdb = stub.gdb("info threads");
        std::fs::write(&second_done, b"").map_err(|e| e.to_string())?;
        let out = second_gdb?;
        ensure(
            out.contains("E.drvisor: another gdb is attached") && !out.contains("Thread 1.1"),
            || format!("a second gdb was not told\n{out}"),
        )?;
        let out = first
            .join()
            .map_err(|_| Failed::from("the gdb thread panicked"))??;
        ensure(out.matches("Thread 1.1").count() == 2, || {
            format!("the first gdb did not go on\n{out}")
        })
    })?;
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(&second_done);
    let run = stub.finish()?;
    ensure(run.code == 0, || format!("exit {}\n{run}", run.code))?;
    ensure(std::fs::symlink_metadata(&stub.sock).is_err(), || {
        "the gdb socket was left behind at exit".into()
    })
}

/// The command line, a REST client and gdb at once, each on its own function: each sees
/// exactly its own hits, and gdb's are on the event bus like the others'.
fn three_clients() -> Result<(), Failed> {
    let (mut stub, _, client) = Stub::with_api(&[
        "--scenario",
        "exec",
        "--cmdline",
        "count=40",
        "--break",
        "drv_target_0",
    ])?;
    let rest = client.add_breakpoint(&drvisor_api::rest::NewBreakpoint {
        location: "drv_target_1".into(),
        vcpu: None,
        action: drvisor_api::HitAction::Continue,
        capture: None,
        condition: None,
    })?;
    let out = stub.gdb(
        "hbreak drv_target_2\ncommands\nsilent\nset $hits = $hits + 1\n\
         continue\nend\nset $hits = 0\ncontinue\n\
         printf \"HITS %d\\n\", $hits",
    )?;
    let events_file = stub.events.clone();
    let run = stub.finish()?;
    run.expect_code(0)?;
    let events = crate::common::read_events(&events_file)?;
    let count = |label: &str| events.iter().filter(|e| e["label"] == label).count();
    ensure(count("drv_target_0") == 40, || {
        format!(
            "the command line's breakpoint: {} hits",
            count("drv_target_0")
        )
    })?;
    let rest_hits = events.iter().filter(|e| e["id"] == rest.id).count();
    ensure(rest_hits == 40, || {
        format!("the REST breakpoint: {rest_hits} hits")
    })?;
    ensure(number_after(&out, "HITS ") == Some(40), || {
        format!("gdb counted {:?}\n{out}", number_after(&out, "HITS "))
    })?;
    let gdb_events = events
        .iter()
        .filter(|e| e["label"].as_str().is_some_and(|l| l.starts_with("gdb:")))
        .count();
    ensure(gdb_events == 40, || {
        format!("{gdb_events} gdb hits on the bus")
    })
}

/// `monitor break LOCATION if CONDITION`: drvisor evaluates the condition at each of the 100
/// calls and stops gdb only at the 10 where it holds (RDI = 10, 20, ..., 100), then the guest
/// runs to its end; only those 10 hits reach the bus. A mistake in the condition is told with
/// its column, and nothing is armed.
fn monitor_break_if() -> Result<(), Failed> {
    let mut stub = Stub::start(&["--scenario", "args", "--cmdline", "count=100"])?;
    let continues = "continue\n".repeat(11);
    let out = stub.gdb(&format!(
        "monitor break drv_target_arg if rdi ==\n\
         monitor break drv_target_arg if rdi % 10 == 0\n\
         define hook-stop\nprintf \"STOP rdi=%d\\n\", $rdi\nend\n{continues}"
    ))?;
    let run = stub.finish()?;
    run.expect_code(0)?;
    ensure(
        out.contains(
            "expected an expression after '==', found the end of the condition at column 7",
        ),
        || format!("the bad condition was not told\n{out}"),
    )?;
    ensure(out.contains("breakpoint #1 at 0x"), || {
        format!("the good one is not #1 (the bad one armed nothing)\n{out}")
    })?;
    let stops: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("STOP rdi="))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    ensure(
        stops == (1..=10).map(|k| 10 * k).collect::<Vec<u64>>(),
        || format!("gdb stopped at rdi = {stops:?}\n{out}"),
    )?;
    ensure(out.contains("exited normally"), || {
        format!("gdb did not see the end\n{out}")
    })?;
    let events = crate::common::read_events(&stub.events)?;
    let hits = events.iter().filter(|e| e["event"] == "hit").count();
    ensure(hits == 10, || format!("{hits} hits on the bus, wanted 10"))
}
