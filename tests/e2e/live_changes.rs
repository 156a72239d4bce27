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

    // Let every vCPU enter the guest.
    std::thread::sleep(Duration::from_millis(200));
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let record = seen.clone();
    let id = ctl.add(HostRequest {
        spec: BreakSpec::exec(target)?,
        scope: Scope::Vm,
        label: "drv_target_2".into(),
        on_hit: Arc::new(move |h: &HitContext| {
            record.lock().unwrap().push(h.vcpu);
            HitAction::Continue
        }),
    })?;
    ensure(ctl.all_applied(), || {
        "add returned before every vCPU ran the new plan".into()
    })?;
    wait_for("a hit on every vCPU", Duration::from_secs(60), || {
        seen.lock().unwrap().iter().collect::<BTreeSet<_>>().len() == vcpus
    })?;

    ctl.remove(id)?;
    ensure(ctl.all_applied(), || {
        "remove returned before every vCPU ran the new plan".into()
    })?;
    let after_remove = seen.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    let later = seen.lock().unwrap().len();
    ensure(later == after_remove, || {
        format!("{} hits after remove returned", later - after_remove)
    })?;

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
    let cmdline = "scenario=ranges count=1500 ncpus=1";
    let console: Arc<Mutex<Vec<u8>>> = Arc::default();
    let mut config = VmConfig::new(guest_image::kernel(), cmdline);
    config.console = drvisor::Console::Writer(Box::new(SharedWriter(console.clone())));
    let vm = Vm::try_from(config)?;
    let pages = vm.watch().clone();
    let runner = std::thread::spawn(move || vm.run());
    std::thread::sleep(Duration::from_millis(100));

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
    wait_for("page hits while running", Duration::from_secs(60), || {
        *seen.lock().unwrap() > 50
    })?;
    for id in ids {
        pages.remove(id)?;
    }
    let after_remove = *seen.lock().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ensure(*seen.lock().unwrap() == after_remove, || {
        "hits after removal returned".into()
    })?;
    ensure(pages.layout().slots().len() == 1, || {
        format!("{:?}", pages.layout().slots())
    })?;

    let outcome = runner.join().map_err(|_| "run thread panicked")??;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    ensure(outcome == Outcome::GuestExit { status: 0 }, || {
        format!("{outcome}\n{text}")
    })?;
    let bare = crate::common::drvisor(&["run", "--scenario", "ranges", "--cmdline", "count=1500"]);
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
