//! Changing host breakpoints while the vCPUs run, in process through the library API: the call
//! returns only when every vCPU runs the new plan, and the change reaches every vCPU.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drvisor::debug::{HitContext, HostRequest};
use drvisor::symbols::SymbolTable;
use drvisor::{guest_image, Outcome, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Scope};

use crate::common::{ensure, Failed, Trial};

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), Failed> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn change_reaches_every_vcpu(vcpus: usize) -> Result<(), Failed> {
    let target = SymbolTable::from_elf(guest_image::ELF).resolve("drv_target_2")?;
    // Long enough that the guest is still running through the whole test; it is ended below.
    let cmdline = format!("scenario=smp ncpus={vcpus} count=100000000");
    let mut config = VmConfig::new(guest_image::kernel(), cmdline);
    config.vcpus = vcpus;
    let vm = Vm::try_from(config)?;
    let ctl = vm.debug().clone();
    let control = vm.run_control().clone();
    let runner = std::thread::spawn(move || vm.run());

    // The guest runs until it is stopped below, so the change lands while it runs.
    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let record = |seen: &Arc<Mutex<Vec<(usize, u64)>>>| {
        let seen = seen.clone();
        Arc::new(move |h: &HitContext| {
            seen.lock().unwrap().push((h.vcpu, h.addr));
            HitAction::Continue
        })
    };
    let id = ctl.add(HostRequest {
        spec: BreakSpec::exec(target)?,
        scope: Scope::Vm,
        label: "drv_target_2".into(),
        on_hit: record(&seen),
    })?;
    ensure(ctl.all_applied(), || {
        "add returned before every vCPU ran the new plan".into()
    })?;
    let on_target = |seen: &Arc<Mutex<Vec<(usize, u64)>>>, addr: u64| {
        let seen = seen.lock().unwrap();
        seen.iter()
            .filter(|(_, a)| *a == addr)
            .map(|(v, _)| *v)
            .collect::<BTreeSet<_>>()
    };
    wait_for("a hit on every vCPU", Duration::from_secs(120), || {
        on_target(&seen, target).len() == vcpus
    })?;

    ctl.remove(id)?;
    ensure(ctl.all_applied(), || {
        "remove returned before every vCPU ran the new plan".into()
    })?;
    let after_remove = seen.lock().unwrap().len();
    // Progress, not time: every vCPU calls drv_target_3 right after drv_target_2 in its loop,
    // so once each has hit a new breakpoint there twice, each has passed drv_target_2 since
    // the removal returned.
    let next = SymbolTable::from_elf(guest_image::ELF).resolve("drv_target_3")?;
    let probe = ctl.add(HostRequest {
        spec: BreakSpec::exec(next)?,
        scope: Scope::Vm,
        label: "drv_target_3".into(),
        on_hit: record(&seen),
    })?;
    wait_for(
        "two more loops on every vCPU",
        Duration::from_secs(120),
        || {
            let seen = seen.lock().unwrap();
            (0..vcpus).all(|v| {
                seen[after_remove..]
                    .iter()
                    .filter(|(vcpu, a)| *vcpu == v && *a == next)
                    .count()
                    >= 2
            })
        },
    )?;
    ctl.remove(probe)?;
    let late = seen.lock().unwrap()[after_remove..]
        .iter()
        .filter(|(_, a)| *a == target)
        .count();
    ensure(late == 0, || format!("{late} hits after remove returned"))?;

    control.finish(Outcome::Requested);
    let outcome = runner.join().map_err(|_| "run thread panicked")??;
    ensure(outcome == Outcome::Requested, || format!("{outcome}"))
}

pub fn trials() -> Vec<Trial> {
    let mut trials: Vec<Trial> = [1usize, 2, 4]
        .into_iter()
        .map(|n| {
            Trial::test(
                format!("live_changes::change_reaches_every_vcpu_{n}"),
                move || change_reaches_every_vcpu(n),
            )
        })
        .collect();
    trials.push(Trial::test(
        "live_changes::page_watches_while_running",
        page_watches_while_running,
    ));
    trials
}

/// Page watches armed and removed while the guest runs: memslots change under running vCPUs,
/// hits arrive while armed and stop once removal returns, and no access is lost: the guest's
/// own check of its buffer passes and its checksum equals a run without watches.
fn page_watches_while_running() -> Result<(), Failed> {
    use drvisor::watch::{PageWatchRequest, WatchRange};
    use drvisor_watch::Access;

    let buf = SymbolTable::from_elf(guest_image::ELF).resolve("drv_range_buf")?;
    // The guest repeats its accesses until signalled, printing `running=R` after each
    // repetition: every step below waits for the guest's progress, never for time.
    let cmdline = "scenario=ranges until=signal ncpus=1";
    let console: Arc<Mutex<Vec<u8>>> = Arc::default();
    let mut config = VmConfig::new(guest_image::kernel(), cmdline);
    config.console = drvisor::Console::Writer(Box::new(SharedWriter(console.clone())));
    let vm = Vm::try_from(config)?;
    let pages = vm.watch().clone();
    let signal = vm.host_signal().clone();
    let runner = std::thread::spawn(move || vm.run());
    let repetitions = || {
        let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
        text.lines()
            .rev()
            .filter_map(|l| l.split("running=").nth(1))
            .find_map(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_for(
        "the guest's first repetition",
        Duration::from_secs(120),
        || repetitions() >= 1,
    )?;

    let seen: Arc<Mutex<usize>> = Arc::default();
    let mut ids = Vec::new();
    for (i, access) in [
        (0u64, Access::Write),
        (5, Access::ReadWrite),
        (9, Access::Read),
    ] {
        let record = seen.clone();
        ids.push(pages.add(PageWatchRequest {
            range: WatchRange::Physical {
                gpa: buf + 4096 * i + 256,
                len: 600,
            },
            access,
            label: format!("live{i}"),
            on_hit: Arc::new(move |_h: &HitContext| {
                *record.lock().unwrap() += 1;
                HitAction::Continue
            }),
        })?);
    }
    wait_for("page hits while running", Duration::from_secs(120), || {
        *seen.lock().unwrap() > 50
    })?;
    for id in ids {
        pages.remove(id)?;
    }
    let after_remove = *seen.lock().unwrap();
    // Two more repetitions start after removal returned: at least one whole repetition, which
    // touches every watched range, runs with the watches gone.
    let at_remove = repetitions();
    wait_for(
        "two repetitions after removal",
        Duration::from_secs(120),
        || repetitions() >= at_remove + 2,
    )?;
    ensure(*seen.lock().unwrap() == after_remove, || {
        "hits after removal returned".into()
    })?;
    ensure(pages.layout().slots().len() == 1, || {
        format!("{:?}", pages.layout().slots())
    })?;

    signal.raise();
    let outcome = runner.join().map_err(|_| "run thread panicked")??;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    ensure(outcome == Outcome::GuestExit { status: 0 }, || {
        format!("{outcome}\n{text}")
    })?;
    // The buffer's final contents do not depend on how many repetitions ran.
    let bare = crate::common::drvisor(&["run", "--scenario", "ranges", "--cmdline", "count=3"]);
    let checksum = |t: &str| {
        t.lines()
            .find(|l| l.contains("checksum="))
            .map(str::to_owned)
    };
    ensure(
        checksum(&text) == checksum(&bare.stdout) && checksum(&text).is_some(),
        || format!("{:?} vs {:?}", checksum(&text), checksum(&bare.stdout)),
    )
}

/// A `Write` that appends to a shared buffer (the console of an in-process VM).
struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
