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
    [1usize, 2, 4]
        .into_iter()
        .map(|n| {
            Trial::test(
                format!("live_changes::change_reaches_every_vcpu_{n}"),
                move || change_reaches_every_vcpu(n),
            )
        })
        .collect()
}
